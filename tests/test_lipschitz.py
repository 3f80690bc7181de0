"""Lipschitz bounds, 1-Lipschitz layers and their certificates, checked against explicit matrices and attacks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from torch import nn

from advlab import lipschitz
from advlab.config import AdvlabError
from advlab.lipschitz import (
    AOLLinear,
    GroupSort,
    MaxMin,
    certified_accuracy,
    certified_radius,
    certified_radius_pairwise,
    certify,
    layer_bounds,
    layer_lipschitz,
    lipschitz_mlp,
    network_lipschitz,
    spectral_norm_conv,
    spectral_norm_linear,
)
from advlab.models import Normalize


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _operator_matrix(op, shape) -> torch.Tensor:
    """The explicit matrix of a linear map on inputs of ``shape``: column i is op(e_i)."""
    d = math.prod(shape)
    with torch.no_grad():
        return op(torch.eye(d).reshape(d, *shape)).reshape(d, -1).T.double()


def _max_ratio(model: nn.Module, shape, pairs: int = 8, steps: int = 60, seed: int = 0) -> float:
    """Largest ||f(x) - f(x')|| / ||x - x'|| found by gradient ascent on random nearby pairs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(pairs, *shape, generator=gen).requires_grad_(True)
    x2 = (x.detach() + 0.01 * torch.randn(pairs, *shape, generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([x, x2], lr=0.01)
    best = torch.zeros(pairs)
    for _ in range(steps):
        out = model(torch.cat([x, x2]))
        ratio = (out[:pairs] - out[pairs:]).flatten(1).norm(dim=1) / (x - x2).flatten(1).norm(dim=1)
        best = torch.maximum(best, ratio.detach())
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best.max().item()


# ---------------------------------------------------------------------------------------------------------------
# Spectral norms
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(10, 10), (30, 7), (5, 40)])
def test_dense_spectral_norm_matches_svd(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    sigma, v = spectral_norm_linear(w)
    exact = torch.linalg.matrix_norm(w, ord=2)
    assert sigma.item() == pytest.approx(exact.item(), rel=1e-3)
    assert (w @ v).norm().item() == pytest.approx(exact.item(), rel=1e-3)  # v is the top singular vector


CONVS = [  # (in, out, kernel, stride, padding, dilation, input shape)
    (1, 3, 3, 1, 0, 1, (1, 6, 6)),
    (1, 3, 3, 1, 1, 1, (1, 6, 6)),
    (1, 2, 3, 2, 1, 1, (1, 6, 6)),
    (2, 3, 3, 2, 0, 1, (2, 5, 5)),
    (2, 4, 2, 1, 1, 2, (2, 5, 5)),
    (2, 2, 4, 3, 2, 1, (2, 5, 5)),
]


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, dilation, shape", CONVS)
def test_conv_spectral_norm_matches_explicit_operator(c_in, c_out, k, stride, padding, dilation, shape):
    torch.manual_seed(1)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation)
    matrix = _operator_matrix(lambda e: F.conv2d(e, conv.weight, None, stride, padding, dilation), shape)
    exact = torch.linalg.matrix_norm(matrix.double(), ord=2).item()
    assert spectral_norm_conv(conv, shape)[0].item() == pytest.approx(exact, rel=1e-3)
    # a raw kernel with explicit arguments gives the same operator
    raw = spectral_norm_conv(conv.weight, shape, stride=stride, padding=padding, dilation=dilation)[0]
    assert raw.item() == pytest.approx(exact, rel=1e-3)
    # the network bound is the exact norm (the layer's matrix is small), rounded outward
    assert exact <= layer_lipschitz(conv, shape) <= exact * (1 + 1e-8)
    # and the Fourier bound of the circular convolution that contains the layer is a true upper bound, not a loose one
    bound = lipschitz._conv_upper_bound(conv.weight, shape[-2:], stride, padding, dilation)
    assert exact <= bound <= 1.5 * exact


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, groups", [
    (1, 16, 4, 2, 1, 1), (16, 32, 4, 2, 1, 1), (4, 8, 3, 1, 1, 2), (3, 6, 5, 1, 2, 3), (2, 4, 3, 3, 0, 1),
])
def test_fourier_conv_bound_is_tight_on_mnist_sized_inputs(c_in, c_out, k, stride, padding, groups):
    torch.manual_seed(4)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, groups=groups, bias=False)
    shape = (c_in, 14, 14)
    matrix = _operator_matrix(lambda e: conv(e), shape)
    exact = torch.linalg.matrix_norm(matrix.double(), ord=2).item()
    bound = lipschitz._conv_upper_bound(conv.weight, shape[-2:], stride, padding, 1, groups)
    assert exact <= bound <= 1.15 * exact


