"""Time the exact L2 ball ∩ box projection that every PGD-L2 step calls, against bisection on λ.

    python benchmarks/projection.py [--n 1000] [--reps 21] [--device cpu]

Inputs are 1,000 MNIST test digits (about 80% of the pixels at exactly 0, so many coordinates clip) and
perturbations z ~ N(0, σ²) for two σ, projected onto the L2 ball of radius 2. Both methods solve the same
problem; the table gives the best-of-reps time per call, the ratio, and the largest difference between them.
Bisection here is the textbook method (find λ with ||clip(z / (1 + λ), -x, 1 - x)|| = ε by halving, 25 halvings
in float32), the one the issue's wording suggests; advlab uses an exact active-set iteration
(:func:`advlab.attacks.core.project_l2`).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from advlab import data
from advlab.attacks.core import project_l2


def bisection_l2(z: Tensor, x: Tensor, eps: Tensor, halvings: int = 25) -> Tensor:
    """δ = clip(z / (1 + λ), -x, 1 - x) with λ >= 0 by bisection on ||δ||_2 = ε; z, x (N, d), eps (N,)."""
    lo, hi = -x, 1 - x

    def size(lam: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(z / (1 + lam[:, None]), hi), lo).norm(dim=1)

    a, b = torch.zeros_like(eps), z.norm(dim=1) / eps.clamp_min(1e-30) + 1
    for _ in range(halvings):
        mid = 0.5 * (a + b)
        ok = size(mid) <= eps
        a, b = torch.where(ok, a, mid), torch.where(ok, mid, b)
    lam = torch.where(size(torch.zeros_like(eps)) <= eps, torch.zeros_like(eps), b)
    return torch.maximum(torch.minimum(z / (1 + lam[:, None]), hi), lo)


def best_ms(fn, reps: int, device: torch.device) -> float:
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    x, _, _ = data.load("mnist", "test", n=args.n)
    x = x.flatten(1).to(device)
    eps = torch.full((len(x),), 2.0, device=device)
    print(
        f"| σ of z | advlab (ms) | bisection (ms) | bisection / advlab | max abs difference |  (n = {len(x)}, "
        f"{torch.get_num_threads()} threads, {device})"
    )
    print("|---|---|---|---|---|")
    for sigma in (0.05, 0.2):
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device) * sigma
        ours = best_ms(lambda z=z: project_l2(z, x, eps), args.reps, device)
        ref = best_ms(lambda z=z: bisection_l2(z, x, eps), args.reps, device)
        diff = (project_l2(z, x, eps) - bisection_l2(z, x, eps)).abs().max().item()
        print(f"| {sigma} | {ours:.2f} | {ref:.2f} | {ref / ours:.1f}× | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
