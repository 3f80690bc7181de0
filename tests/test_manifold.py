"""Tests for on-/off-manifold attacks and adversarial training (advlab.manifold), on FONTS and a learned manifold."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advlab import manifold, train
from advlab.config import AdvlabError
from advlab.data import fonts
from advlab.vae import train_vae

FIT = {"batch_size": 64, "lr": 3e-3, "optimizer": "adam", "weight_decay": 0.0, "progress": False}


@pytest.fixture(scope="module")
def classifier():
    """A FONTS classifier, briefly trained normally (through train_fonts' index-label path), eval mode, CPU."""
    sample = fonts.generate("train", 300, seed=3)
    model = manifold.fonts_net(0)
    hist = manifold.train_fonts(model, sample, "normal", epochs=8, device="cpu", **FIT)
    assert hist.loss[-1] < hist.loss[0]
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    return fonts.generate("test", 16, seed=3)


def ce(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="none")


def test_theta_attack_stays_in_box_and_range_decodes_its_theta_and_raises_the_loss(classifier, batch):
    protos = fonts.prototypes_for(batch.font, batch.y)
    res = manifold.theta_attack(classifier, protos, batch.theta, batch.y, eps=0.3, steps=5)
    low, high = fonts.theta_bounds("hard")
    assert res.code.shape == (16, 6) and res.x_adv.shape == batch.x.shape
    assert ((res.code - batch.theta).abs() <= 0.3 + 1e-6).all()
    assert ((res.code >= low - 1e-6) & (res.code <= high + 1e-6)).all()
    # the images are exactly the decoded θ' of the sample's own prototype (on the manifold by construction)
    assert torch.allclose(res.x_adv, fonts.decode(protos, res.code), atol=1e-5)
    clean = ce(classifier, batch.x, batch.y)
    assert torch.allclose(res.loss, ce(classifier, res.x_adv, batch.y), atol=1e-5)
    assert (res.loss >= clean - 1e-5).all(), "best iterate: never worse than the clean θ"
    assert res.loss.mean() > clean.mean() + 1.0
    assert torch.equal(res.success, res.pred != batch.y)
    assert res.success.float().mean() > (classifier(batch.x).argmax(1) != batch.y).float().mean()


def test_theta_box_is_clipped_to_the_data_range_of_the_difficulty(classifier):
    sample = fonts.generate("test", 12, "easy", seed=5)
    res = manifold.fonts_attack(classifier, sample, eps=0.3, difficulty="easy", steps=3)
    low, high = fonts.theta_bounds("easy")
    assert ((res.code >= low - 1e-6) & (res.code <= high + 1e-6)).all()
    box_low, box_high = manifold.theta_box(sample.theta, 0.3, "easy")
    assert torch.equal(box_low, torch.maximum(sample.theta - 0.3, low))
    # the translation range (±0.1) is narrower than ε: the clipping is active
    assert ((box_high - box_low)[:, 0] <= 0.2 + 1e-6).all()
    # per-sample ε: a zero radius leaves that sample's θ unchanged
    eps = torch.full((12,), 0.3)
    eps[:4] = 0.0
    res0 = manifold.fonts_attack(classifier, sample, eps=eps, difficulty="easy", steps=3)
    assert torch.allclose(res0.code[:4], sample.theta[:4])


def test_on_manifold_examples_stay_on_the_manifold_pixel_pgd_does_not(classifier, batch):
    on = manifold.fonts_attack(classifier, batch, eps=0.3, steps=5)
    off = manifold.off_manifold(classifier, batch.x, batch.y, eps=0.3, steps=5)
    assert (off.norms <= 0.3 + 1e-6).all()
    both = torch.cat([on.x_adv, off.x_adv])
    dist = manifold.fonts_distance(
        both, batch.font.repeat(2), batch.y.repeat(2), batch.theta.repeat(2, 1), steps=100
    )
    d_on, d_off = dist[:16], dist[16:]
    assert d_on.median() < 0.1 and d_on.max() < 1.0
    assert d_off.min() > 3.0, "an L∞ 0.3 pixel perturbation is mostly orthogonal to the manifold"


def test_fonts_hooks_make_the_first_half_of_the_batch_adversarial(classifier):
    sample = fonts.generate("train", 40, seed=7)
    idx = torch.tensor([3, 17, 0, 25, 9, 31, 12, 8])
    xb = sample.x[idx]
    for mode in ("on", "off"):
        perturb, loss_fn = manifold.fonts_hooks(sample, mode, steps=3)
        out = perturb(classifier, xb, idx)
        assert out.shape == xb.shape
        assert torch.equal(out[4:], xb[4:]), "the second half stays clean"
        # the first half is adversarial: never a lower loss (the attack keeps the clean point if nothing beats it)
        adv_loss, clean_loss = ce(classifier, out[:4], sample.y[idx[:4]]), ce(classifier, xb[:4], sample.y[idx[:4]])
        assert (adv_loss >= clean_loss - 1e-5).all() and adv_loss.mean() > clean_loss.mean()
        assert (out[:4] - xb[:4]).flatten(1).abs().amax(1).gt(0.01).any()
        assert torch.isclose(loss_fn(classifier, xb, idx), ce(classifier, xb, sample.y[idx]).mean(), atol=1e-5)
    # the on-manifold half is the decoded θ' of each example's own prototype
    perturb, _ = manifold.fonts_hooks(sample, "on", steps=3)
    out = perturb(classifier, xb, idx)
    protos = fonts.prototypes_for(sample.font[idx[:4]], sample.y[idx[:4]])
    fit = fonts.refit_theta(protos, out[:4], sample.theta[idx[:4]], steps=60)
    assert fit.distance.max() < 1.0
    assert manifold.fonts_hooks(sample, "normal")[0] is None
    # the augmentation control: random θ' in the same box, also exactly on the manifold
    perturb, _ = manifold.fonts_hooks(sample, "random")
    torch.manual_seed(0)
    out = perturb(classifier, xb, idx)
    assert torch.equal(out[4:], xb[4:]) and not torch.allclose(out[:4], xb[:4])
    fit = fonts.refit_theta(protos, out[:4], sample.theta[idx[:4]], steps=60)
    assert fit.distance.max() < 1.0


def test_on_manifold_training_step_runs_and_updates_the_model():
    sample = fonts.generate("train", 32, seed=2)
    model = manifold.fonts_net(1)
    before = [p.detach().clone() for p in model.parameters()]
    hist = manifold.train_fonts(model, sample, "on", steps=2, epochs=1, seed=0, device="cpu",
                                **{**FIT, "batch_size": 16})
    assert len(hist.loss) == 1 and math.isfinite(hist.loss[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not model.training


def test_bad_training_arguments_raise_clear_errors(classifier):
    sample = fonts.generate("train", 20, seed=2)
    with pytest.raises(AdvlabError, match="mode"):
        manifold.fonts_hooks(sample, "sideways")
    with pytest.raises(AdvlabError, match="fraction"):
        manifold.fonts_hooks(sample, "on", fraction=1.5)
    with pytest.raises(AdvlabError, match="shift"):
        manifold.train_fonts(manifold.fonts_net(), sample, "on", shift=1, epochs=1, progress=False)
    perturb, _ = manifold.fonts_hooks(sample, "on")
    with pytest.raises(AdvlabError, match="indices"):
        perturb(classifier, sample.x[:4], torch.tensor([0, 1, 2, 99]))
    with pytest.raises(AdvlabError, match="theta"):
        manifold.theta_attack(classifier, fonts.prototypes_for(sample.font, sample.y), sample.theta[:, :5], sample.y)
    outside = sample.theta.clone()
    outside[:, 0] = 0.5
    with pytest.raises(AdvlabError, match="data range"):
        manifold.theta_attack(classifier, fonts.prototypes_for(sample.font, sample.y), outside, sample.y)


def test_summarize_reports_mean_and_std():
    table = manifold.summarize({"normal": {250: [0.5, 0.7]}, "on": {250: [0.25]}})
    assert "| 250 | 60.0 ± 14.1 | 25.0 |" in table


# ------------------------------------------------------------------------------------- learned manifold


@pytest.fixture(scope="module")
def fonts_vae():
    sample = fonts.generate("train", 400, seed=4)
    return train_vae(sample.x, sample.y, epochs=3, latent=4, hidden=64, progress=False, device="cpu")


def test_latent_attack_decodes_latents_inside_the_box(classifier, fonts_vae, batch):
    res = manifold.latent_attack(classifier, fonts_vae, batch.x, batch.y, eps=0.5, steps=5)
    with torch.no_grad():
        mu = fonts_vae.encode(batch.x, batch.y)[0]
        decoded = fonts_vae.decode(res.code, batch.y)
        start = fonts_vae.decode(mu, batch.y)
    assert ((res.code - mu).abs() <= 0.5 + 1e-5).all()
    assert torch.allclose(res.x_adv, decoded, atol=1e-5)
    assert (res.loss >= ce(classifier, start, batch.y) - 1e-5).all()
    assert res.loss.mean() > ce(classifier, start, batch.y).mean()
    # decoded images lie on the learned manifold; a pixel PGD step away from them leaves it
    off = manifold.off_manifold(classifier, res.x_adv, batch.y, eps=0.3, steps=3)
    dist = manifold.latent_distance(fonts_vae, torch.cat([res.x_adv, off.x_adv]), batch.y.repeat(2), steps=50)
    assert dist[:16].max() < 0.1
    assert dist[16:].min() > 3.0


def test_learned_perturb_hook_makes_half_the_batch_adversarial(classifier, fonts_vae, batch):
    perturb = manifold.learned_perturb(fonts_vae, eps=0.5, steps=2)
    out = perturb(classifier, batch.x, batch.y)
    assert torch.equal(out[8:], batch.x[8:])
    assert not torch.allclose(out[:8], batch.x[:8])
    model = manifold.fonts_net(2)
    hist = train.fit(model, batch.x, batch.y, epochs=1, perturb=perturb, device="cpu", **{**FIT, "batch_size": 8})
    assert math.isfinite(hist.loss[0])


def test_latent_attack_needs_a_conditional_vae(classifier, batch):
    uncond = train_vae(batch.x, None, epochs=1, latent=2, hidden=16, progress=False, device="cpu")
    with pytest.raises(AdvlabError, match="conditional"):
        manifold.latent_attack(classifier, uncond, batch.x, batch.y)
