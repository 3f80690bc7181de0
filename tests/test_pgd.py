"""PGD / BIM / FGSM: exact oracles on a linear model, invariants on the trained MNIST CNN, parity with torchattacks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.attacks import bim, fgsm, pgd
from advlab.attacks.pgd import pgd_inputs
from advlab.attacks.targets import next_class
from advlab.config import AdvlabError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NORMS = [math.inf, 2.0, 1.0]
EPS = {math.inf: 0.1, 2.0: 1.5, 1.0: 10.0}  # budgets where the MNIST CNN is neither intact nor fully broken
DUAL = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}


# ------------------------------------------------------------------------------------------------ linear oracle
def _linear(device: str, d: int = 20, n: int = 16, seed: int = 0):
    """A 2-class linear model and interior points; minimal Lp distance to the boundary = |margin| / ||w1 - w0||_q.

    The points are moved along w1 - w0 so that their minimal L1 distance (the largest of the three) is in
    [0.1, 0.25]: every minimal perturbation then stays inside the box, so the box does not change the answer.
    """
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, d, generator=g))
        model[1].bias.copy_(torch.randn(2, generator=g))
        w = model[1].weight[1] - model[1].weight[0]
        b = model[1].bias[1] - model[1].bias[0]
        x = 0.5 + 0.1 * (torch.rand(n, d, generator=g) - 0.5)
        side = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
        want = side * (0.1 + 0.15 * torch.rand(n, generator=g)) * w.abs().max()  # target margins
        x = x + ((want - (x @ w + b)) / w.dot(w))[:, None] * w
        assert x.min() > 0.3 and x.max() < 0.7
        model = model.to(device).eval()
        x = x[:, None].to(device)
        out = model(x)
        w = w.to(device)
    y = out.argmax(1)
    margin = (out[:, 1] - out[:, 0]).abs()
    return model, x, y, margin, w


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", NORMS)
def test_pgd_finds_the_minimal_perturbation_of_a_linear_model(p, device):
    model, x, y, margin, w = _linear(device)
    dist = margin / w.norm(p=DUAL[p])  # per-sample eps tensor
    # the interior points keep every move inside the box, so the unconstrained minimum is the true one
    assert ((x.flatten(1) - 0.5).abs().max() + dist.max()) < 0.5
    above = pgd(model, x, y, 1.05 * dist, norm=p, steps=30)
    below = pgd(model, x, y, 0.95 * dist, norm=p, steps=30)
    assert above.success.all()
    assert not below.success.any()
    assert (above.norms <= 1.05 * dist * (1 + 1e-5)).all()
    # targeted at the other class is the same problem
    assert pgd(model, x, 1 - y, 1.05 * dist, norm=p, steps=30, targeted=True).success.all()
    assert not bim(model, x, 1 - y, 0.95 * dist, norm=p, steps=30, targeted=True).success.any()


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_fgsm_is_exact_on_a_linear_model(p):
    """For a linear model the first-order step is optimal: FGSM succeeds at 1.01x the minimal distance."""
    model, x, y, margin, w = _linear("cpu")
    dist = margin / w.norm(p=DUAL[p])
    assert fgsm(model, x, y, 1.01 * dist, norm=p, loss="margin").success.all()
    assert not fgsm(model, x, y, 0.99 * dist, norm=p).success.any()


@pytest.mark.parametrize("p", NORMS)
def test_eps_zero_returns_x_exactly(p):
    model, x, y, _, _ = _linear("cpu")
    for attack in (pgd, fgsm):
        res = attack(model, x, y, 0.0, norm=p)
        assert torch.equal(res.x_adv, x)
        assert not res.success.any() and (res.norms == 0).all()


def test_restarts_only_attack_robust_samples():
    model, x, y, margin, w = _linear("cpu", n=12)
    sizes: list[int] = []
    model.register_forward_hook(lambda m, inp, out: sizes.append(len(inp[0])))
    eps = margin / w.norm(p=1)
    eps[:5] *= 1.1  # breakable
    eps[5:] *= 0.9  # not breakable
    res = pgd(model, x, y, eps, steps=5, restarts=3)
    assert res.success[:5].all() and not res.success[5:].any()
    # first run: 12 inputs; the two restarts only see the 7 unbroken inputs
    assert sizes.count(7) == 2 * (5 + 1) and sizes.count(12) >= 5 + 1


# -------------------------------------------------------------------------------------------------- mnist
@pytest.fixture(scope="module")
def batch(mnist_cnn, mnist_test):
    x, y = mnist_test
    return mnist_cnn, x[:64], y[:64]


def _acc(model, x_adv, y) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("p", NORMS)
def test_mnist_ball_box_and_per_sample_eps(batch, p):
    model, x, y = batch
    eps = EPS[p] * torch.linspace(0.2, 1.0, len(x), device=x.device)
    res = pgd(model, x, y, eps, norm=p, steps=10, generator=torch.Generator().manual_seed(0))
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.norms <= eps * (1 + 1e-5) + 1e-6).all()
    with torch.no_grad():
        assert torch.equal(res.pred, model(res.x_adv).argmax(1))
    f = fgsm(model, x, y, eps, norm=p)
    assert f.x_adv.min() >= 0 and f.x_adv.max() <= 1 and (f.norms <= eps * (1 + 1e-5) + 1e-6).all()
    # eps = 0 gives clean accuracy
    assert _acc(model, pgd(model, x, y, 0.0, norm=p, steps=3).x_adv, y) == _acc(model, x, y)


@pytest.mark.parametrize("p", NORMS)
def test_mnist_more_steps_and_larger_eps_never_help_the_model(batch, p):
    model, x, y = batch
    clean = _acc(model, x, y)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    # same random start and step size: the 20-step run extends the 5-step run, and the best iterate is kept
    alpha = 2.5 * EPS[p] / 15
    short = pgd(model, x, y, EPS[p], norm=p, steps=5, step_size=alpha, generator=gen())
    long = pgd(model, x, y, EPS[p], norm=p, steps=15, step_size=alpha, generator=gen())
    assert (long.success >= short.success).all()
    assert long.success.sum() > short.success.sum()
    accs = [_acc(model, pgd(model, x, y, s * EPS[p], norm=p, steps=10, generator=gen()).x_adv, y)
            for s in (0.5, 1.0, 2.0)]
    assert all(b <= a + 0.02 for a, b in zip(accs, accs[1:], strict=False)), accs
    assert clean > accs[0] and accs[2] < 0.5 * accs[0], accs  # the budget matters, a lot


def test_mnist_targeted_pgd_reaches_its_targets(batch):
    model, x, y = batch
    t = next_class(y, 10)
    # at 0.3 some 0 -> 1 targets survive (torchattacks' targeted PGD agrees: ~90%); 0.5 is large enough for all
    res = pgd(model, x, t, 0.5, steps=40, targeted=True, loss="margin")
    assert res.success.float().mean().item() >= 0.95
    assert torch.equal(res.success, res.pred == t)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", NORMS)
def test_mnist_sample_result_does_not_depend_on_batch_mates(batch, p, device):
    model, x, y = batch
    home = next(model.parameters()).device
    model = model.to(device)
    x, y = x[:16].to(device), y[:16].to(device)
    try:
        full = pgd(model, x, y, EPS[p], norm=p, steps=10, random_start=False)
        alone = torch.cat([pgd(model, x[i : i + 1], y[i : i + 1], EPS[p], norm=p, steps=10,
                               random_start=False).x_adv for i in (0, 5, 11)])
    finally:
        model.to(home)
    differ = ((full.x_adv[[0, 5, 11]] - alone).abs() > 1e-4).float().mean().item()
    assert differ < 0.01


def test_mnist_parity_with_torchattacks(batch):
    import torchattacks  # test-only dependency (pyproject [dev])

    model, x, y = batch
    eps, alpha, steps = 0.1, 0.01, 40
    torch.manual_seed(0)
    theirs = _acc(model, torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y), y)
    ours = _acc(model, pgd(model, x, y, eps, steps=steps, step_size=alpha).x_adv, y)
    assert 0 < theirs < _acc(model, x, y)  # a budget where the comparison means something
    assert ours <= theirs + 1 / len(y) + 1e-9, (ours, theirs)  # within one input (1.6 pp at n = 64)


class _RowCounter(torch.nn.Module):
    """Counts the input rows a model is evaluated on (a proxy for compute)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_early_stop_gives_the_same_robust_accuracy_for_less_compute(batch, p):
    model, x, y = batch
    eps = 0.1 if p == math.inf else 1.5
    counted = _RowCounter(model).eval()
    full = pgd(counted, x, y, eps, norm=p, steps=20, generator=torch.Generator().manual_seed(0))
    rows_full, counted.rows = counted.rows, 0
    early = pgd(counted, x, y, eps, norm=p, steps=20, early_stop=True, generator=torch.Generator().manual_seed(0))
    assert counted.rows < 0.8 * rows_full
    # same random start, same steps until a sample breaks: exactly the same samples break
    assert torch.equal(early.success, full.success)
    assert bool((early.norms <= eps * (1 + 1e-5)).all()) and early.x_adv.min() >= 0 and early.x_adv.max() <= 1


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_pgd_inputs_are_pgds_inputs_without_the_recheck(batch, p):
    """The training hook's variant returns the very x_adv of pgd and skips exactly one forward of the batch."""
    model, x, y = batch
    eps = 0.1 if p == math.inf else 1.5
    counted = _RowCounter(model).eval()
    full = pgd(counted, x, y, eps, norm=p, steps=5, generator=torch.Generator().manual_seed(0))
    rows_full, counted.rows = counted.rows, 0
    inputs = pgd_inputs(counted, x, y, eps, norm=p, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inputs, full.x_adv)
    assert counted.rows == rows_full - len(x)


def test_pgd_inputs_refuse_non_finite_inputs(batch, monkeypatch):
    """No re-check forward, but still no NaN handed to a trainer: an engine run that ends on NaN is refused."""
    import importlib

    from advlab.attacks.engine import Ascent

    pgd_module = importlib.import_module("advlab.attacks.pgd")  # the module (advlab.attacks.pgd is the function)

    model, x, y = batch
    n = len(x)
    monkeypatch.setattr(pgd_module, "ascend", lambda *a, **k: Ascent(torch.full_like(x, float("nan")),
                                                                      torch.zeros(n), torch.zeros(n, dtype=torch.bool)))
    with pytest.raises(AdvlabError, match="non-finite"):
        pgd_inputs(model, x, y, 0.1, steps=1)
