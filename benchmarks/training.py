"""PGD adversarial training: advlab's trainer against a plain loop written the obvious way, images per second.

    python benchmarks/training.py                  # writes docs/training.md
    python benchmarks/training.py --quick --out -  # a smoke run

Both train the zoo's MNIST CNN architecture from the same initial weights on the same images, one epoch per rep,
with 7-step PGD (ε = 0.3, step 2.5 ε / 7, random start) and SGD (momentum 0.9) on batches of 128: eight forward +
backward passes per image. The plain loop is what a reader of Madry et al. writes: the attack by hand on the batch,
then the weight step. The two take turns in every rep, the best rep is kept, and the floor is eight forward +
backward passes over the epoch's batches (the weight gradient included in the last).
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time

import torch
import torch.nn.functional as F
from _report import write  # benchmarks/_report.py (the script's own folder is on sys.path)
from torch import Tensor, nn

import advlab
from advlab import data, models
from advlab.defenses.adversarial import pgd_at

EPS, STEPS, BATCH = 0.3, 7, 128


def plain_epoch(model: nn.Module, x: Tensor, y: Tensor, opt: torch.optim.Optimizer) -> None:
    """One epoch of PGD-AT written the obvious way."""
    alpha = 2.5 * EPS / STEPS
    perm = torch.randperm(len(x))
    for i in range(0, len(x), BATCH):
        xb, yb = x[perm[i : i + BATCH]], y[perm[i : i + BATCH]]
        model.eval()
        delta = torch.empty_like(xb).uniform_(-EPS, EPS)
        for _ in range(STEPS):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
            (g,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * g.sign()).clamp(-EPS, EPS)
        model.train()
        opt.zero_grad()
        F.cross_entropy(model((xb + delta).clamp(0, 1)), yb).backward()
        opt.step()


def floor_epoch(model: nn.Module, x: Tensor, y: Tensor) -> None:
    """Eight forward + input-gradient backward passes per batch: the work of a PGD-7 epoch and nothing else."""
    for i in range(0, len(x), BATCH):
        xb = x[i : i + BATCH].clone().requires_grad_(True)
        for _ in range(STEPS + 1):
            torch.autograd.grad(F.cross_entropy(model(xb), y[i : i + BATCH]), xb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="docs/training.md")
    args = parser.parse_args(argv)
    n = 256 if args.quick else 4000
    reps = 1 if args.quick else args.reps
    x, y, _ = data.load("mnist", "train", n=n)
    torch.manual_seed(0)
    init = models.mnist_net()
    times: dict[str, list[float]] = {"advlab pgd_at": [], "plain loop": [], "floor": []}
    for _ in range(reps):
        for name in times:
            model = copy.deepcopy(init)
            torch.manual_seed(1)
            start = time.perf_counter()
            if name == "advlab pgd_at":
                pgd_at(model, x, y, EPS, steps=STEPS, epochs=1, batch_size=BATCH, lr=0.05, optimizer="sgd",
                       schedule="constant", progress=False)
            elif name == "plain loop":
                plain_epoch(model, x, y, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
            else:
                floor_epoch(model.eval(), x, y)
            times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    lines = [
        "# PGD adversarial training: images per second",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU; "
        f"torch {torch.__version__}, advlab {advlab.__version__}. Command: `python benchmarks/training.py "
        + " ".join(argv if argv is not None else sys.argv[1:]) + f"`. One epoch of {n} MNIST training images, "
        f"PGD-{STEPS} (ε = {EPS}) + SGD on batches of {BATCH}, best of {reps} reps, the rows taking turns.",
        "",
        "| run | time per epoch (s) | images / s | time / floor |",
        "|---|---|---|---|",
    ]
    for name, t in best.items():
        lines.append(f"| {name} | {t:.2f} | {n / t:,.0f} | {t / best['floor']:.2f}× |")
    write("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
