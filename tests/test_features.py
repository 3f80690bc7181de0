"""Tests of advlab.features: the D_R / D_NR / D_rand / D_det constructions of Ilyas et al. (2019)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import AdvlabError, features
from advlab.attacks.tensors import logits_of


def test_penultimate_drops_last_linear(mnist_cnn, mnist_test):
    x, _ = mnist_test
    g = features.penultimate(mnist_cnn)
    with torch.no_grad():
        rep = g(x[:5])
        assert rep.shape == (5, mnist_cnn[-1].in_features)
        torch.testing.assert_close(mnist_cnn[-1](rep), mnist_cnn(x[:5]))
    assert not g.training
    with pytest.raises(AdvlabError, match="nn.Linear"):
        features.penultimate(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU()))


def test_other_indices_never_self():
    idx = features.other_indices(50, torch.Generator().manual_seed(0))
    assert idx.shape == (50,)
    assert (idx != torch.arange(50)).all()
    assert idx.min() >= 0 and idx.max() < 50
    with pytest.raises(AdvlabError):
        features.other_indices(1)


def test_inversion_reduces_representation_distance(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:16], y[:16]
    gen = torch.Generator().manual_seed(0)
    ds = features.nonrobust_dataset(mnist_cnn, x, y, steps=60, step_size=0.5, generator=gen)
    assert ds.x.shape == x.shape and ds.x.min() >= 0 and ds.x.max() <= 1
    assert torch.equal(ds.y, y) and ds.attempted == 16
    # info = final distance / starting distance: the walk must remove most of the gap
    assert ds.info.median() < 0.3
    assert (ds.info <= 1).all()
    # direct check on the raw inversion: distances recomputed from the returned images
    g = features.penultimate(mnist_cnn)
    start = x.flip(0)
    inv = features.invert_representation(g, x, start, steps=30, step_size=0.5)
    with torch.no_grad():
        d = (g(inv.x) - g(x)).norm(dim=1)
        d0 = (g(start) - g(x)).norm(dim=1)
    torch.testing.assert_close(inv.distance, d, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(inv.start_distance, d0, rtol=1e-4, atol=1e-4)
    assert (inv.distance < 0.5 * inv.start_distance).float().mean() > 0.8


def test_adversarial_datasets_labels(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:40], y[:40]
    gen = torch.Generator().manual_seed(0)
    rand = features.adversarial_dataset(mnist_cnn, x, y, targets="rand", eps=3.0, steps=20, step_size=0.3,
                                        generator=gen)
    det = features.adversarial_dataset(mnist_cnn, x, y, targets="det", eps=3.0, steps=20, step_size=0.3)
    for ds in (rand, det):
        assert ds.attempted == 40 and 0 < len(ds.y) <= 40
        assert (ds.y != y[ds.index]).all()  # random targets are never the true label
        assert (ds.info <= 3.0 + 1e-4).all()
        # keep="successful": the standard model really predicts the new label on every kept image
        assert torch.equal(logits_of(mnist_cnn, ds.x).argmax(1), ds.y)
    assert torch.equal(det.y, (y[det.index] + 1) % 10)
    everything = features.adversarial_dataset(mnist_cnn, x, y, targets="det", eps=0.5, steps=5, keep="all")
    assert len(everything.y) == 40 and torch.equal(everything.y, (y + 1) % 10)
    with pytest.raises(AdvlabError, match="targets"):
        features.adversarial_dataset(mnist_cnn, x, y, targets="random")


def test_experiment_plumbing(mnist_cnn):
    """The whole pipeline on a toy budget: every row is present and holds accuracies (not a result check)."""
    tiny = {
        "train_n": 60, "invert_steps": 3, "build_steps": 4, "build_step_size": 1.0, "eval_n": 40, "eval_steps": 2,
        "fit": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0},
    }
    table = features.experiment("mnist", standard_model=mnist_cnn, robust_model=mnist_cnn, overrides=tiny,
                                progress=False)
    names = [r.name for r in table.rows]
    assert names == ["D (standard)", "D (adv. trained)", "D_R", "D_NR", "D_rand", "D_det"]
    for r in table.rows:
        assert 0 <= r.robust <= r.clean <= 1
    assert table.row("D (standard)").clean > 0.9  # the zoo model on 40 test images
    assert "| D_R |" in table.markdown()
    with pytest.raises(AdvlabError, match="preset"):
        features.experiment("svhn")
