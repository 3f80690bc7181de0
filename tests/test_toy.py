"""Tests for the toy problems with known answers (advlab.toy)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from advlab import toy
from advlab.config import AdvlabError


def test_tsipras_data_follows_the_definition():
    g = torch.Generator().manual_seed(0)
    x, y = toy.tsipras_data(20000, d=16, p=0.9, generator=g)
    assert x.shape == (20000, 17) and set(y.unique().tolist()) == {-1.0, 1.0}
    assert set(x[:, 0].unique().tolist()) == {-1.0, 1.0}
    assert abs((x[:, 0] == y).float().mean().item() - 0.9) < 0.01
    weak = x[:, 1:] * y[:, None]  # ~ N(eta, 1)
    assert abs(weak.mean().item() - toy.tsipras_eta(16)) < 0.01
    assert abs(weak.std().item() - 1.0) < 0.01
    with pytest.raises(AdvlabError, match="p must"):
        toy.tsipras_data(10, p=0.4)


@pytest.mark.parametrize("d", [1, 3, 6])
def test_exact_robust_loss_matches_brute_force_over_the_box_corners(d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(7, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (7,), generator=g).double() * 2 - 1
    w = torch.randn(d, generator=g, dtype=torch.float64)
    b = torch.randn((), generator=g, dtype=torch.float64)
    eps = 0.3
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64) * eps  # (2^d, d)
    # the loss is convex in δ, so its max over the box is at a corner
    losses = F.softplus(-y[:, None] * ((x[:, None, :] + corners[None]) @ w + b))  # (7, 2^d)
    brute = losses.max(1).values.mean()
    assert torch.allclose(toy.linear_robust_loss(w, b, x, y, eps), brute, rtol=1e-12)
    margins = y[:, None] * ((x[:, None, :] + corners[None]) @ w + b)
    assert torch.allclose(toy.robust_margin(w, b, x, y, eps), margins.min(1).values, rtol=1e-12)
    assert torch.allclose(toy.linear_robust_loss(w, b, x, y, 0.0), F.softplus(-y * (x @ w + b)).mean())
    # robust accuracy = no corner flips the sign
    assert toy.accuracy(w, b, x, y, eps) == pytest.approx((margins.min(1).values > 0).double().mean().item())


def test_standard_vs_robust_training_reproduces_the_tradeoff():
    d, p = 50, 0.95
    g = torch.Generator().manual_seed(0)
    x, y = toy.tsipras_data(2000, d, p, generator=g)
    xt, yt = toy.tsipras_data(4000, d, p, generator=g)
    eps = 2 * toy.tsipras_eta(d)
    std = toy.train_linear(x, y, eps=0.0, epochs=200)
    rob = toy.train_linear(x, y, eps=eps, epochs=200)
    std_clean, std_rob = toy.accuracy(*std, xt, yt), toy.accuracy(*std, xt, yt, eps)
    rob_clean, rob_rob = toy.accuracy(*rob, xt, yt), toy.accuracy(*rob, xt, yt, eps)
    assert std_clean > 0.99 and std_rob < 0.05
    assert rob_rob > 0.9 and abs(rob_clean - p) < 0.02
    assert std_clean > rob_clean and rob_rob > std_rob + 0.8
    # the theorem: robust accuracy <= p/(1-p) * (1 - clean accuracy); slack for the finite test set
    assert std_rob <= toy.tsipras_bound(p, 1 - std_clean) + 0.01
    # the robust model relies on the robust feature x1 and drops the weak ones
    assert rob.w[1:].abs().sum() < 0.1 * rob.w[0].abs()


def test_tsipras_bound():
    assert toy.tsipras_bound(0.95, 0.001) == pytest.approx(0.019)
    assert toy.tsipras_bound(0.9, 0.5) == 1.0
    with pytest.raises(AdvlabError):
        toy.tsipras_bound(1.0, 0.1)


def test_spheres_radii_and_balance():
    x, y = toy.spheres_data(101, 30, r_inner=1.0, r_outer=1.3, generator=torch.Generator().manual_seed(0))
    r = torch.linalg.vector_norm(x, dim=1)
    assert torch.allclose(r[y == 0], torch.ones(()), atol=1e-5)
    assert torch.allclose(r[y == 1], torch.full((), 1.3), atol=1e-5)
    assert (y == 0).sum() == 51 and (y == 1).sum() == 50
    # directions are uniform: the mean direction is near 0
    assert torch.linalg.vector_norm((x / r[:, None]).mean(0)) < 0.3


def _ellipsoid_model(d: int, a1: float = 1.2, tau: float = 1.3) -> toy.QuadraticNet:
    """z = ‖x‖² + a1·x₁² − τ: on the unit sphere it errs exactly where |x₁| > c = √((τ − 1) / a1)."""
    model = toy.QuadraticNet(d)
    with torch.no_grad():
        model.W.copy_(torch.eye(d))
        a = torch.ones(d)
        a[0] += a1
        model.a.copy_(a)
        model.b.fill_(-tau)
    return model.eval()


def test_nearest_error_on_sphere_matches_the_closed_form():
    d, c = 20, math.sqrt(0.3 / 1.2)
    model = _ellipsoid_model(d)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(200, d, generator=g)
    u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True)
    u = u[u[:, 0].abs() < 0.45][:30]
    y = torch.zeros(len(u), dtype=torch.long)
    assert (model(u).argmax(1) == 0).all()
    res = toy.nearest_error_on_sphere(model, u, y, steps=100, step_size=0.01)
    # nearest point with |x1| >= c on the unit sphere: along the great circle towards ±e1
    geodesic = torch.arccos(u[:, 0].abs()) - math.acos(c)
    expected = 2 * torch.sin(geodesic / 2)
    assert res.success.all()
    assert torch.allclose(res.distance, expected, atol=1e-4)
    assert torch.allclose(torch.linalg.vector_norm(res.x_err, dim=1), torch.ones(()), atol=1e-5)
    assert (model(res.x_err).argmax(1) == 1).all()
    # outer points are all classified right and the attack cannot leave their sphere to fix that
    outer = 1.3 * u
    far = toy.nearest_error_on_sphere(model, outer, torch.ones(len(u), dtype=torch.long), steps=20)
    assert not far.success.any() and torch.isinf(far.distance).all()


def test_trained_quadratic_net_separates_the_spheres():
    d = 10
    torch.manual_seed(0)
    model = toy.train_spheres(toy.QuadraticNet(d), d, steps=300, batch_size=50, lr=1e-2)
    inner_err, outer_err = toy.sphere_error_rate(model, d, n=2000)
    assert inner_err < 0.02 and outer_err < 0.02
    x, y = toy.spheres_data(20, d, generator=torch.Generator().manual_seed(3))
    res = toy.nearest_error_on_sphere(model, x, y, steps=150, step_size=0.02)
    ok = res.success
    assert ok.any()
    assert (model(res.x_err[ok]).argmax(1) != y[ok]).all()
    assert torch.allclose(torch.linalg.vector_norm(res.x_err, dim=1), torch.linalg.vector_norm(x, dim=1), atol=1e-4)


def test_boundary_angle_and_distance_on_constructed_cases():
    assert toy.boundary_angle(torch.tensor([1.0, 0.0])) == pytest.approx(0.0, abs=1e-4)
    assert toy.boundary_angle(torch.tensor([-2.0, 0.0])) == pytest.approx(0.0, abs=1e-4)
    assert toy.boundary_angle(torch.tensor([1.0, 1.0])) == pytest.approx(45.0, abs=1e-4)
    assert toy.boundary_angle(torch.tensor([1.0, math.sqrt(3.0), 0.0])) == pytest.approx(60.0, abs=1e-4)
    assert toy.boundary_angle(torch.tensor([0.0, 1.0])) == pytest.approx(90.0, abs=1e-4)
    assert toy.boundary_angle(torch.tensor([1.0, 1.0]), normal=torch.tensor([0.0, 3.0])) == pytest.approx(45.0)
    w, b = torch.tensor([1.0, 1.0]), torch.tensor(-1.0)
    pts = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.0, 0.0], [3.0, 0.0]])
    dist = toy.distance_to_boundary(w, b, pts)
    assert torch.allclose(dist, torch.tensor([1.0, 0.0, 1.0, 2.0]) / math.sqrt(2.0))
    with pytest.raises(AdvlabError):
        toy.boundary_angle(torch.zeros(2))


def test_boundary_tilting_data_and_unregularised_tilt():
    g = torch.Generator().manual_seed(0)
    x, y = toy.boundary_tilting_data(20, d=20, sigma=0.02, gap=0.0, generator=g)
    xt, yt = toy.boundary_tilting_data(1000, d=20, sigma=0.02, gap=0.0, generator=g)
    assert (x[:, 0] * y >= 0).all() and x[:, 1:].std() < 0.03 and (y == 1).sum() == 10
    free = toy.train_linear(x, y, epochs=1000, lr=0.1)
    decayed = toy.train_linear(x, y, epochs=1000, lr=0.1, weight_decay=1e-2)
    # both fit the training set, but the unregularised boundary tilts into the flat directions
    assert toy.accuracy(*free, x, y) == 1.0 and toy.accuracy(*decayed, x, y) == 1.0
    assert toy.boundary_angle(free.w) > 45 > 15 > toy.boundary_angle(decayed.w)
    true_dist = xt[:, 0].abs().median()
    assert toy.distance_to_boundary(*free, xt).median() < 0.5 * true_dist
    assert toy.distance_to_boundary(*decayed, xt).median() > 0.8 * true_dist
