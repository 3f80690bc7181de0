"""Shared fixtures. Tests never touch the network and never write to the user's cache."""

from __future__ import annotations

import os

import pytest
import torch

# Set before advlab is imported anywhere: a private cache and no downloads.
os.environ["ADVLAB_OFFLINE"] = "1"
os.environ.setdefault("ADVLAB_PROFILE", "fast")

# Tiny tensors run much faster on one thread, and one thread keeps CPU results independent of the
# machine's core count.
torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    old = os.environ.get("ADVLAB_CACHE")
    os.environ["ADVLAB_CACHE"] = str(tmp_path_factory.mktemp("advlab-cache"))
    yield
    if old is None:
        os.environ.pop("ADVLAB_CACHE", None)
    else:
        os.environ["ADVLAB_CACHE"] = old


@pytest.fixture(scope="session")
def mnist_test():
    """(x, y): the first 200 fast-profile MNIST test images (class-balanced), on advlab.device()."""
    import advlab
    from advlab import data

    x, y, _ = data.load("mnist", "test", n=200)
    return x.to(advlab.device()), y.to(advlab.device())


@pytest.fixture(scope="session")
def mnist_cnn():
    """The zoo's standard 'mnist-cnn' (eval mode), loaded from the shipped checkpoint."""
    from advlab import zoo

    return zoo.load("mnist-cnn", progress=False)


@pytest.fixture(scope="module")
def agg():
    """matplotlib.pyplot on the headless Agg backend for one test module (the previous backend restored after)."""
    import matplotlib

    old = matplotlib.get_backend()
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")
    matplotlib.use(old, force=True)
