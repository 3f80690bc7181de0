"""Time per image of one forward + one input-gradient backward against the chunk size, for the course's models.

    python benchmarks/chunks.py                  # writes docs/chunks.md
    python benchmarks/chunks.py --quick --out -  # a smoke run

On a CPU, a model's work on a few hundred MNIST images stays in the caches and costs less per image than on a batch
of 1,000; :data:`advlab.attacks.tensors.CPU_CHUNK_ELEMENTS` (the fixed default chunk of every attack and of
``eval.robust_accuracy``) is read off this table. Every chunk size of a model is timed in each rep, in turn, and the
best rep is kept (noise only adds time).

A second table splits one pass of the two MNIST CNNs (plain ``nn.Sequential`` models) at advlab's default chunk into
its layers: each layer's forward and input-gradient backward, timed alone on the input it gets in the pass. That is
what the best-chunk floor of ``benchmarks/attacks.py`` is made of, so it shows where an attack could still gain
only by computing the model's own gradient differently. For each convolution it also times the same input gradient
written as a matrix product and a col2im (``F.fold``), checked equal to autograd's.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
import torch.nn.functional as F
from _report import write  # benchmarks/_report.py (the script's own folder is on sys.path)
from torch import Tensor, nn

import advlab
from advlab import data, models, zoo
from advlab.attacks.tensors import chunk_size, chunk_slices, eval_mode


def pass_time(model: nn.Module, x: Tensor, y: Tensor, chunk: int, passes: int) -> float:
    """Seconds per image of ``passes`` × (forward + input-gradient backward) over ``x`` in chunks of ``chunk``."""
    start = time.perf_counter()
    for _ in range(passes):
        for s in chunk_slices(len(x), chunk):
            xr = x[s].clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr), y[s], reduction="sum"), xr)
    return (time.perf_counter() - start) / passes / len(x)


def sweep(model: nn.Module, x: Tensor, y: Tensor, sizes: list[int], reps: int, passes: int) -> dict[int, float]:
    best = {c: float("inf") for c in sizes}
    with eval_mode(model, warn=False):
        pass_time(model, x, y, sizes[0], 1)  # warm-up
        for _ in range(reps):
            for c in sizes:
                best[c] = min(best[c], pass_time(model, x, y, c, passes))
    return best


def _best(fn, reps: int, calls: int) -> float:
    """Best of ``reps`` mean times (s) of ``calls`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def conv_input_grad_col2im(conv: nn.Conv2d, g: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C_in, H, W) input gradient of ``conv`` (groups 1) for the (N, C_out, H', W') output gradient ``g``:
    ``Wᵀ g`` per output position, then col2im. The same quantity as autograd's, another kernel."""
    n, c_out = g.shape[:2]
    cols = torch.matmul(conv.weight.reshape(c_out, -1).t(), g.reshape(n, c_out, -1))
    return F.fold(cols, size, conv.kernel_size, conv.dilation, conv.padding, conv.stride)


def layer_rows(name: str, model: nn.Sequential, x: Tensor, y: Tensor, reps: int, calls: int) -> list[str]:
    """Markdown rows: each layer's forward and input-gradient backward (µs per image) on a chunk ``x``."""
    with eval_mode(model, warn=False):
        return _layer_rows(name, model, x, y, reps, calls)


def _layer_rows(name: str, model: nn.Sequential, x: Tensor, y: Tensor, reps: int, calls: int) -> list[str]:
    n = len(x)
    whole = _best(lambda: pass_time(model, x, y, n, 1), reps, calls)  # s per pass of the chunk
    rows, h, total = [], x, 0.0
    for i, layer in enumerate(model):
        hin = h.detach().clone().requires_grad_(True)
        out = layer(hin)
        g = torch.randn_like(out)
        fwd = _best(lambda layer=layer, hin=hin: layer(hin), reps, calls)
        bwd_once = lambda layer=layer, hin=hin, g=g: torch.autograd.grad(layer(hin), hin, g)[0]  # noqa: E731
        bwd = max(0.0, _best(bwd_once, reps, calls) - fwd)  # the backward alone: its forward is timed above
        total += fwd + bwd
        alt = ""
        if isinstance(layer, nn.Conv2d) and layer.groups == 1:
            ref = bwd_once()
            size = tuple(hin.shape[-2:])
            fold = conv_input_grad_col2im(layer, g, size)
            torch.testing.assert_close(fold, ref, rtol=1e-4, atol=1e-5)  # the same gradient
            t = _best(lambda layer=layer, g=g, size=size: conv_input_grad_col2im(layer, g, size), reps, calls)
            alt = f"{t / n * 1e6:,.2f}"
        label = f"{i}: {type(layer).__name__}" + (f" {layer.in_channels}→{layer.out_channels}"
                                                   if isinstance(layer, nn.Conv2d) else "")
        rows.append(f"| {name} | {label} | {fwd / n * 1e6:,.2f} | {bwd / n * 1e6:,.2f} | {(fwd + bwd) / whole:.0%} | "
                    f"{alt} |")
        h = out.detach()
    rows.append(f"| {name} | sum of the layers / the whole pass | | | {total / whole:.0%} "
                f"(pass: {whole / n * 1e6:,.2f} µs per image) | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="docs/chunks.md")
    args = parser.parse_args(argv)
    q = args.quick
    torch.manual_seed(0)
    mx, my, _ = data.load("mnist", "test", n=32 if q else 1000)
    cx = torch.rand(32 if q else 256, 3, 32, 32)
    cases = [
        ("MNIST CNN (zoo mnist-cnn)", zoo.load("mnist-cnn", progress=False), mx, my,
         [1000, 500, 334, 250, 167, 128, 64, 32], 5),
        ("Madry et al.'s MNIST CNN", models.madry_cnn(), mx, my, [1000, 500, 334, 250, 128, 64], 1),
        ("PreAct-ResNet-18, CIFAR shape", models.preact_resnet18(), cx, None, [256, 128, 85, 64, 42, 32, 16], 1),
    ]
    lines = [
        "# Chunk size against time per image (forward + input-gradient backward)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU; "
        f"torch {torch.__version__}, advlab {advlab.__version__}. Command: `python benchmarks/chunks.py "
        + " ".join(argv if argv is not None else sys.argv[1:]) + "`. Best of "
        f"{1 if q else args.reps} reps, chunk sizes taking turns within each rep. µs per image; the ratio is to the "
        "whole batch; **bold** marks the fastest chunk, *italics* advlab's default "
        "(`advlab.attacks.tensors.CPU_CHUNK_ELEMENTS` input elements).",
        "",
        "| model | batch | chunk | µs / image | ratio to the whole batch |",
        "|---|---|---|---|---|",
    ]
    for name, model, x, y, sizes, passes in cases:
        if y is None:
            with torch.no_grad():
                y = model.eval()(x).argmax(1)
        default = chunk_size(x)
        sizes = sorted({min(s, len(x)) for s in sizes} | {default}, reverse=True)
        best = sweep(model, x, y, sizes, 1 if q else args.reps, 1 if q else passes)
        fastest = min(best, key=best.get)
        for c in sizes:
            label = f"**{c}**" if c == fastest else (f"*{c}*" if c == default else str(c))
            lines.append(f"| {name} | {len(x)} | {label} | {best[c] * 1e6:,.1f} | {best[c] / best[sizes[0]]:.2f} |")
            print(name, c, f"{best[c] * 1e6:.1f} us/img", file=sys.stderr)
    lines += [
        "",
        "## One pass, layer by layer",
        "",
        "At advlab's default chunk of each MNIST model, each layer's forward and its input-gradient backward (the "
        "backward's time is a forward+backward minus the forward), timed alone on the input the layer gets in the "
        "pass; the share is of one whole pass timed the same way (the layers' overlap in caches makes the sum differ "
        "from 100%). The last column is the same input gradient as a matrix product and a col2im (`F.fold`), "
        "checked equal to autograd's: the same arithmetic through another kernel.",
        "",
        "| model | layer | forward µs / image | input-gradient backward µs / image | share of the pass | "
        "conv input gradient as matmul + col2im, µs / image |",
        "|---|---|---|---|---|---|",
    ]
    for name, model, x, y, _, passes in cases[:2]:
        c = chunk_size(x)
        lines += layer_rows(name, model, x[:c], y[:c], 1 if q else args.reps, 2 if q else 20 * passes)
    write("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
