"""Chunking: attacks and evaluation split their forward/backward passes into chunks (a per-device default) without
changing any result. The random draws are made for the whole batch, and every per-sample quantity depends on that
sample alone, so a chunked run equals the unchunked one (bit for bit where the model's kernels are; the L2 step
and L1 steps
normalise a gradient whose last bit can depend on the batch size)."""

from __future__ import annotations

import math

import pytest
import torch

from advlab import attacks, data, eval
from advlab.attacks import engine, tensors
from advlab.attacks.tensors import chunk_size, chunk_slices
from advlab.config import AdvlabError
from advlab.defenses.adversarial import trades_adversary


class PerSample(torch.nn.Module):
    """A test oracle: the model applied to one sample at a time, so its outputs cannot depend on the batch size."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x[i : i + 1]) for i in range(len(x))])


@pytest.fixture(scope="module")
def exact_cnn(mnist_cnn):
    return PerSample(mnist_cnn).eval()


@pytest.fixture(scope="module")
def batch():
    x, y, _ = data.load("mnist", "test", n=60)
    return x, y


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)




def test_default_chunk_follows_device_and_input_size():
    assert tensors.CPU_CHUNK_ELEMENTS // 784 == 334  # the most MNIST images per chunk
    assert chunk_size(torch.zeros(1000, 1, 28, 28)) == 334  # 3 equal chunks
    assert chunk_size(torch.zeros(500, 1, 28, 28)) == 250  # 2 equal chunks, not 334 + 166
    assert chunk_size(torch.zeros(334, 1, 28, 28)) == 334
    assert chunk_size(torch.zeros(256, 3, 32, 32)) == 64  # 4 of 64 CIFAR images (the cap is 85)
    assert chunk_size(torch.zeros(10, 1, 28, 28)) == 10  # never more than the batch
    assert chunk_size(torch.zeros(4, 3, 512, 512)) == 1  # at least one sample
    # off the CPU the default is the whole batch (a GPU is fast on large batches), up to a memory bound
    assert chunk_size(torch.empty(1000, 1, 28, 28, device="meta")) == 1000
    assert chunk_size(torch.empty(10_000, 3, 32, 32, device="meta")) == 2500  # 4 equal chunks under 2^23 elements
    assert chunk_size(torch.zeros(1000, 1, 28, 28), 0) == 1000
    assert chunk_size(torch.zeros(1000, 1, 28, 28), 64) == 64
    assert chunk_size(torch.zeros(1000, 1, 28, 28), 5000) == 1000


@pytest.mark.parametrize("bad", [-1, 2.5, True, "64"])
def test_bad_chunk_is_refused(bad):
    with pytest.raises(AdvlabError, match="chunk must be"):
        chunk_size(torch.zeros(8, 4), bad)


def test_chunk_slices_cover_the_batch_in_order():
    sl = chunk_slices(10, 4)
    assert [(s.start, s.stop) for s in sl] == [(0, 4), (4, 8), (8, 10)]
    assert chunk_slices(3, 8) == [slice(0, 3)]


@pytest.mark.parametrize(
    "name, run",
    [
        ("pgd-linf", lambda m, x, y, c: attacks.pgd(m, x, y, 0.1, steps=8, generator=_gen(), chunk=c)),
        ("pgd-l2-restarts-early-stop", lambda m, x, y, c: attacks.pgd(
            m, x, y, 1.0, norm=2, steps=8, restarts=2, early_stop=True, generator=_gen(), chunk=c)),
        ("pgd-l1", lambda m, x, y, c: attacks.pgd(m, x, y, 5.0, norm=1, steps=8, generator=_gen(), chunk=c)),
        ("apgd-ce", lambda m, x, y, c: attacks.apgd(m, x, y, 0.1, steps=8, generator=_gen(), chunk=c)),
        ("apgd-t", lambda m, x, y, c: attacks.apgd(
            m, x, y, 0.1, steps=8, n_target_classes=3, early_stop=True, generator=_gen(), chunk=c)),
        ("square-linf", lambda m, x, y, c: attacks.square(m, x, y, 0.1, queries=30, generator=_gen(), chunk=c)),
        ("square-l2", lambda m, x, y, c: attacks.square(
            m, x, y, 1.0, norm=2, queries=30, generator=_gen(), chunk=c)),
    ],
)
def test_chunked_attack_equals_the_whole_batch(exact_cnn, batch, name, run):
    x, y = batch
    whole = run(exact_cnn, x, y, 0)
    assert 0 < int(whole.success.sum()) < len(x)  # a case where it matters
    split = run(exact_cnn, x, y, 7)  # 60 = 8 chunks of 7 and one of 4
    assert torch.equal(split.success, whole.success) and torch.equal(split.x_adv, whole.x_adv)


def test_chunked_robust_accuracy_equals_the_whole_batch(exact_cnn, mnist_cnn, batch):
    x, y = batch

    def run(chunk):  # the default chain at a small budget (the oracle runs one image at a time)
        chain = eval.autoattack_attacks(steps=10, n_target_classes=3, queries=50, chunk=chunk)
        return eval.robust_accuracy(exact_cnn, x, y, 0.1, attacks=chain, chunk=chunk)

    whole, split = run(0), run(11)
    assert 0 < whole.robust_accuracy < whole.clean_accuracy
    assert split.robust_accuracy == whole.robust_accuracy
    assert torch.equal(split.broken_by, whole.broken_by) and torch.equal(split.x_adv, whole.x_adv)
    # the plain model (batched kernels): the same verdicts, per sample
    chain = eval.autoattack_attacks(steps=10, n_target_classes=3, queries=50)
    plain = eval.robust_accuracy(mnist_cnn, x, y, 0.1, attacks=chain)
    assert torch.equal(plain.robust, whole.robust)


def test_default_chunking_equals_the_whole_batch(exact_cnn, batch, monkeypatch):
    """The engine's other users (TRADES' inner maximisation here) read their per-sample data through ``rows``:
    with a default chunk of 5 images their result is the unchunked one."""
    x, y = batch
    whole = trades_adversary(exact_cnn, x, eps=0.1, steps=5, generator=_gen())
    monkeypatch.setattr(tensors, "CPU_CHUNK_ELEMENTS", 5 * 784)
    assert chunk_size(x) == 5  # 60 images: 12 chunks of 5
    split = trades_adversary(exact_cnn, x, eps=0.1, steps=5, generator=_gen())
    assert torch.equal(split, whole)


def test_engine_hands_each_chunk_its_rows():
    """A linear objective whose weights differ per sample: a chunk given the wrong rows would step the wrong way."""
    torch.manual_seed(0)
    w = torch.randn(13, 6)

    def objective(z, rows):
        return (z * engine.select_rows(w, rows)).sum(1), None

    def box(z, rows):
        return z.clamp(-1, 1)

    z0 = torch.zeros(13, 6)
    for chunk in (0, 1, 4):
        out = engine.ascend(objective, z0, box, steps=3, step_size=1.0, norm=math.inf, chunk=chunk)
        assert torch.equal(out.z, w.sign())  # the maximiser of w·z over the box
        torch.testing.assert_close(out.value, w.abs().sum(1))


def test_engine_projects_each_chunk_onto_its_own_rows():
    """Per-sample boxes, projected in place: a chunk clamped to another chunk's bounds ends outside its own box, and a
    projection writing into the engine's buffer must not disturb the other chunks or the kept iterates."""
    torch.manual_seed(0)
    w, lo, hi = torch.randn(13, 6), -torch.rand(13, 6), torch.rand(13, 6)

    def objective(z, rows):
        return (z * engine.select_rows(w, rows)).sum(1), None

    def box(z, rows):
        return torch.clamp(z, engine.select_rows(lo, rows), engine.select_rows(hi, rows), out=z)

    best = torch.where(w > 0, hi, lo)  # the maximiser of w·z over each sample's box
    z0 = torch.zeros(13, 6)
    for chunk in (0, 1, 4):
        for keep_last in (False, True):
            out = engine.ascend(objective, z0, box, steps=3, step_size=2.0, norm=math.inf, chunk=chunk,
                                keep_last=keep_last)
            assert torch.equal(out.z, best), (chunk, keep_last)
    assert torch.equal(z0, torch.zeros(13, 6))  # the caller's start is not the buffer


def test_the_oracle_is_batch_invariant(exact_cnn, batch):
    """The premise of the exact comparisons above."""
    x, _ = batch
    with torch.no_grad():
        assert torch.equal(exact_cnn(x), torch.cat([exact_cnn(x[s]) for s in chunk_slices(len(x), 7)]))