def test_conv_bound_beats_power_iteration_from_below():
    # A kernel whose operator norm power iteration approaches slowly: its estimate is below the norm, the bound not.
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    shape = (3, 10, 10)
    exact = torch.linalg.matrix_norm(_operator_matrix(conv, shape).double(), ord=2).item()
    estimate = spectral_norm_conv(conv, shape, max_iter=3)[0].item()
    bound = layer_lipschitz(conv, shape, max_iter=3)
    assert estimate < exact <= bound


def test_transposed_conv_bound_is_above_its_exact_norm():
    torch.manual_seed(6)
    conv = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False)
    shape = (4, 7, 7)
    exact = torch.linalg.matrix_norm(_operator_matrix(conv, shape).double(), ord=2).item()
    assert exact <= layer_lipschitz(conv, shape) <= exact * (1 + 1e-8)
    out_hw = conv(torch.zeros(1, *shape)).shape[-2:]
    assert exact <= lipschitz._conv_upper_bound(conv.weight, out_hw, 2, 1) <= 1.5 * exact


def test_large_layers_use_the_fourier_bound(monkeypatch):
    torch.manual_seed(8)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    shape = (2, 9, 9)
    exact = torch.linalg.matrix_norm(_operator_matrix(conv, shape).double(), ord=2).item()
    monkeypatch.setattr(lipschitz, "EXPLICIT_ENTRIES", 10)  # as if the layer were too large for its matrix
    bound = layer_lipschitz(conv, shape)
    assert bound == lipschitz._conv_upper_bound(conv.weight, (9, 9), 1, 1) and exact <= bound <= 1.5 * exact


def test_conv_spectral_norm_circular_padding():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False)
    exact = torch.linalg.matrix_norm(_operator_matrix(conv, (2, 5, 5)), ord=2).item()
    assert spectral_norm_conv(conv, (2, 5, 5))[0].item() == pytest.approx(exact, rel=1e-3)


@pytest.mark.parametrize("pool", [
    nn.AvgPool2d(3, stride=2, padding=1), nn.AvgPool2d(2), nn.AvgPool2d(3, stride=1),
    nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), nn.AvgPool2d(3, stride=2, ceil_mode=True),
    nn.AvgPool2d(2, divisor_override=2), nn.AdaptiveAvgPool2d(4), nn.AdaptiveAvgPool2d((3, 2)),
], ids=repr)
def test_average_pooling_bound_is_a_true_upper_bound(pool, monkeypatch):
    exact = torch.linalg.matrix_norm(_operator_matrix(pool, (1, 7, 7)).double(), ord=2).item()
    assert exact * (1 - 1e-6) <= layer_lipschitz(pool, (1, 7, 7)) <= exact * (1 + 1e-6)  # small: the exact norm
    monkeypatch.setattr(lipschitz, "EXPLICIT_ENTRIES", 10)  # large: a rigorous closed-form or Fourier bound
    assert exact <= layer_lipschitz(pool, (1, 7, 7)) <= 4 * exact


