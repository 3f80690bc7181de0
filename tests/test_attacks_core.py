"""Attack primitives against independent oracles: projections, random starts, losses, steps, targets, VAT, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from advlab import AdvlabError
from advlab.attacks import fgsm, pgd, transfer, vat, vat_direction
from advlab.attacks.core import (
    attack_loss,
    dlr_loss,
    greedy_l1_step,
    margin_loss,
    project,
    project_l2,
    random_ball,
    random_start,
    steepest_direction,
)
from advlab.attacks.targets import by_label, least_likely, next_class, random_targets

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NORMS = [math.inf, 2.0, 1.0]


# ------------------------------------------------------------------------------------------------ projection oracles
def _oracle_projection(z: np.ndarray, x: np.ndarray, eps: float, p: float) -> np.ndarray:
    """Independent float64 projection of z onto {||d||_p <= eps, -x <= d <= 1-x}, by 200-step bisection on λ."""
    lo, hi = -x, 1 - x
    if math.isinf(p):
        return np.clip(z, np.maximum(lo, -eps), np.minimum(hi, eps))
    if p == 2.0:
        def f(lam):
            return np.clip(z / (1 + lam), lo, hi)
        size = lambda d: np.sqrt((d**2).sum())  # noqa: E731
        top = np.sqrt((z**2).sum()) / max(eps, 1e-300) + 1
    else:
        cap = np.where(z > 0, hi, -lo)

        def f(lam):
            return np.sign(z) * np.minimum(np.maximum(np.abs(z) - lam, 0), cap)
        size = lambda d: np.abs(d).sum()  # noqa: E731
        top = np.abs(z).max() + 1
    if size(f(0.0)) <= eps:
        return f(0.0)
    a, b = 0.0, top
    for _ in range(200):
        mid = 0.5 * (a + b)
        a, b = (a, mid) if size(f(mid)) <= eps else (mid, b)
    return f(b)


def _batch(n: int = 12, d: int = 30, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    x[:, :5] = 0.0  # saturated pixels
    x[:, 5:10] = 1.0
    z = 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.linspace(0, 3.0, n, dtype=torch.float64)
    return x.to(device), z.to(device), eps.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", NORMS)
def test_projection_matches_bisection_oracle_and_is_feasible(p, device):
    x, z, eps = _batch(device=device)
    d = project(z, x, eps, p)
    for i in range(len(x)):
        ref = _oracle_projection(z[i].cpu().numpy(), x[i].cpu().numpy(), eps[i].item(), p)
        np.testing.assert_allclose(d[i].cpu().numpy(), ref, atol=1e-7)
    assert (d.norm(p=p, dim=1) <= eps + 1e-9).all()
    assert ((x + d) >= 0).all() and ((x + d) <= 1).all()
    # saturated pixels can only move into the box
    assert (d[:, :5] >= 0).all() and (d[:, 5:10] <= 0).all()
    assert torch.equal(d[0], torch.zeros_like(d[0]))  # eps = 0
    torch.testing.assert_close(project(d, x, eps, p), d, atol=1e-10, rtol=0)  # idempotent


@pytest.mark.parametrize("p", NORMS)
def test_projection_float32_is_tight(p):
    x, z, eps = _batch(n=6, d=784, seed=1)
    d32 = project(z.float(), x.float(), eps.float(), p).double()
    ref = torch.stack([torch.from_numpy(_oracle_projection(z[i].numpy(), x[i].numpy(), eps[i].item(), p))
                       for i in range(len(x))])
    assert (d32 - ref).abs().max() < 1e-5


@pytest.mark.parametrize("p", [2.0, 1.0])
def test_projection_is_optimal_variational_inequality_and_grid(p):
    """<z - P(z), c - P(z)> <= 0 for every feasible c; and in 2-D, P(z) is the closest point of a dense grid."""
    x, z, eps = _batch(n=8, d=10, seed=2)
    d = project(z, x, eps, p)
    c = random_start(x.repeat(200, 1), eps.repeat(200), p, torch.Generator().manual_seed(0)).view(200, *x.shape)
    assert (((z - d)[None] * (c - d[None])).sum(-1) <= 1e-9).all()
    # dense grid in 2-D, with one pixel at 0 and one free
    x2 = torch.tensor([[0.0, 0.4]], dtype=torch.float64)
    g = np.linspace(0, 1, 801)
    gx, gy = np.meshgrid(g - 0.0, g - 0.4, indexing="ij")
    for zz in ([-0.5, 0.9], [0.7, -0.6], [0.2, 0.1], [-0.3, -0.8]):
        zt = torch.tensor([zz], dtype=torch.float64)
        e = 0.5
        dd = project(zt, x2, torch.tensor([e], dtype=torch.float64), p)[0].numpy()
        feas = (np.abs(gx) ** p + np.abs(gy) ** p) ** (1 / p) <= e + 1e-12
        dist = (gx - zz[0]) ** 2 + (gy - zz[1]) ** 2
        dist[~feas] = np.inf
        k = np.unravel_index(dist.argmin(), dist.shape)
        assert abs(gx[k] - dd[0]) < 3e-3 and abs(gy[k] - dd[1]) < 3e-3, (zz, dd, gx[k], gy[k])


def test_clip_then_box_is_not_the_projection():
    """The naive 'scale into the ball, then clip to the box' loses budget on saturated pixels; ours does not."""
    x = torch.tensor([[0.0, 0.0, 0.5]], dtype=torch.float64)
    z = torch.tensor([[-1.0, -1.0, 0.3]], dtype=torch.float64)
    eps = torch.tensor([0.5], dtype=torch.float64)
    naive = (z * (eps / z.norm()).clamp(max=1)).clamp(-x, 1 - x)
    ours = project(z, x, eps, 2.0)
    assert ours.norm() == pytest.approx(0.3)  # all of the free pixel's move is kept
    assert naive.norm() < 0.2
    assert (ours - z).norm() < (naive - z).norm()


# ---------------------------------------------------------------------------------------------------- random starts
@pytest.mark.parametrize("p", [2.0, 1.0])
def test_random_ball_is_uniform_ks(p):
    d, n = 5, 4000
    x = torch.full((n, d), 0.5, dtype=torch.float64)
    eps = torch.full((n,), 0.3, dtype=torch.float64)
    delta = random_ball(x, eps, p, torch.Generator().manual_seed(0))
    r = delta.norm(p=p, dim=1) / eps
    assert (r <= 1 + 1e-12).all()
    assert stats.kstest((r**d).numpy(), "uniform").pvalue > 1e-3
    # direction symmetric: each coordinate's sign is a fair coin, coordinates identically distributed
    assert abs((delta > 0).double().mean().item() - 0.5) < 0.02
    assert stats.ks_2samp(delta[:, 0].numpy(), delta[:, 3].numpy()).pvalue > 1e-3
    # the KS test has power: a radius uniform in [0, eps] is rejected
    naive = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert stats.kstest((naive**d).numpy(), "uniform").pvalue < 1e-6


def test_random_ball_linf_uniform_and_per_sample_eps():
    x = torch.full((3000, 4), 0.5, dtype=torch.float64)
    eps = torch.full((3000,), 0.2, dtype=torch.float64)
    delta = random_ball(x, eps, math.inf, torch.Generator().manual_seed(0))
    assert stats.kstest(((delta.flatten() + 0.2) / 0.4).numpy(), "uniform").pvalue > 1e-3
    for p in NORMS:
        xx = torch.rand(6, 1, 8, 8)
        e = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, 5.0])
        dd = random_start(xx, e, p)
        assert dd.shape == xx.shape
        assert (dd.flatten(1).norm(p=p, dim=1) <= e * (1 + 1e-5) + 1e-7).all()
        assert ((xx + dd) >= 0).all() and ((xx + dd) <= 1).all()
        assert torch.equal(dd[0], torch.zeros_like(dd[0]))


# ----------------------------------------------------------------------------------------------- losses and steps
def test_losses_signs_and_invariance():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -2.0]])
    y = torch.tensor([0, 0])
    m = margin_loss(logits, y)
    torch.testing.assert_close(m, torch.tensor([-2.0, 2.0]))
    assert ((m > 0) == (logits.argmax(1) != y)).all()
    d1 = dlr_loss(logits, y)
    torch.testing.assert_close(dlr_loss(5 * logits + 3, y), d1)  # shift and scale invariant
    assert (attack_loss(logits, y, "ce") > 0).all()
    t = torch.tensor([2, 1])
    assert attack_loss(logits, t, "margin", targeted=True)[1] > 0  # target 1 is predicted
    assert attack_loss(logits, t, "margin", targeted=True)[0] < 0
    assert attack_loss(logits, t, "dlr", targeted=True)[1] > 0
    with pytest.raises(AdvlabError, match="loss"):
        attack_loss(logits, y, "hinge")
    with pytest.raises(AdvlabError, match="classes"):
        dlr_loss(logits[:, :2], y)


def test_steepest_directions():
    g = torch.randn(4, 1, 10, 10)
    g[0] = 0
    x = torch.rand(4, 1, 10, 10)
    d_inf = steepest_direction(g, math.inf)
    assert torch.equal(d_inf, g.sign())
    d2 = steepest_direction(g, 2.0)
    torch.testing.assert_close(d2.flatten(1).norm(dim=1)[1:], torch.ones(3))
    assert torch.equal(d2[0], torch.zeros_like(d2[0]))
    x[1, 0, 0, :5] = 1.0
    g[1, 0, 0, :5] = 100.0  # huge gradient on saturated pixels that cannot move up
    d1 = steepest_direction(g, 1.0, x, l1_fraction=0.05)
    assert (d1.flatten(1)[1:] != 0).sum(1).tolist() == [5, 5, 5]
    torch.testing.assert_close(d1.flatten(1).abs().sum(1)[1:], torch.ones(3))
    assert (d1[1, 0, 0, :5] == 0).all()
    assert ((d1 != 0) <= (d1.sign() == g.sign())).all()


def test_greedy_l1_step_is_the_linear_maximiser():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 12, generator=g, dtype=torch.float64)
    x[:, :3] = 1.0
    grad = torch.randn(4, 12, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.3, 1.0, 2.5, 20.0], dtype=torch.float64)
    step = greedy_l1_step(grad, x, eps)
    for i in range(4):
        # maximise <g, u - v> with u, v >= 0, u <= 1 - x, v <= x, sum(u + v) <= eps
        gi, xi = grad[i].numpy(), x[i].numpy()
        res = optimize.linprog(
            np.concatenate([-gi, gi]), A_ub=np.ones((1, 24)), b_ub=[eps[i].item()],
            bounds=list(zip(np.zeros(24), np.concatenate([1 - xi, xi]), strict=True)),
        )
        assert (grad[i] * step[i]).sum().item() == pytest.approx(-res.fun, abs=1e-9)
    assert (step.abs().sum(1) <= eps + 1e-12).all()


# ----------------------------------------------------------------------------------------------------------- targets
def test_targets():
    y = torch.arange(10).repeat(200)
    t = random_targets(y, 10, torch.Generator().manual_seed(0))
    assert (t != y).all() and t.min() >= 0 and t.max() <= 9
    assert len(torch.unique(t[y == 3])) == 9  # every other class occurs
    assert torch.equal(next_class(y, 10), (y + 1) % 10)
    assert torch.equal(by_label(y, 7), torch.full_like(y, 7))
    with pytest.raises(AdvlabError):
        random_targets(torch.tensor([0, 11]), 10)
    with pytest.raises(AdvlabError):
        by_label(y, -1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.rand(7, 1, 4, 4)
    assert torch.equal(least_likely(model, x), model(x).argmin(1))


# -------------------------------------------------------------------------------------------------------- vat/transfer
def _mlp(seed: int, d: int = 16, k: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, k)).eval()


def test_vat_direction_is_top_eigenvector():
    """Many power iterations converge to the top eigenvector of the KL Hessian (computed densely in float64)."""
    model = _mlp(0).double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    d = vat_direction(model, x, power_iterations=30, generator=torch.Generator().manual_seed(0))
    fd = vat_direction(model, x, xi=1e-2, power_iterations=30, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        with torch.no_grad():
            p = model(x[i : i + 1])
        from advlab.attacks.vat import kl_divergence

        def kl(r, i=i, p=p):
            return kl_divergence(p, model(x[i : i + 1] + r.view(1, 1, 4, 4))).sum()

        h = torch.autograd.functional.hessian(kl, torch.zeros(16, dtype=torch.float64))
        top = torch.linalg.eigh(h).eigenvectors[:, -1]
        assert abs(torch.dot(top, d[i].flatten())) > 0.999
        assert abs(torch.dot(top, fd[i].flatten())) > 0.99
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_vat_result_success_is_prediction_change():
    model = _mlp(1)
    x = torch.rand(40, 1, 4, 4)
    res = vat(model, x, eps=1.0, generator=torch.Generator().manual_seed(0))
    clean = model(x).argmax(1)
    assert torch.equal(res.success, model(res.x_adv).argmax(1) != clean)
    assert (res.norms <= 1.0 + 1e-5).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.equal(vat(model, x, eps=0.0).x_adv, x)


def test_transfer_reports_the_target_model():
    surrogate, target = _mlp(2), _mlp(3)
    x, y = torch.rand(30, 1, 4, 4), torch.randint(0, 4, (30,))
    res = transfer(pgd, surrogate, target, x, y, eps=0.3, steps=10)
    with torch.no_grad():
        assert torch.equal(res.pred, target(res.x_adv).argmax(1))
    assert torch.equal(res.success, res.pred != y)
    assert (res.norms <= 0.3 + 1e-6).all()


# ------------------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("attack", [fgsm, pgd])
def test_bad_inputs_raise_clear_errors(attack):
    model = _mlp(4)
    x, y = torch.rand(5, 1, 4, 4), torch.randint(0, 4, (5,))
    cases = [
        ((x * 2, y, 0.1), {}, "0, 1"),
        ((x - 0.5, y, 0.1), {}, "0, 1"),
        ((x[0, 0, 0], y, 0.1), {}, "batch"),
        ((x, y[:4], 0.1), {}, "shaped"),
        ((x, y[:, None], 0.1), {}, "shaped"),
        ((x, y.float(), 0.1), {}, "integer"),
        ((x, y + 10, 0.1), {}, "Labels"),
        ((x, y, -0.1), {}, "eps"),
        ((x, y, torch.full((4,), 0.1)), {}, "eps"),
        ((x, y, 0.1), {"norm": 3}, "norm"),
        ((x, y, 0.1), {"loss": "xent"}, "loss"),
        ((x[:0], y[:0], 0.1), {}, "empty"),
    ]
    if attack is pgd:
        cases += [((x, y, 0.1), {"step_size": -0.01}, "step_size"), ((x, y, 0.1), {"steps": -1}, "steps"),
                  ((x, y, 0.1), {"restarts": 2, "random_start": False}, "random_start")]
    for args, kw, match in cases:
        with pytest.raises(AdvlabError, match=match):
            attack(model, *args, **kw)


def test_train_mode_model_is_attacked_in_eval_mode_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.9), nn.Linear(32, 4))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 4, (8,))
    with pytest.warns(UserWarning, match="train mode"):
        res = pgd(model, x, y, 0.1, steps=3)
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(res.pred, model(res.x_adv).argmax(1))  # predictions are eval-mode predictions


def test_wrapper_in_train_mode_keeps_its_eval_mode_inner_model():
    # e.g. BPDA(InputQuantization(model)): a fresh wrapper is in train mode, the wrapped classifier in eval mode
    inner = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.9), nn.Linear(32, 4)).eval()
    wrapper = nn.Sequential(inner)
    wrapper.training = True
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 4, (8,))
    with pytest.warns(UserWarning, match="train mode"):
        pgd(wrapper, x, y, 0.1, steps=2)
    assert wrapper.training
    assert not any(m.training for m in inner.modules()), "the attack put the wrapped eval-mode model in train mode"


def test_softmax_outputs_warn():
    model = nn.Sequential(_mlp(5), nn.Softmax(dim=1)).eval()
    x, y = torch.rand(4, 1, 4, 4), torch.randint(0, 4, (4,))
    for attack in (fgsm, pgd):
        with pytest.warns(UserWarning, match="probabilities"):
            attack(model, x, y, 0.1)


def _bisection_l2(z: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, halvings: int = 100) -> torch.Tensor:
    """Batched float64 reference: δ = clip(z / (1 + λ), -x, 1 - x), λ >= 0 by bisection on ||δ||_2 = ε."""
    lo, hi = -x, 1 - x
    size = lambda lam: torch.maximum(torch.minimum(z / (1 + lam[:, None]), hi), lo).norm(dim=1)  # noqa: E731
    a, b = torch.zeros_like(eps), z.norm(dim=1) / eps.clamp_min(1e-300) + 1
    for _ in range(halvings):
        mid = 0.5 * (a + b)
        ok = size(mid) <= eps
        a, b = torch.where(ok, a, mid), torch.where(ok, mid, b)
    lam = torch.where(size(torch.zeros_like(eps)) <= eps, torch.zeros_like(eps), b)
    return torch.maximum(torch.minimum(z / (1 + lam[:, None]), hi), lo)


def test_l2_projection_on_mnist_sized_inputs_matches_bisection():
    """784-d inputs, 80% of the pixels saturated as in MNIST, radii from inside to far outside the ball ∩ box."""
    g = torch.Generator().manual_seed(3)
    n, d = 64, 784
    x = torch.rand(n, d, generator=g, dtype=torch.float64)
    u = torch.rand(n, d, generator=g, dtype=torch.float64)
    x = torch.where(u < 0.7, 0.0, torch.where(u > 0.9, 1.0, x))
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    eps = torch.rand(n, generator=g, dtype=torch.float64) * 12
    delta = project(z, x, eps, 2.0)
    ref = _bisection_l2(z, x, eps)
    assert (delta - ref).abs().max() < 1e-9
    assert (delta.norm(dim=1) <= eps + 1e-12).all() and ((x + delta) >= 0).all() and ((x + delta) <= 1).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_projection_stopped_early_is_still_feasible_and_exact_when_converged(dtype):
    """``max_iter`` too small to converge still returns a point of the ball ∩ box; enough rounds match the oracle."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(32, 784, generator=g, dtype=torch.float64)
    x = torch.where(torch.rand(32, 784, generator=g, dtype=torch.float64) < 0.8, 0.0, x)
    z = torch.randn(32, 784, generator=g, dtype=torch.float64) * 0.3
    eps = torch.full((32,), 2.0, dtype=torch.float64)
    ref = _bisection_l2(z, x, eps)
    xs, zs, es = x.to(dtype), z.to(dtype), eps.to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for rounds in (1, 2):
        delta = project_l2(zs, xs, es, max_iter=rounds)
        assert (delta.norm(dim=1) <= es + tol).all()
        assert ((xs + delta) >= 0).all() and ((xs + delta) <= 1).all()
    assert (project_l2(zs, xs, es).double() - ref).abs().max() < (1e-5 if dtype == torch.float32 else 1e-9)
