"""Minimal-perturbation attacks: DeepFool, Carlini–Wagner L2, L-BFGS and the one-pixel attack."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

from advlab.attacks.cw import cw_l2, cw_margin
from advlab.attacks.deepfool import deepfool, deepfool_trace
from advlab.attacks.lbfgs import lbfgs
from advlab.attacks.one_pixel import changed_pixels, greedy_pixels, one_pixel
from advlab.config import AdvlabError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------
# A two-class linear model with known minimal perturbations
# ---------------------------------------------------------------------------------------------


def linear_problem(n: int = 10, side: int = 8, device: str = "cpu", seed: int = 0):
    """A 2-class linear model on flattened (n, 1, side, side) interior inputs, and its optimal radii.

    The inputs lie in [0.25, 0.75] and every optimal perturbation is far from the box, so the minimal
    L2 perturbation is |margin| / ||w1 - w0||_2 and the minimal L∞ one is |margin| / ||w1 - w0||_1.
    """
    g = torch.Generator().manual_seed(seed)
    d = side * side
    dw = torch.randn(d, generator=g)
    dw -= dw.mean()  # a zero-sum direction: moving along it keeps the inputs near 0.5
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-dw / 2, dw / 2]))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).to(device).eval()
    x0 = 0.5 + 0.05 * (2 * torch.rand(n, d, generator=g) - 1)
    radius = 0.1 + 0.2 * torch.rand(n, generator=g)  # the optimal L2 distances to build in
    sign = torch.where(torch.arange(n) % 2 == 0, -1.0, 1.0)  # even rows class 0, odd rows class 1
    target_margin = sign * radius * dw.norm()
    x = x0 + ((target_margin - x0 @ dw) / dw.dot(dw))[:, None] * dw
    assert 0.25 <= x.min() and x.max() <= 0.75
    y = (sign > 0).long()
    margin = (x @ dw).abs()
    opt2, optinf = margin / dw.norm(p=2), margin / dw.norm(p=1)
    x = x.view(n, 1, side, side)
    return model, x.to(device), y.to(device), opt2.to(device), optinf.to(device)


def assert_near_optimal(result, optimum, factor=1.1):
    ratio = result.norms / optimum
    assert result.success.all(), f"failed on {(~result.success).sum().item()} samples"
    assert ratio.min() >= 0.999, f"beat the optimum: ratio {ratio.min().item():.4f}"  # impossible
    assert ratio.max() <= factor, f"perturbation {ratio.max().item():.4f}x the optimum"
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_linear_problem_is_correctly_classified(device):
    model, x, y, opt2, optinf = linear_problem(device=device)
    assert (model(x).argmax(1) == y).all()
    assert (optinf < opt2).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", [2, "inf"])
def test_deepfool_linear_oracle(device, norm):
    model, x, y, opt2, optinf = linear_problem(device=device)
    optimum = opt2 if norm == 2 else optinf
    exact = deepfool(model, x, y, norm=norm, overshoot=0.0)
    assert_near_optimal(exact, optimum, factor=1.01)  # one exact linear step (+1e-4 as in the paper)
    over = deepfool(model, x, y, norm=norm, overshoot=0.02)
    assert_near_optimal(over, optimum, factor=1.03)
    torch.testing.assert_close(over.norms, 1.02 * exact.norms, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_cw_linear_oracle(device):
    model, x, y, opt2, _ = linear_problem(device=device)
    result = cw_l2(model, x, y, binary_search_steps=8)
    assert result.norm == 2.0
    assert_near_optimal(result, opt2, factor=1.1)


@pytest.mark.parametrize("device", DEVICES)
def test_lbfgs_linear_oracle(device):
    model, x, y, opt2, _ = linear_problem(n=6, device=device)
    untargeted = lbfgs(model, x, y, search_steps=12, max_iter=50)
    assert untargeted.norm == 2.0
    assert_near_optimal(untargeted, opt2, factor=1.1)
    targeted = lbfgs(model, x, 1 - y, targeted=True, search_steps=12, max_iter=50)
    assert_near_optimal(targeted, opt2, factor=1.1)
    assert (targeted.pred == 1 - y).all()


@pytest.mark.parametrize("device", DEVICES)
def test_cw_moves_pixels_at_exactly_zero_and_one(device):
    # Only pixel 0 (at exactly 0, must rise) and pixel 1 (at exactly 1, must fall) matter.
    d = 16
    w = torch.zeros(d)
    w[0], w[1] = 1.0, -1.0
    lin = nn.Linear(d, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(d), w]))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).to(device).eval()
    x = torch.full((3, 1, 4, 4), 0.5, device=device)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = 0.0, 1.0  # margin z1 - z0 = x0 - x1 = -1: class 0
    y = torch.zeros(3, dtype=torch.long, device=device)
    result = cw_l2(model, x, y)
    assert result.success.all()
    delta = (result.x_adv - x).flatten(1)
    # the optimum moves pixel 0 up to 0.5 and pixel 1 down to 0.5: L2 = sqrt(0.5)
    assert (delta[:, 0] > 0.4).all() and (delta[:, 1] < -0.4).all()
    assert delta[:, 2:].abs().max() < 1e-3  # the other pixels do not help
    assert (result.norms >= math.sqrt(0.5) * 0.999).all() and (result.norms <= math.sqrt(0.5) * 1.1).all()


def test_cw_margin_masks_the_label():
    logits = torch.tensor([[5.0, 1.0, 3.0], [0.0, 2.0, 9.0]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(cw_margin(logits, y), torch.tensor([2.0, 7.0]))
    torch.testing.assert_close(cw_margin(logits, y, confidence=0.5), torch.tensor([2.0, 7.0]))
    torch.testing.assert_close(cw_margin(logits, torch.tensor([2, 1]), targeted=True), torch.tensor([2.0, 7.0]))
    torch.testing.assert_close(cw_margin(logits, y, targeted=True, confidence=1.0), torch.tensor([-1.0, -1.0]))


# ---------------------------------------------------------------------------------------------
# The trained MNIST CNN
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_batch(mnist_test, mnist_cnn):
    """12 correctly classified test images."""
    x, y = mnist_test
    x, y = x[:20], y[:20]
    with torch.no_grad():
        ok = mnist_cnn(x).argmax(1) == y
    return x[ok][:12], y[ok][:12]


def test_deepfool_mnist_succeeds_and_applies_the_overshoot(mnist_cnn, mnist_batch):
    x, y = mnist_batch
    trace = deepfool_trace(mnist_cnn, x, y, overshoot=0.02)
    result = deepfool(mnist_cnn, x, y, overshoot=0.02)
    assert result.success.float().mean() >= 0.95
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert (trace.iterations >= 1).all() and (trace.iterations < 50).all()
    # the overshoot scales the TOTAL perturbation: x_adv = clip(x + 1.02 r_tot)
    torch.testing.assert_close(result.x_adv, (x + 1.02 * trace.r_tot).clamp(0, 1))
    raw = trace.r_tot.flatten(1).norm(dim=1)
    assert (result.norms <= 1.02 * raw + 1e-5).all()  # clipping can only shorten it
    no_overshoot = ((x + trace.r_tot).clamp(0, 1) - x).flatten(1).norm(dim=1)
    assert (result.norms > no_overshoot).all()
    inf = deepfool(mnist_cnn, x, y, norm="inf")
    assert inf.norm == math.inf and inf.success.float().mean() >= 0.95
    assert (inf.norms < 0.5).all()


def test_cw_targeted_hits_the_target(mnist_cnn, mnist_batch):
    x, y = mnist_batch
    x, y = x[:3], y[:3]
    target = (y + 1) % 10
    result = cw_l2(mnist_cnn, x, target, targeted=True, binary_search_steps=3, steps=60)
    assert result.success.all() and (result.pred == target).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_lbfgs_mnist_untargeted_and_targeted(mnist_cnn, mnist_batch):
    x, y = mnist_batch
    x, y = x[:4], y[:4]
    untargeted = lbfgs(mnist_cnn, x, y, search_steps=4, max_iter=40)
    assert untargeted.success.all() and (untargeted.pred != y).all()
    target = (y + 1) % 10
    targeted = lbfgs(mnist_cnn, x, target, targeted=True, search_steps=4, max_iter=40)
    assert targeted.success.all() and (targeted.pred == target).all()
    for result in (untargeted, targeted):
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
        torch.testing.assert_close(result.norms, (result.x_adv - x).flatten(1).norm(dim=1))
    # reaching one given class is harder than reaching any other class
    assert targeted.norms.median() > untargeted.norms.median()


class CountingModel(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        return self.model(x)


def test_one_pixel_evaluates_each_generation_in_one_forward_pass(mnist_cnn, mnist_batch):
    x, y = mnist_batch
    x, y = x[:4], y[:4]
    counting = CountingModel(mnist_cnn).eval()
    population, generations = 30, 5
    result = one_pixel(counting, x, y, pixels=2, population=population, generations=generations)
    big = [b for b in counting.batches if b > len(x)]
    # the initial population plus one pass per generation, each over every still-robust image
    assert len(big) == generations + 1
    assert all(b % population == 0 and b // population <= len(x) for b in big)
    assert big[0] == len(x) * population
    assert (result.norms <= 2).all() and result.norm == 0.0
    torch.testing.assert_close(result.norms, changed_pixels(x, result.x_adv))
    # failures come back unchanged, successes differ in at most `pixels` locations
    assert (result.norms[~result.success] == 0).all()


def bump_model(side: int = 8, device: str = "cpu") -> nn.Module:
    """Class 1 iff a bright pixel sits near (5, 2) of a dark image: only one location is enough."""
    rows = torch.arange(side, dtype=torch.float32)
    weight = torch.exp(-((rows[:, None] - 5) ** 2 + (rows[None, :] - 2) ** 2) / 2.0)  # 1 at (5, 2)
    lin = nn.Linear(side * side, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.zeros(side * side), 10 * weight.flatten()]))
        lin.bias.copy_(torch.tensor([0.0, -9.0]))  # needs weight * value > 0.9
    return nn.Sequential(nn.Flatten(), lin).to(device).eval()


@pytest.mark.parametrize("device", DEVICES)
def test_one_pixel_finds_the_only_sensitive_pixel(device):
    model = bump_model(device=device)
    x = 0.1 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    y = torch.zeros(6, dtype=torch.long, device=device)
    assert (model(x).argmax(1) == 0).all()
    def gen():
        return torch.Generator().manual_seed(3)

    result = one_pixel(model, x, y, pixels=1, population=20, generations=40, generator=gen())
    assert result.success.all()
    assert (result.norms == 1).all()
    changed = (result.x_adv != x).flatten(1).float().argmax(1)
    assert (changed == 5 * 8 + 2).all()
    assert (result.x_adv.flatten(1)[:, 5 * 8 + 2] > 0.7).all()  # bright enough to cross the bias
    # targeted at class 1 is the same problem; a seeded generator makes runs reproducible
    again = one_pixel(model, x, torch.ones_like(y), population=20, generations=40, generator=gen(), targeted=True)
    assert again.success.all()
    same = one_pixel(model, x, y, population=20, generations=40, generator=gen())
    torch.testing.assert_close(result.x_adv, same.x_adv)
    # binomial crossover
    crossed = one_pixel(model, x, y, population=20, generations=40, generator=gen(), crossover=0.7)
    assert crossed.success.all() and (crossed.norms == 1).all()


# ---------------------------------------------------------------------------------------------
# Parity with torchattacks (test-only dependency)
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Freeze the parameters, so that torchattacks does not also compute their gradients."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def _median_on_both(ours, x, x_theirs, model, y):
    with torch.no_grad():
        theirs_ok = model(x_theirs).argmax(1) != y
    both = ours.success & theirs_ok
    assert both.sum() >= 2, "too few samples on which both attacks succeed"
    theirs = (x_theirs - x).flatten(1).norm(dim=1)
    return ours.norms[both].median().item(), theirs[both].median().item()


def test_deepfool_parity_with_torchattacks(mnist_cnn, mnist_batch):
    import torchattacks  # a dev dependency (pyproject: [dev])

    x, y = mnist_batch
    x, y = x[:5], y[:5]
    ours = deepfool(mnist_cnn, x, y, overshoot=0.02)
    with frozen(mnist_cnn):
        theirs = torchattacks.DeepFool(mnist_cnn, steps=15, overshoot=0.02)(x, y)
    ours_med, theirs_med = _median_on_both(ours, x, theirs, mnist_cnn, y)
    print(
        f"DeepFool median L2: advlab {ours_med:.4f}, torchattacks {theirs_med:.4f}, ratio {ours_med / theirs_med:.4f}"
    )
    assert ours_med <= 1.01 * theirs_med


def test_cw_mnist_in_the_box_and_parity_with_torchattacks(mnist_cnn, mnist_batch):
    import torchattacks  # a dev dependency (pyproject: [dev])

    x, y = mnist_batch
    x, y = x[:6], y[:6]
    ours = cw_l2(mnist_cnn, x, y, binary_search_steps=5)
    assert ours.success.all()
    assert ours.x_adv.min() >= 0 and ours.x_adv.max() <= 1
    torch.testing.assert_close(ours.norms, (ours.x_adv - x).flatten(1).norm(dim=1))
    # torchattacks' CW has no search over c; c=10 with lr=0.1 is a setting where it succeeds
    with frozen(mnist_cnn):
        theirs = torchattacks.CW(mnist_cnn, c=10, kappa=0, steps=100, lr=0.1)(x, y)
    ours_med, theirs_med = _median_on_both(ours, x, theirs, mnist_cnn, y)
    print(f"CW-L2 median L2: advlab {ours_med:.4f}, torchattacks {theirs_med:.4f}, ratio {ours_med / theirs_med:.4f}")
    assert ours_med <= 1.01 * theirs_med


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: deepfool(m, x * 2, y),
        lambda m, x, y: deepfool(m, x, y, norm=1),
        lambda m, x, y: deepfool(m, x, y, overshoot=-0.1),
        lambda m, x, y: deepfool(m, x, y, candidates=1),
        lambda m, x, y: deepfool(m, x, y.float()),
        lambda m, x, y: cw_l2(m, x, y[:2]),
        lambda m, x, y: cw_l2(m, x, y, c_init=0.0),
        lambda m, x, y: cw_l2(m, x, y, steps=0),
        lambda m, x, y: cw_l2(m, x, y, confidence=-1.0),
        lambda m, x, y: cw_l2(m, x, y + 5),
        lambda m, x, y: lbfgs(m, x, y[:1], targeted=True),
        lambda m, x, y: lbfgs(m, x, y, c_range=(10.0, 1.0)),
        lambda m, x, y: lbfgs(m, x - 1, y),
        lambda m, x, y: one_pixel(m, x.flatten(1), y),
        lambda m, x, y: one_pixel(m, x, y, pixels=0),
        lambda m, x, y: one_pixel(m, x, y, population=3),
    ],
)
def test_bad_input_raises_advlab_error(call):
    model, x, y, _, _ = linear_problem(n=4, side=4)
    with pytest.raises(AdvlabError):
        call(model, x, y)


# ---------------------------------------------------------------------------------------------
# The greedy gradient L0 attack
# ---------------------------------------------------------------------------------------------


class _PixelSum(nn.Module):
    """Two classes scored by w·x + b on flattened single-channel images: for label 0 the input gradient of the
    cross-entropy is p_1 (w_1 - w_0)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = w, b  # (2, H·W), (2,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def test_greedy_pixels_changes_the_pixels_of_largest_first_order_gain():
    """Class 0 is favoured by x; the attack pushes towards class 1, so it must set to 1 the pixels where w1 - w0 is
    largest (x = 0 there) and to 0 the pixels where it is most negative (x = 1 there), best gain first."""
    side = 4
    d = torch.zeros(side * side)
    d[[3, 7]] = torch.tensor([5.0, 4.0])  # gain of setting to 1 (x = 0 there)
    d[[10]] = torch.tensor([-3.0])  # gain of setting to 0 (x = 1 there)
    d[[12]] = torch.tensor([2.0])  # a pixel already at 1: setting it to 1 gains nothing
    w = torch.stack([torch.zeros_like(d), d])
    x = torch.zeros(1, 1, side, side)
    x.view(-1)[[10, 12]] = 1.0
    model = _PixelSum(w, torch.tensor([2.5, 0.0]))  # class 0 ahead
    y = torch.zeros(1, dtype=torch.long)
    for k, expected in ((1, {3}), (2, {3, 7}), (3, {3, 7, 10})):
        res = greedy_pixels(model, x, y, k)
        changed = set((res.x_adv != x).flatten().nonzero().flatten().tolist())
        assert changed == expected and res.norms.item() == k and res.norm == 0.0
    assert res.x_adv.view(-1)[10] == 0 and res.x_adv.view(-1)[3] == 1


def test_greedy_pixels_on_a_cnn_stays_in_the_l0_ball(mnist_cnn, mnist_batch):
    x, y = mnist_batch
    res = greedy_pixels(mnist_cnn, x, y, 10)
    assert (changed_pixels(x, res.x_adv) <= 10).all() and torch.equal(res.norms, changed_pixels(x, res.x_adv))
    assert ((res.x_adv == 0) | (res.x_adv == 1) | (res.x_adv == x)).all()  # changed pixels go to 0 or 1
    assert res.success.float().mean() > 0.3  # ten pixels fool the standard CNN on many images
    with pytest.raises(AdvlabError, match="pixels"):
        greedy_pixels(mnist_cnn, x, y, 0)