def test_non_overlapping_average_pooling_bound_is_exact():
    exact = torch.linalg.matrix_norm(_operator_matrix(nn.AvgPool2d(2), (1, 6, 6)).double(), ord=2).item()
    assert layer_lipschitz(nn.AvgPool2d(2), (1, 6, 6)) == pytest.approx(exact, rel=1e-8) == pytest.approx(0.5)
    assert lipschitz._avg_pool_upper_bound(nn.AvgPool2d(2), (1, 6, 6)) == pytest.approx(0.5, rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Network bounds vs. gradient ascent on the ratio
# ---------------------------------------------------------------------------------------------------------------


def test_network_bound_is_never_exceeded_on_random_cnn():
    torch.manual_seed(3)
    cnn = _frozen(nn.Sequential(
        Normalize((0.5,), (0.3,)),
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
        nn.MaxPool2d(3, stride=1),  # overlapping windows: sqrt(9) = 3
        nn.Flatten(), nn.Linear(24, 12), nn.Tanh(), nn.Linear(12, 5),
    ))
    rows = layer_bounds(cnn, (1, 8, 8))
    bound = network_lipschitz(cnn, (1, 8, 8))
    assert bound == pytest.approx(math.prod(b for _, _, b in rows), rel=1e-6)
    assert dict((name, b) for name, _, b in rows)["0"] == pytest.approx(1 / 0.3)
    assert dict((name, b) for name, _, b in rows)["5"] == pytest.approx(3.0)
    ratio = _max_ratio(cnn, (1, 8, 8), steps=40)
    assert 0 < ratio <= bound * (1 + 1e-3)


def test_random_mlp_bound_and_linear_model_is_tight():
    torch.manual_seed(4)
    mlp = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 3)))
    assert _max_ratio(mlp, (1, 4, 4)) <= network_lipschitz(mlp, (1, 4, 4)) * (1 + 1e-3)
    # for a linear model the bound is attained, so the ascent must get close to it
    linear = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    bound = network_lipschitz(linear, (1, 4, 4))
    ratio = _max_ratio(linear, (1, 4, 4), steps=150)
    assert bound * 0.95 <= ratio <= bound * (1 + 1e-3)


def test_lipschitz_mlp_is_one_lipschitz():
    torch.manual_seed(5)
    model = lipschitz_mlp((1, 6, 6), classes=4, width=24, depth=3)
    with torch.no_grad():  # far from the orthogonal initialisation: the constraint must hold for any parameter
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    _frozen(model)
    assert isinstance(model[2], GroupSort)
    bound = network_lipschitz(model, (1, 6, 6))
    assert bound <= 1 + 1e-4
    ratio = _max_ratio(model, (1, 6, 6))
    assert ratio <= 1 + 1e-4
    assert all(m.lipschitz(()) <= 1 + 1e-5 for m in model if isinstance(m, AOLLinear))
    with pytest.raises(AdvlabError, match="aol"):
        lipschitz_mlp((1, 6, 6), classes=4, layer="bjorck")


def test_maxmin_is_nonexpansive():
    torch.manual_seed(7)
    a, b = torch.randn(64, 2, 6, 6), torch.randn(64, 2, 6, 6)
    out = (MaxMin()(a) - MaxMin()(b)).flatten(1).norm(dim=1)
    assert (out <= (a - b).flatten(1).norm(dim=1) * (1 + 1e-6)).all()
    assert layer_lipschitz(MaxMin(), (2, 6, 6)) == 1.0


def test_unsupported_layers_raise():
    with pytest.raises(AdvlabError, match="lipschitz"):
        network_lipschitz(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.GELU()), (4,))
    with pytest.raises(AdvlabError, match="Sequential"):
        network_lipschitz(nn.Linear(4, 4), (4,))


# ---------------------------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------------------------


def test_certified_radius_formulas():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.5, 0.4]])
    assert certified_radius(logits, 2.0).tolist() == pytest.approx([2 / (2 * math.sqrt(2)), 0.1 / (2 * math.sqrt(2))])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    # sample 0: ŷ = 0; j = 1: 2 / sqrt(2); j = 2: 3 / 1 -> 2/sqrt(2). sample 1: ŷ = 1; j = 0: 0.5/sqrt(2); j = 2: 0.1/1
    assert certified_radius_pairwise(logits, weight, 1.0).tolist() == pytest.approx([2 / math.sqrt(2), 0.1])
    with pytest.raises(AdvlabError):
        certified_radius(logits, 0.0)


def test_pairwise_certificate_is_at_least_the_global_one():
    torch.manual_seed(10)
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4)))
    x = torch.rand(32, 1, 4, 4)
    pred, r_global = certify(model, x)
    pred2, r_pair = certify(model, x, pairwise=True)
    assert torch.equal(pred, pred2)
    assert (r_pair >= r_global * (1 - 1e-4)).all() and (r_pair > r_global * 1.01).any()


