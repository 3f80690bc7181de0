"""Tests for the synthetic FONTS dataset (advlab.data.fonts)."""

from __future__ import annotations

import math

import pytest
import torch

from advlab.config import AdvlabError
from advlab.data import fonts


def test_shapes_range_and_balanced_classes():
    x, y, classes = fonts.load("train", 105, seed=1)
    assert x.shape == (105, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (105,) and y.dtype == torch.int64
    assert classes == tuple("ABCDEFGHIJ")
    assert x.min() >= 0 and x.max() <= 1
    counts = torch.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 105
    assert (x.flatten(1).sum(1) > 5).all(), "every image shows a letter"


def test_deterministic_for_a_seed_and_seed_matters():
    a = fonts.generate("train", 60, "easy", seed=4)
    b = fonts.generate("train", 60, "easy", seed=4)
    c = fonts.generate("train", 60, "easy", seed=5)
    for u, v in zip(a[:4], b[:4], strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.theta, c.theta)


def test_theta_inside_the_difficulty_box():
    for difficulty in ("easy", "hard"):
        low, high = fonts.theta_bounds(difficulty)
        theta = fonts.generate("test", 200, difficulty, seed=0).theta
        assert (theta >= low).all() and (theta <= high).all()
        # uniform in the box: it reaches near both ends of every coordinate
        span = high - low
        assert ((theta.min(0).values - low) < 0.1 * span).all() and ((high - theta.max(0).values) < 0.1 * span).all()
    assert (
        fonts.THETA_HIGH["easy"] - fonts.THETA_LOW["easy"] < fonts.THETA_HIGH["hard"] - fonts.THETA_LOW["hard"]
    ).all()
    with pytest.raises(AdvlabError, match="difficulty"):
        fonts.generate("train", 10, "medium")


def test_train_and_test_are_different_samples():
    train = fonts.generate("train", 300, seed=0)
    test = fonts.generate("test", 300, seed=0)
    assert not torch.equal(train.theta, test.theta)
    nearest = torch.cdist(test.x.flatten(1), train.x.flatten(1)).min(1).values
    assert (nearest > 1e-3).all(), "no test image repeats a training image"
    with pytest.raises(AdvlabError, match="split"):
        fonts.load("val", 10)


def test_font_split_keeps_test_fonts_out_of_training():
    train = fonts.generate("train", 400, font_split=True)
    test = fonts.generate("test", 200, font_split=True)
    assert set(train.font.tolist()).isdisjoint(test.font.tolist())
    assert (test.font % 5 == 4).all()


def test_fonts_without_the_letters_are_excluded():
    used = set(fonts.font_files())
    assert {"DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "cmr10.ttf", "STIXGeneral.ttf"} <= used
    excluded = {
        "cmex10.ttf",
        "LastResortHE-Regular.ttf",
        "DejaVuSansDisplay.ttf",
        "STIXNonUni.ttf",
        "STIXSizOneSymReg.ttf",
    }
    font_dir = fonts._font_dir()
    for name in excluded:
        assert name not in used
        if (font_dir / name).exists():
            assert fonts._check_font(font_dir / name) is None
    assert len(fonts.font_names()) == len(used) >= 10
    protos = fonts.prototypes()
    assert protos.shape == (len(used), 10, 1, fonts.PROTOTYPE_SIZE, fonts.PROTOTYPE_SIZE)
    assert protos.min() >= 0 and protos.max() <= 1
    ink = protos.flatten(2).sum(2)
    assert (ink > 20).all(), "every prototype has ink"
    # within a font the ten letters differ (no placeholder box repeated)
    flat = protos.flatten(2)
    gaps = torch.cdist(flat, flat) + torch.eye(10) * 1e9
    assert (gaps > 1.0).all()


def test_identity_transform_keeps_the_letter_centred_and_translation_moves_it():
    proto = fonts.prototypes_for(torch.tensor([0]), torch.tensor([0]))  # "A"
    theta = fonts.IDENTITY_THETA[None].clone()
    moved = theta.clone()
    moved[0, 0] = 0.2  # 0.2 of the half-width = 2.8 pixels to the right
    cols = torch.arange(28.0)

    def centre_x(img):
        w = img[0, 0].sum(0)
        return (w * cols).sum() / w.sum()

    c0, c1 = centre_x(fonts.decode(proto, theta)), centre_x(fonts.decode(proto, moved))
    assert abs(c0 - 13.5) < 1.0
    assert abs((c1 - c0) - 2.8) < 0.2


def test_affine_matrix_inverts_the_documented_composition_and_rotation_is_counter_clockwise():
    theta = fonts.sample_theta(5, "hard", generator=torch.Generator().manual_seed(0)).double()
    tx, ty, shx, shy, s, r = theta.unbind(1)
    rot = torch.stack([torch.stack([r.cos(), r.sin()], -1), torch.stack([-r.sin(), r.cos()], -1)], -2)
    shear = torch.stack(
        [torch.stack([torch.ones_like(shx), shx], -1), torch.stack([shy, torch.ones_like(shy)], -1)], -2
    )
    a = rot @ (s[:, None, None] * shear)  # forward map p -> A p + t
    m = fonts.affine_matrix(theta)  # sampling map p -> A^-1 (p - t)
    p = torch.randn(5, 2, 1, dtype=torch.float64)
    forward = a @ p + torch.stack([tx, ty], -1)[:, :, None]
    assert torch.allclose(m[:, :, :2] @ forward + m[:, :, 2:], p, atol=1e-12)
    # +45 degrees turns an "I" counter-clockwise on screen: its top half moves left
    proto = fonts.prototypes_for(torch.tensor([3]), torch.tensor([8]))
    turned = fonts.IDENTITY_THETA[None].clone()
    turned[0, 5] = math.pi / 4
    top = fonts.decode(proto, turned)[0, 0, :12]
    assert (top.sum(0) * torch.arange(28.0)).sum() / top.sum() < 12.0


def test_decoder_is_differentiable_and_matches_finite_differences():
    sample = fonts.generate("test", 3, seed=2)
    protos = fonts.prototypes_for(sample.font, sample.y).double()
    theta = sample.theta.double().clone().requires_grad_(True)
    weights = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(t):
        return (fonts.decode(protos, t) * weights).sum()

    (grad,) = torch.autograd.grad(f(theta), theta)
    assert torch.isfinite(grad).all() and (grad.abs().sum(1) > 0).all()
    h = 1e-6
    with torch.no_grad():
        for i, j in [(0, 0), (1, 3), (2, 4), (0, 5), (1, 2)]:
            e = torch.zeros_like(theta)
            e[i, j] = h
            fd = (f(theta + e) - f(theta - e)) / (2 * h)
            assert math.isclose(fd.item(), grad[i, j].item(), rel_tol=1e-3, abs_tol=1e-6), (i, j)


def test_refit_recovers_own_prototype_but_not_another_letter():
    sample = fonts.generate("test", 12, seed=3)
    g = torch.Generator().manual_seed(0)
    theta0 = sample.theta + 0.05 * torch.randn(12, 6, generator=g)
    own = fonts.refit_theta(fonts.prototypes_for(sample.font, sample.y), sample.x, theta0, steps=100)
    mse_own = own.distance**2 / 784
    start = fonts.decode(fonts.prototypes_for(sample.font, sample.y), theta0.clamp(*fonts.theta_bounds())) - sample.x
    assert (start.flatten(1).pow(2).mean(1) > 1e-3).any(), "the start is really off the image"
    assert (mse_own < 1e-3).all()
    recon = fonts.decode(fonts.prototypes_for(sample.font, sample.y), own.theta)
    assert torch.allclose((recon - sample.x).flatten(1).norm(dim=1), own.distance, atol=1e-5)
    other = fonts.refit_theta(fonts.prototypes_for(sample.font, (sample.y + 1) % 10), sample.x, theta0, steps=100)
    assert (other.distance > 3 * own.distance).all()
    assert (other.distance**2 / 784).median() > 5e-3


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(AdvlabError, match="theta"):
        fonts.decode(torch.zeros(2, 1, 64, 64), torch.zeros(2, 5))
    with pytest.raises(AdvlabError, match="prototypes"):
        fonts.decode(torch.zeros(3, 1, 64, 64), torch.zeros(2, 6))
    with pytest.raises(AdvlabError, match="n must"):
        fonts.load("train", 0)
    with pytest.raises(AdvlabError, match="profile"):
        fonts.load("train", profile="huge")


def test_default_sizes_follow_the_profile():
    x, y, _ = fonts.load("test", profile="fast")
    assert len(x) == len(y) == fonts.DEFAULT_SIZES["fast"]["test"]


def test_registered_in_advlab_data():
    from advlab import data

    x, y, classes = data.load("fonts", "test", 40, difficulty="easy")
    ref = fonts.load("test", 40, difficulty="easy")
    assert torch.equal(x, ref[0]) and torch.equal(y, ref[1]) and tuple(classes) == fonts.CLASSES
