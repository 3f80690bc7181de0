"""Randomized smoothing: sampling, PREDICT and CERTIFY against scipy's binomial statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import DEVICES
from scipy import stats
from torch import nn

from advlab.config import AdvlabError
from advlab.smoothing import (
    NoiseAverage,
    certified_accuracy_curve,
    certify,
    gaussian_noise,
    lower_confidence_bound,
    max_certifiable_radius,
    predict,
    radius,
    sample_counts,
)

SIGMA = 0.25


class ConstantModel(nn.Module):
    """Always predicts ``cls`` among ``k`` classes."""

    def __init__(self, cls: int = 2, k: int = 4) -> None:
        super().__init__()
        self.cls, self.k = cls, k
        self.eval()

    def forward(self, x):
        logits = torch.zeros(len(x), self.k, device=x.device)
        logits[:, self.cls] = 5.0
        return logits


class ThresholdModel(nn.Module):
    """Class 0 when the first pixel exceeds ``t``, else class 1 (4 classes in all). Deterministic in its input."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t
        self.eval()

    def forward(self, x):
        first = x.flatten(1)[:, 0]
        logits = torch.zeros(len(x), 4, device=x.device)
        logits[:, 0] = 5.0 * (first > self.t).float()
        logits[:, 1] = 5.0 * (first <= self.t).float()
        return logits


def _x(n: int = 8, value: float = 0.5) -> torch.Tensor:
    return torch.full((n, 1, 4, 4), value)


def test_sample_counts_shape_sum_and_seed():
    model = ThresholdModel(0.5)
    counts = sample_counts(model, _x(6), SIGMA, n=300, batch_size=128, seed=0)
    assert counts.shape == (6, 4) and counts.dtype == torch.long
    assert (counts.sum(1) == 300).all()
    assert (counts[:, 2:] == 0).all()
    assert torch.equal(counts, sample_counts(model, _x(6), SIGMA, n=300, batch_size=128, seed=0))
    assert not torch.equal(counts, sample_counts(model, _x(6), SIGMA, n=300, batch_size=128, seed=1))


def test_noise_is_gaussian_and_not_clipped():
    # At x = 0 the first pixel of x + noise is negative half of the time; clipping to [0, 1] would make it never.
    counts = sample_counts(ThresholdModel(0.0), _x(4, 0.0), SIGMA, n=2000, batch_size=1000, seed=0)
    frac = counts[:, 1].double() / 2000
    assert ((frac - 0.5).abs() < 5 * math.sqrt(0.25 / 2000)).all()
    # gaussian_noise (training) is not clipped either and has std sigma.
    xb = torch.rand(64, 1, 8, 8)
    noisy = gaussian_noise(SIGMA)(None, xb, torch.zeros(64, dtype=torch.long))
    assert noisy.min() < 0 and noisy.max() > 1
    assert abs((noisy - xb).std().item() - SIGMA) < 0.01


def test_certify_abstains_on_ties():
    # The first pixel is 0.5 + noise: class 0 or 1 with probability 1/2 each.
    cert = certify(ThresholdModel(0.5), _x(8), SIGMA, n0=50, n=1000, alpha=0.001, seed=0)
    assert (cert.pred == -1).all() and (cert.radius == 0).all()
    assert cert.abstain.all()
    pred, rad = cert  # unpacks
    assert torch.equal(pred, cert.pred) and torch.equal(rad, cert.radius)


def test_predict_abstains_on_ties_and_returns_constant_class():
    assert (predict(ThresholdModel(0.5), _x(8), SIGMA, n=1000, alpha=0.001, seed=0) == -1).all()
    assert (predict(ConstantModel(cls=3), _x(5), SIGMA, n=20, alpha=0.001, seed=0) == 3).all()


def test_predict_matches_scipy_binomtest():
    # P(class 0) = Φ(0.05 / 0.25) ≈ 0.58: with n = 300 some rows pass the test and some abstain.
    model, x, n, alpha = ThresholdModel(0.45), _x(40), 300, 0.05
    pred = predict(model, x, SIGMA, n=n, alpha=alpha, seed=3)
    counts = sample_counts(model, x, SIGMA, n=n, seed=3)  # same seed: the same noise
    expected = []
    for row in counts.tolist():
        order = np.argsort(row)[::-1]
        n_a, n_b = row[order[0]], row[order[1]]
        expected.append(int(order[0]) if stats.binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha else -1)
    assert pred.tolist() == expected
    assert -1 in expected and 0 in expected


def test_certify_radius_is_one_sided_clopper_pearson():
    # P(class 0) = Φ(1) ≈ 0.841.
    n, alpha = 2000, 0.001
    cert = certify(ThresholdModel(0.5 - SIGMA), _x(16), SIGMA, n0=100, n=n, alpha=alpha, seed=0)
    assert (cert.pred == 0).all()
    p = stats.norm.cdf(1.0)
    assert ((cert.n_a.double() / n - p).abs() < 5 * math.sqrt(p * (1 - p) / n)).all()
    for k, r in zip(cert.n_a.tolist(), cert.radius.tolist(), strict=True):
        # A one-sided level-alpha bound is the lower end of scipy's two-sided exact interval at level 2·alpha.
        p_a = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert r == pytest.approx(SIGMA * stats.norm.ppf(p_a), rel=1e-5)
        assert p_a == pytest.approx(stats.beta.ppf(alpha, k, n - k + 1), rel=1e-9)


