"""Tests for the small VAE and Kos et al.'s attacks on it (advlab.vae)."""

from __future__ import annotations

import pytest
import torch

from advlab import data, zoo
from advlab.config import AdvlabError
from advlab.vae import VAE, elbo_at_mean, elbo_loss, fit_vae, latent_attack, train_vae, vae_loss_attack


@pytest.fixture(scope="module")
def mnist_small():
    x, y, _ = data.load("mnist", "train", n=1000)
    return x, y


@pytest.fixture(scope="module")
def vae(mnist_small):
    x, _ = mnist_small
    return train_vae(x, None, epochs=8, latent=8, hidden=128, progress=False, device="cpu")


def test_training_lowers_the_negative_elbo(mnist_small, vae):
    x, _ = mnist_small
    torch.manual_seed(0)
    fresh = VAE(latent=8, hidden=128, classes=0)
    with torch.no_grad():
        before, after = elbo_loss(fresh, x[:200]).mean(), elbo_loss(vae, x[:200]).mean()
    assert after < 0.5 * before
    assert not vae.training and vae.classes == 0
    with torch.no_grad():
        rec = vae.reconstruct(x[:10])
    assert rec.shape == (10, 1, 28, 28) and rec.min() >= 0 and rec.max() <= 1


@pytest.mark.parametrize(
    ("attack", "min_fraction", "max_ratio"),
    # the VAE-loss objective (BCE to the target image) is a looser proxy for "look like the target's
    # reconstruction" than the latent distance, and this tiny VAE maps some digit pairs alike: looser bounds
    [(latent_attack, 0.8, 0.6), (vae_loss_attack, 0.6, 0.9)],
)
def test_kos_attacks_move_the_reconstruction_towards_the_target(vae, attack, min_fraction, max_ratio):
    x, y, _ = data.load("mnist", "test", n=40)
    src, tgt = x[:20], x[20:]
    keep = y[:20] != y[20:]  # a different digit as the target
    eps = 0.1
    res = attack(vae, src, tgt, eps=eps, steps=40)
    assert res.x_adv.shape == src.shape and res.recon.shape == src.shape
    assert (res.x_adv - src).abs().amax() <= eps + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.allclose(res.norms, (res.x_adv - src).flatten(1).abs().amax(1))
    with torch.no_grad():
        rec_target, rec_clean = vae.reconstruct(tgt), vae.reconstruct(src)
        assert torch.allclose(res.recon, vae.reconstruct(res.x_adv), atol=1e-5)
    d_adv = (res.recon - rec_target).flatten(1).norm(dim=1)[keep]
    d_clean = (rec_clean - rec_target).flatten(1).norm(dim=1)[keep]
    assert (d_adv < d_clean).float().mean() >= min_fraction
    assert d_adv.mean() < max_ratio * d_clean.mean()


def test_kos_attack_l2_ball_and_more_budget_helps(vae):
    x, _, _ = data.load("mnist", "test", n=20)
    src, tgt = x[:10], x[10:]
    small = latent_attack(vae, src, tgt, eps=0.5, norm=2, steps=20)
    large = latent_attack(vae, src, tgt, eps=3.0, norm=2, steps=20)
    assert (small.norms <= 0.5 + 1e-4).all() and (large.norms <= 3.0 + 1e-4).all()
    assert large.objective.mean() < small.objective.mean()


def test_conditional_vae_and_bad_inputs(mnist_small):
    x, y = mnist_small
    cvae = train_vae(x[:200], y[:200], epochs=1, latent=2, hidden=32, progress=False, device="cpu")
    assert cvae.classes == 10
    with torch.no_grad():
        mu, logvar = cvae.encode(x[:5], y[:5])
        assert mu.shape == (5, 2) and logvar.shape == (5, 2)
        assert cvae.decode(mu, y[:5]).shape == (5, 1, 28, 28)
        with pytest.raises(AdvlabError, match="conditional"):
            cvae.encode(x[:5])
        with pytest.raises(AdvlabError, match="shaped"):
            cvae.encode(x[:5, :, :27], y[:5])
    with pytest.raises(AdvlabError, match="x_target"):
        latent_attack(cvae, x[:4], x[:3], y=y[:4], y_target=y[:3])
    with pytest.raises(AdvlabError, match="pixel space"):
        vae_loss_attack(cvae, x[:4] * 2, x[4:8], y=y[:4], y_target=y[4:8])
    with pytest.raises(AdvlabError, match="epochs"):
        train_vae(x[:10], None, epochs=0)


def test_fit_vae_trains_in_place_and_elbo_at_mean_is_deterministic(mnist_small):
    x, y = mnist_small
    torch.manual_seed(0)
    model = VAE(latent=2, hidden=32, classes=0)
    before = elbo_at_mean(model, x[:300])
    out = fit_vae(model, x[:300], y[:300], epochs=2, progress=False, device="cpu")  # labels ignored: unconditional
    after = elbo_at_mean(model, x[:300])
    assert after > before and after == elbo_at_mean(model, x[:300]) and not model.training
    assert set(out) == {"train_neg_elbo"} and out["train_neg_elbo"] > 0
    with pytest.raises(AdvlabError, match="class-conditional"):
        fit_vae(VAE(latent=2, hidden=8, classes=10), x[:10], None, epochs=1, progress=False, device="cpu")


def test_the_shipped_vae_loads_without_training(monkeypatch):
    monkeypatch.setattr(zoo, "save", lambda *a, **k: pytest.fail("the shipped mnist-vae should not be retrained"))
    model = zoo.load("mnist-vae", profile="fast", progress=False)
    xt, _, _ = data.load("mnist", "test", profile="fast")
    assert isinstance(model, VAE) and model.classes == 0
    assert elbo_at_mean(model, xt) == pytest.approx(zoo.info("mnist-vae", "fast")["metrics"]["test_elbo"], abs=0.05)
