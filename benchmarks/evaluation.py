"""advlab's default robustness evaluation against an AutoAttack-grade reference chain, image by image.

    python benchmarks/evaluation.py                        # 1,000 test images, the zoo's L∞ models; docs/evaluation.md
    python benchmarks/evaluation.py --n 64 --models mnist-cnn --out -     # a smoke run, table to stdout

The reference is AutoAttack's "standard" chain built from torchattacks' parts (FAB-T left out): APGD-CE 100 steps,
then APGD-T 100 steps × 9 target classes, then Square 5,000 queries, each only on the inputs still robust. Note that
torchattacks' own ``AutoAttack`` wrapper runs 10-step APGDs, so it is weaker than this; it is timed as a third row.
For every model the table gives clean and robust accuracy, the time, and the paired comparison: how many images
advlab's default leaves robust that the reference breaks (advlab over-reports on those) and the reverse.
Evaluators take turns on the same model, images and machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

import advlab
from advlab import data, zoo
from advlab import eval as robust_eval
from advlab.attacks.tensors import logits_of

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mnist-cnn-pgd", "mnist-cnn-trades", "mnist-cnn-free", "mnist-cnn", "mnist-cnn-l2")
QUERIES = robust_eval.BUDGETS["fast"][2]  # Square's budget in both chains
L2_MODELS = {"mnist-cnn-l2": 2.0}  # evaluated in L2 at this radius (its training radius); the others in L∞ at --eps


def reference_chain(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0, norm: str = "Linf"
) -> tuple[Tensor, list[float]]:
    """(N,) bool, robust under torchattacks' APGD-CE-100 → APGD-T-100×9 → Square-5000, each on survivors; and the
    seconds each of the three attacks took."""
    import torchattacks

    attacks = [
        torchattacks.APGD(model, norm=norm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=seed),
        torchattacks.APGDT(model, norm=norm, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=seed),
        torchattacks.Square(model, norm=norm, eps=eps, n_queries=5000, n_restarts=1, seed=seed),
    ]
    robust = logits_of(model, x).argmax(1) == y
    seconds = [0.0] * len(attacks)
    for k, attack in enumerate(attacks):
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        t0 = time.perf_counter()
        adv = attack(x[idx], y[idx])
        seconds[k] = time.perf_counter() - t0
        robust[idx] = logits_of(model, adv).argmax(1) == y[idx]
    return robust, seconds


def torchattacks_wrapper(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0, norm: str = "Linf"
) -> Tensor:
    import torchattacks

    adv = torchattacks.AutoAttack(model, norm=norm, eps=eps, version="standard", n_classes=10, seed=seed)(x, y)
    return logits_of(model, adv).argmax(1) == y


def forward_seconds(model: nn.Module, x: Tensor, reps: int = 3, passes: int = 20) -> float:
    """Seconds per image of one forward pass over ``x`` at advlab's default chunk (best of ``reps``)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(passes):
            logits_of(model, x)
        best = min(best, (time.perf_counter() - t0) / passes / len(x))
    return best


def half_width(n: int) -> float:
    """Half the width of the exact 95 % interval of an accuracy of 50 % over n images (the widest case)."""
    low, high = robust_eval.accuracy_interval(n // 2, n)
    return (high - low) / 2


def run(names: list[str], n: int, eps: float, wrapper: bool) -> str:
    x, y, _ = data.load("mnist", "test", n=n)
    lines = [
        f"## AutoAttack-grade evaluation: advlab's default vs the reference chain (MNIST, n = {n})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, device cpu. Command: `python benchmarks/evaluation.py --n {n}`.",
        "",
        "| model | threat model | clean | advlab default | reference | advlab − reference | advlab robust, "
        "reference broke | reference robust, advlab broke | advlab time | reference time | time ratio | "
        "APGD time, advlab / reference | Square time, advlab / reference | Square floor | best possible ratio | "
        "torchattacks AutoAttack (10-step APGDs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        model = zoo.load(name, progress=False).cpu().eval()
        norm, radius = ("L2", L2_MODELS[name]) if name in L2_MODELS else ("Linf", eps)
        clean = (logits_of(model, x).argmax(1) == y).float().mean().item()
        t0 = time.perf_counter()
        rep = robust_eval.robust_accuracy(model, x, y, radius, norm="inf" if norm == "Linf" else 2)
        t_adv = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref, ref_secs = reference_chain(model, x, y, radius, norm=norm)
        t_ref = time.perf_counter() - t0
        wrap = "not run"
        if wrapper:
            t0 = time.perf_counter()
            w = torchattacks_wrapper(model, x, y, radius, norm=norm)
            wrap = f"{w.float().mean().item():.1%} in {time.perf_counter() - t0:.0f} s"
        over = int((rep.robust & ~ref).sum())
        under = int((ref & ~rep.robust).sum())
        diff = rep.robust_accuracy - ref.float().mean().item()
        threat = f"{'L∞' if norm == 'Linf' else 'L2'} ε = {radius:g}"
        adv_secs = [a.seconds for a in rep.attacks]
        stages = (f"{sum(adv_secs[:2]):.0f} s / {sum(ref_secs[:2]):.0f} s | "
                  f"{adv_secs[2]:.0f} s / {ref_secs[2]:.0f} s")
        # every image that ends robust took all of Square's queries, one forward each, in any implementation
        robust_x = x[rep.robust]
        floor = (len(robust_x) * QUERIES * forward_seconds(model, robust_x)) if len(robust_x) else 0.0
        best_ratio = (sum(adv_secs[:2]) + floor) / t_ref
        lines.append(
            f"| `{name}` | {threat} | {clean:.1%} | {rep.robust_accuracy:.1%} | {ref.float().mean().item():.1%} | "
            f"{100 * diff:+.1f} pp | {over} | {under} | {t_adv:.0f} s | {t_ref:.0f} s | {t_adv / t_ref:.2f} | "
            f"{stages} | {floor:.0f} s | {best_ratio:.2f} | {wrap} |"
        )
        print(lines[-1], flush=True)
        print(rep.summary(), flush=True)
    lines += [
        "",
        "advlab's chain: " + ", ".join(robust_eval.autoattack_attacks()) + " (the fast profile's budgets, "
        "`advlab.eval.BUDGETS`), each on the survivors of the previous ones, every APGD stopping per sample at its "
        "first success. The goal: advlab's robust accuracy at most 0.5 pp above the reference's on every model "
        "(column `advlab − reference`), at most half its time. The paired columns count images on which the two "
        "chains disagree; both are randomized (random starts, Square's windows), so a few images fall either way.",
        "",
        f"Square floor: the images that end robust × {QUERIES:,} queries × one forward pass per image (advlab's "
        "default chunk, best of 3): the least time any Square with this budget spends on them, whoever implements "
        "it. Best possible ratio: advlab's APGD time plus that floor, over the reference's time.",
        "",
        f"Every accuracy is a fraction of the same n = {n} images: its exact 95 % binomial (Clopper–Pearson) interval "
        f"is at most ±{100 * half_width(n):.1f} points (at 50 %). The difference between the two chains is paired (the "
        "same images), so the disagreement counts, not those intervals, say how far apart they are.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--wrapper", action="store_true", help="also time torchattacks' own AutoAttack wrapper")
    parser.add_argument("--out", default=str(ROOT / "docs" / "evaluation.md"), help="a file, or - for stdout")
    args = parser.parse_args(argv)
    advlab.set_profile("fast")
    table = run(args.models, args.n, args.eps, args.wrapper)
    if args.out == "-":
        sys.stdout.write(table)
    else:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