def test_max_certifiable_radius_on_constant_model():
    n, alpha = 500, 0.001
    cert = certify(ConstantModel(cls=1), _x(3), SIGMA, n0=10, n=n, alpha=alpha, seed=0)
    closed_form = SIGMA * stats.norm.ppf(alpha ** (1 / n))
    assert max_certifiable_radius(n, alpha, SIGMA) == pytest.approx(closed_form, rel=1e-12)
    assert (cert.pred == 1).all() and (cert.n_a == n).all()
    assert torch.allclose(cert.radius.double(), torch.full((3,), closed_form, dtype=torch.float64), rtol=1e-6)
    # A two-sided interval (alpha/2 on each side) would certify less: this catches such an implementation.
    two_sided = SIGMA * stats.norm.ppf((alpha / 2) ** (1 / n))
    assert (cert.radius > two_sided + 1e-4).all()


def test_one_sided_bound_is_larger_than_two_sided():
    n, alpha = 1000, 0.01
    ks = np.array([1, 300, 600, 900, 999, 1000])
    one_sided = lower_confidence_bound(ks, n, alpha)
    for k, low in zip(ks, one_sided, strict=True):
        two_sided = stats.binomtest(int(k), n).proportion_ci(confidence_level=1 - alpha, method="exact").low
        assert low > two_sided
        assert low < k / n
    assert lower_confidence_bound(0, n, alpha) == 0.0
    assert lower_confidence_bound(n, n, alpha) == pytest.approx(alpha ** (1 / n))
    # tensors in, tensors out
    t = lower_confidence_bound(torch.tensor([600, 900]), n, alpha)
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.as_tensor(one_sided[2:4]))


def test_radius_formula():
    assert radius(0.5, SIGMA) == pytest.approx(0.0, abs=1e-12)
    assert radius(stats.norm.cdf(2.0), SIGMA) == pytest.approx(2 * SIGMA)
    assert radius(0.3, SIGMA) < 0  # no certificate below 1/2
    with pytest.raises(AdvlabError):
        radius(1.5, SIGMA)


def test_certified_accuracy_curve():
    pred = torch.tensor([0, 1, -1, 2, 2])
    rad = torch.tensor([0.5, 0.1, 0.0, 1.0, 0.3])
    y = torch.tensor([0, 1, 1, 2, 0])
    acc = certified_accuracy_curve(pred, rad, y, [0.0, 0.2, 0.5, 1.0, 1.5])
    assert acc.tolist() == pytest.approx([0.6, 0.4, 0.4, 0.2, 0.0])


def test_bad_arguments_raise():
    model = ConstantModel()
    with pytest.raises(AdvlabError):
        certify(model, _x(2), sigma=0.0)
    with pytest.raises(AdvlabError):
        certify(model, _x(2), SIGMA, alpha=1.5)
    with pytest.raises(AdvlabError):
        predict(model, _x(2), SIGMA, n=0)
    with pytest.raises(AdvlabError):
        sample_counts(model, _x(2, 2.0), SIGMA, n=10)  # not in [0, 1]
    with pytest.raises(AdvlabError):
        lower_confidence_bound(11, 10, 0.01)


@pytest.mark.parametrize("device", DEVICES)
def test_smoothing_on_device(device):
    x = _x(4).to(device)
    cert = certify(ConstantModel(cls=2), x, SIGMA, n0=10, n=200, alpha=0.001, batch_size=64, seed=0)
    assert cert.pred.device.type == torch.device(device).type
    assert (cert.pred == 2).all()
    assert torch.allclose(cert.radius.double().cpu(), torch.full((4,), max_certifiable_radius(200, 0.001, SIGMA),
                                                                  dtype=torch.float64), rtol=1e-5)
    counts = sample_counts(ThresholdModel(0.5 - SIGMA), x, SIGMA, n=500, batch_size=300, seed=0)
    assert counts.device.type == torch.device(device).type and (counts.sum(1) == 500).all()
    assert (predict(ConstantModel(cls=1), x, SIGMA, n=30, seed=0) == 1).all()


def test_noise_average_is_the_mean_softmax_over_fresh_draws():
    """NoiseAverage (the attack stand-in of the smoothed classifier): log of the mean softmax over ``draws`` noisy
    copies, new noise at every call from its own generator, differentiable in x, the global random state untouched."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.rand(5, 1, 4, 4)
    stand_in = NoiseAverage(base, 0.5, draws=8, generator=torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    out1, out2 = stand_in(x), stand_in(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert out1.shape == (5, 3) and not torch.allclose(out1, out2)  # fresh draws per call
    # the oracle: the same draws, by hand
    noise = torch.randn((8, 5, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    want = torch.stack([base(x + 0.5 * noise[k]).softmax(1) for k in range(8)]).mean(0).log()
    torch.testing.assert_close(out1, want)
    torch.testing.assert_close(out1.exp().sum(1), torch.ones(5))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(stand_in(xg)[:, 0].sum(), xg)
    assert grad.abs().sum() > 0
    with pytest.raises(AdvlabError, match="sigma"):
        NoiseAverage(base, 0.0)
    with pytest.raises(AdvlabError, match="draws"):
        NoiseAverage(base, 0.5, draws=0)

