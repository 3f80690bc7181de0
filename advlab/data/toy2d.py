"""Two-dimensional toy datasets whose true labelling function h*(x) is known exactly.

Points live in the unit square [0, 1]² (the same box as image pixels, so every attack applies), and
the label of any point, seen or not, is ``true_label(name, x)``. That makes it possible to compare the
practical definition of an adversarial example (the prediction changes) with the consistent one (the
prediction disagrees with h*), as in section ② of the survey.

=========== ====================================================== ===================
name        h*(x) = 1 when                                          classes
=========== ====================================================== ===================
``circle``  ‖x − (0.5, 0.5)‖₂ < 0.3                                outside, inside
``sine``    x₂ > 0.5 + 0.2·sin(2π·x₁)                               below, above
``xor``     (x₁ > 0.5) xor (x₂ > 0.5)                               even, odd
=========== ====================================================== ===================

Samples are drawn uniformly, keeping only points at least ``margin`` away from the true boundary
(measured as |score| of the defining inequality), so the data have a clean gap a classifier may
fill in many ways.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from advlab.config import AdvlabError

CLASSES = {"circle": ("outside", "inside"), "sine": ("below", "above"), "xor": ("even", "odd")}


def true_score(name: str, x: Tensor) -> Tensor:
    """Signed score of the true hypothesis for points x (N, 2): positive means class 1."""
    if name == "circle":
        return 0.3 - torch.linalg.vector_norm(x - 0.5, dim=1)
    if name == "sine":
        return x[:, 1] - (0.5 + 0.2 * torch.sin(2 * math.pi * x[:, 0]))
    if name == "xor":
        return -(x[:, 0] - 0.5) * (x[:, 1] - 0.5) * 4
    raise AdvlabError(f"Unknown toy dataset {name!r}; choose one of {sorted(CLASSES)}.")


def true_label(name: str, x: Tensor) -> Tensor:
    """The true hypothesis h*(x) of a toy dataset, for points x (N, 2); returns (N,) int64."""
    return (true_score(name, x) > 0).long()


def sample(name: str, n: int, seed: int = 0, margin: float = 0.03) -> tuple[Tensor, Tensor]:
    """n points (N, 2) uniform in [0, 1]² away from the boundary by ``margin``, and their true labels."""
    g = torch.Generator().manual_seed(seed)
    out = []
    count = 0
    while count < n:
        x = torch.rand(4 * n + 64, 2, generator=g)
        x = x[true_score(name, x).abs() >= margin]
        out.append(x)
        count += len(x)
    x = torch.cat(out)[:n]
    return x, true_label(name, x)


def load_toy(name: str, split: str, n: int | None) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """A toy split: train uses seed 0, test seed 1; 1,000 points unless n is given."""
    if name not in CLASSES:
        raise AdvlabError(f"Unknown toy dataset {name!r}; choose one of {sorted(CLASSES)}.")
    x, y = sample(name, n or 1000, seed=0 if split == "train" else 1)
    return x, y, CLASSES[name]
