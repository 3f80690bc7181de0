"""Tests of advlab.properties: rarity, boundaries, linearity, transferability, PCA energy, large-ε examples."""

from __future__ import annotations

import math

import pytest
import torch

from advlab import AdvlabError, properties, zoo
from advlab.attacks import pgd
from advlab.attacks.tensors import logits_of, lp_norm


def test_random_surface_radius(mnist_test):
    x, _ = mnist_test
    r = torch.linspace(0.5, 2.0, 8, device=x.device)
    gen = torch.Generator().manual_seed(0)
    d2 = properties.random_surface(x[:8], r, 2, gen)
    dinf = properties.random_surface(x[:8], r, "inf", gen)
    assert d2.shape == x[:8].shape
    torch.testing.assert_close(lp_norm(d2, 2), r)
    torch.testing.assert_close(lp_norm(dinf, math.inf), r)
    assert (dinf.flatten(1).abs() < r[:, None] - 1e-6).float().mean() > 0.9  # interior coordinates, one face
    with pytest.raises(AdvlabError):
        properties.random_surface(x[:8], r, 1)


def test_rarity_noise_fools_far_less(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:100], y[:100]
    adv = pgd(mnist_cnn, x, y, eps=2.5, norm=2, steps=20, generator=torch.Generator().manual_seed(0))
    out = properties.rarity(mnist_cnn, x, y, adv.x_adv, draws=10, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"L2", "Linf"}
    for key, p in (("L2", 2.0), ("Linf", math.inf)):
        r = out[key]
        assert r.norm == p and len(r.index) == len(r.radius) == len(r.noise_error) > 50
        torch.testing.assert_close(r.radius, lp_norm(adv.x_adv[r.index] - x[r.index], p))
        assert r.adversarial_error > 0.8
        assert r.noise_error_rate < 0.25 * r.adversarial_error
    with pytest.raises(AdvlabError, match="shape"):
        properties.rarity(mnist_cnn, x, y, adv.x_adv[:10])


def test_linearity_curves(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:64], y[:64]
    eps = [0.0, 0.05, 0.1, 0.2, 0.3]
    c = properties.linearity(mnist_cnn, x, y, eps, generator=torch.Generator().manual_seed(0))
    for curve in (c.eps, c.loss_gradient, c.loss_random, c.error_gradient, c.error_random):
        assert curve.shape == (5,)
    assert c.logits_gradient.shape == (64, 5, 10)
    torch.testing.assert_close(c.loss_gradient[0], c.loss_random[0])  # both start at the clean loss
    assert (c.loss_gradient[1:] > c.loss_random[1:]).all()
    assert c.loss_gradient[-1] > 5 * c.loss_random[-1]
    assert (c.loss_gradient.diff() > 0).all()  # the gradient-sign direction keeps raising the loss
    assert c.error_gradient[-1] > c.error_random[-1] + 0.5


def test_transfer_matrix_diagonal_and_shape(mnist_test):
    x, y = mnist_test
    x, y = x[:60], y[:60]
    nets = {name: zoo.load(name, progress=False) for name in ("mnist-logistic", "mnist-mlp", "mnist-cnn")}

    def attack(model, xb, yb):
        return pgd(model, xb, yb, eps=0.15, steps=10, random_start=False)  # deterministic

    tm = properties.transfer_matrix(nets, x, y, attack=attack)
    assert tm.names == list(nets) and tm.rate.shape == tm.conditional.shape == (3, 3)
    correct = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for net in nets.values():
        correct &= logits_of(net, x).argmax(1) == y
    assert tm.n == int(correct.sum())
    for i, net in enumerate(nets.values()):
        own = attack(net, x[correct], y[correct]).success.float().mean().item()
        assert tm.white_box[i].item() == pytest.approx(own, abs=1e-6)
        assert tm.rate[i, i].item() == pytest.approx(own, abs=1e-6)
        assert tm.conditional[i, i].item() == pytest.approx(1.0)
    assert ((tm.rate >= 0) & (tm.rate <= 1)).all()
    assert (tm.conditional >= tm.rate - 1e-6).all()  # conditioning on the source's success can only help
    assert "mnist-cnn" in tm.markdown()


def test_pca_energies(mnist_cnn, mnist_test):
    from advlab import data

    xtr, _, _ = data.load("mnist", "train", n=500)
    basis = properties.pca(xtr)
    d = 784
    assert basis.components.shape == (d, d) and basis.variance.shape == (d,)
    torch.testing.assert_close(basis.components @ basis.components.T, torch.eye(d), atol=1e-4, rtol=0)
    assert (basis.variance.diff() <= 1e-6).all()
    torch.testing.assert_close(properties.data_spectrum(basis).sum(), torch.tensor(1.0))
    x, y = mnist_test
    adv = pgd(mnist_cnn, x[:32], y[:32], eps=2.0, norm=2, steps=10)
    delta = (adv.x_adv - x[:32]).cpu()
    spec = properties.energy_spectrum(delta, basis)
    assert spec.shape == (32, d)
    torch.testing.assert_close(spec.sum(1), torch.ones(32))
    e = properties.pca_energy(delta, basis, k=100)
    assert e.isotropic == pytest.approx(100 / d)
    assert 0 <= e.adversarial_bottom <= 1 and 0 <= e.adversarial_top <= 1
    assert e.data_top > 0.9 and e.data_bottom < 1e-3  # MNIST: most variance in few components, none at the border
    noise = torch.randn(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert properties.pca_energy(noise, basis, k=100).adversarial_bottom == pytest.approx(100 / d, abs=0.02)


def test_boundary_distances(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:4], y[:4]
    dist = properties.boundary_distances(mnist_cnn, x, eps_max=8.0, search_steps=4, steps=10)
    assert dist.shape == (4, 10)
    pred = logits_of(mnist_cnn, x).argmax(1)
    assert (dist[torch.arange(4), pred] == 0).all()
    assert (dist[torch.arange(4), y][pred == y] == 0).all()
    others = torch.ones_like(dist, dtype=torch.bool)
    others[torch.arange(4), pred] = False
    assert (dist[others] > 0).all()
    finite = torch.isfinite(dist) & others
    assert finite.float().mean() > 0.5 and (dist[finite] <= 8.0 + 1e-4).all()
    # each finite entry is witnessed: a targeted attack at (slightly above) that radius reaches the class
    i, c = finite.nonzero()[0]
    res = pgd(mnist_cnn, x[i : i + 1], c[None], dist[i, c] * 1.001, norm=2, steps=10, targeted=True,
              random_start=False)
    assert res.success.all()


def test_large_eps_examples(mnist_cnn, mnist_test):
    x, y = mnist_test
    target = (y[:8] + 1) % 10
    out = properties.large_eps_examples({"standard": mnist_cnn}, x[:8], target, eps=4.0, steps=20)
    res = out["standard"]
    assert res.x_adv.shape == x[:8].shape and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.norms <= 4.0 + 1e-4).all() and res.success.float().mean() >= 0.5
    assert torch.equal(res.success, res.pred == target)  # targeted: success means the model predicts the target
