"""Deterministic, stratified index selection shared by the data loaders."""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_split(y: Tensor, test_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split indices of labels ``y`` (N,) into (train, test), keeping each class's share.

    Deterministic for a seed. Both index tensors come back in a seeded random order, so that their
    first n entries are a class-balanced sample.
    """
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * test_fraction))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    return train_idx[torch.randperm(len(train_idx), generator=g)], test_idx[torch.randperm(len(test_idx), generator=g)]


def stratified_subset(y: Tensor, n: int, seed: int = 0) -> Tensor:
    """Indices of a class-balanced subset of size ``n`` of labels ``y`` (N,), in a seeded order.

    Classes get ``n // C`` each, and the remainder goes to the first classes; a class with too few
    examples gives all it has and the rest is filled from the others.
    """
    if n >= len(y):
        return torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y).tolist()
    pools = {c: torch.nonzero(y == c).flatten() for c in classes}
    pools = {c: idx[torch.randperm(len(idx), generator=g)] for c, idx in pools.items()}
    # round-robin over classes: take the i-th example of every class before any (i+1)-th
    ranked = torch.cat([torch.stack([idx, torch.arange(len(idx))], 1) for idx in pools.values()])
    order = torch.argsort(ranked[:, 1], stable=True)
    chosen = ranked[order[:n], 0]
    return chosen[torch.randperm(len(chosen), generator=g)]


def stratified_halves(y: Tensor) -> tuple[Tensor, Tensor]:
    """Two disjoint, class-balanced halves of the indices of labels ``y`` (N,): (first, second), each ascending.

    Within every class the examples alternate between the halves in their order in ``y`` (a class of odd size
    gives its extra example to the first half). Deterministic; no seed, so the halves never depend on one.
    """
    order = torch.argsort(y, stable=True)  # grouped by class, original order inside a class
    sorted_y = y[order]
    starts = torch.searchsorted(sorted_y, sorted_y)  # first position of each element's class
    rank = torch.arange(len(y)) - starts  # position inside its class
    first = order[rank % 2 == 0].sort().values
    second = order[rank % 2 == 1].sort().values
    return first, second