def _l2_attack_changes_prediction(model, x, pred, eps, steps=40):
    """Own L2 PGD (unboxed) on the margin of the predicted class; True where the prediction ever changed."""
    delta, changed = torch.zeros_like(x), torch.zeros(len(x), dtype=torch.bool)
    step = (2.5 * eps / steps).view(-1, 1, 1, 1)
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model(x + delta)
        runner_up = logits.scatter(1, pred[:, None], -math.inf).max(1).values
        loss = (runner_up - logits.gather(1, pred[:, None]).squeeze(1)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + step * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
        with torch.no_grad():
            changed |= model(x + delta).argmax(1) != pred
    return changed


def test_no_attack_inside_the_certified_radius():
    torch.manual_seed(11)
    classes, shape = 3, (1, 6, 6)
    means = 0.2 + 0.6 * torch.rand(classes, *shape)
    y = torch.arange(90) % classes
    x = (means[y] + 0.05 * torch.randn(90, *shape)).clamp(0, 1)
    model = lipschitz_mlp(shape, classes, width=24, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(40):
        loss = F.cross_entropy(10 * model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _frozen(model)
    acc = certified_accuracy(model, x, y, [0.0, 0.1, 0.3, 10.0])
    assert acc[0] > 0.9 and acc[-1] == 0 and (acc[:-1] >= acc[1:]).all()
    pred, radius = certify(model, x, pairwise=True)
    assert (radius > 0.05).float().mean() > 0.5
    assert not _l2_attack_changes_prediction(model, x, pred, 0.99 * radius).any()
    # the attack is strong enough to matter: slightly beyond the radius it succeeds almost everywhere
    assert _l2_attack_changes_prediction(model, x, pred, 1.5 * radius).float().mean() > 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_bounds_and_certificates_on_device(device):
    torch.manual_seed(12)
    model = nn.Sequential(Normalize((0.5,), (0.5,)), nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    bound_cpu = network_lipschitz(_frozen(model), (1, 8, 8))
    model = _frozen(model.to(device))
    assert network_lipschitz(model, (1, 8, 8)) == pytest.approx(bound_cpu, rel=1e-4)
    x = torch.rand(10, 1, 8, 8, device=device)
    pred, radius = certify(model, x, pairwise=True)
    assert pred.device.type == radius.device.type == torch.device(device).type
    acc = certified_accuracy(model, x, pred, [0.0, 1e-3])
    assert acc[0] == 1.0


def test_dense_bound_is_a_true_upper_bound_on_a_near_degenerate_layer():
    # Two top singular values 1e-6 apart: power iteration converges slowly from below and can stop under the norm;
    # a certificate needs the bound from above (the exact SVD, rounded outward).
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    s = torch.linspace(0.1, 1.0, 64, dtype=torch.float64)
    s[-2] = 1.0 - 1e-6
    layer = nn.Linear(64, 64, bias=False)
    with torch.no_grad():
        layer.weight.copy_((u @ torch.diag(s) @ v.T).float())
    exact = torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2).item()
    bound = layer_lipschitz(layer, (64,), max_iter=5)
    assert exact <= bound <= exact * (1 + 1e-8)


def test_certified_radii_are_rounded_down_never_up():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2000, 10, generator=g)
    weight = torch.randn(10, 32, generator=g)
    L = 0.7311
    r = certified_radius(logits, L)
    top2 = logits.double().topk(2, dim=1).values
    exact = (top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * L)
    assert r.dtype == logits.dtype and bool((r.double() <= exact).all())
    assert float((exact - r.double()).max()) < 1e-6  # rounded, not truncated crudely
    rp = certified_radius_pairwise(logits, weight, L)
    z, w = logits.double(), weight.double()
    pred = z.argmax(1)
    gaps = z.gather(1, pred[:, None]) - z
    dist = (w[pred][:, None, :] - w[None]).norm(dim=2)
    exact_p = (gaps / (L * dist)).scatter(1, pred[:, None], math.inf).min(1).values
    assert bool((rp.double() <= exact_p).all())


def test_certify_keeps_the_two_lipschitz_constants_apart():
    torch.manual_seed(13)
    model = _frozen(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)))
    x = torch.rand(20, 1, 4, 4)
    L_pen = network_lipschitz(model[:-1], (1, 4, 4))
    _, computed = certify(model, x, pairwise=True)
    _, given = certify(model, x, pairwise=True, L_penultimate=L_pen)
    assert torch.equal(computed, given)
    with pytest.raises(AdvlabError, match="L_penultimate"):
        certify(model, x, L=network_lipschitz(model, (1, 4, 4)), pairwise=True)  # the whole network's bound
    with pytest.raises(AdvlabError, match="pairwise=True"):
        certify(model, x, L_penultimate=L_pen)
