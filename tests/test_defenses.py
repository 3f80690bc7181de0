"""Adversarial training and the gradient-masking lesson (advlab.defenses), on tiny budgets."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from advlab import config, data, models, train, zoo
from advlab.attacks import pgd
from advlab.config import AdvlabError
from advlab.defenses import adversarial as adv
from advlab.defenses import experiments
from advlab.defenses.masking import BPDA, InputQuantization, masking_report
from advlab.defenses.purification import ManifoldProjection
from advlab.eval import sanity_checks

EPS = 0.2  # training radius (L∞)
EVAL_EPS = 0.1  # on this tiny budget robustness shows first at smaller radii
FIT = {"epochs": 2, "batch_size": 100, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "seed": 0,
       "progress": False}
DEFENDED = ("mnist-cnn-pgd", "mnist-cnn-fgsm-rs", "mnist-cnn-trades", "mnist-cnn-free", "mnist-cnn-l2")


@pytest.fixture(scope="module")
def small_train():
    """1,000 class-balanced fast-profile MNIST training images on advlab.device()."""
    x, y, _ = data.load("mnist", "train", n=1000)
    return x.to(config.device()), y.to(config.device())


def _pgd_acc(model, x, y) -> float:
    res = pgd(model, x, y, EVAL_EPS, steps=10, generator=torch.Generator().manual_seed(0))
    return 1 - res.success_rate


def _start(mnist_cnn):
    """Every method fine-tunes a copy of the standard zoo CNN for 2 epochs on 1,000 images."""
    config.seed_everything(0)
    return copy.deepcopy(mnist_cnn)


@pytest.fixture(scope="module")
def standard_robust_acc(small_train, mnist_test, mnist_cnn):
    """PGD-10 accuracy at EVAL_EPS of the standard CNN fine-tuned normally on the same budget (trained once)."""
    model = _start(mnist_cnn)
    train.fit(model, *small_train, **FIT)
    assert train.accuracy(model, *mnist_test) > 0.9
    return _pgd_acc(model, *mnist_test)


TRAINERS = {
    "pgd_at": lambda m, x, y: adv.pgd_at(m, x, y, EPS, steps=3, **FIT),
    "fgsm_rs_at": lambda m, x, y: adv.fgsm_rs_at(m, x, y, EPS, holdout=100, monitor_steps=3, **FIT),
    "free_at": lambda m, x, y: adv.free_at(m, x, y, EPS, replays=3, **{**FIT, "epochs": 4}),
    "trades": lambda m, x, y: adv.trades(m, x, y, EPS, beta=3.0, steps=3, **FIT),
}


@pytest.mark.parametrize("method", sorted(TRAINERS))
def test_training_beats_standard_on_robust_accuracy(method, small_train, mnist_test, mnist_cnn, standard_robust_acc):
    model = _start(mnist_cnn)
    out = TRAINERS[method](model, *small_train)
    assert isinstance(out["history"], train.History) and out["epochs_run"] >= 1
    assert not model.training
    robust = _pgd_acc(model, *mnist_test)
    assert robust > standard_robust_acc + 0.08, (method, robust, standard_robust_acc)


def test_pgd_perturb_warmup_and_ball(mnist_cnn, mnist_test):
    x, y = mnist_test[0][:20], mnist_test[1][:20]
    hook = adv.PGDPerturb(0.3, steps=3, warmup_steps=3)
    epsilons = []
    for _ in range(4):
        epsilons.append(hook.current_eps())
        xa = hook(mnist_cnn, x, y)
        assert (xa - x).abs().max() <= epsilons[-1] + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert epsilons == pytest.approx([0.1, 0.2, 0.3, 0.3])
    with pytest.raises(AdvlabError):
        adv.PGDPerturb(-0.1)


def test_free_perturb_steps_delta_with_the_reused_gradient_and_keeps_it(mnist_test):
    x = mnist_test[0][:8]
    hook = adv.FreePerturb(0.3, step_size=0.1, warmup_steps=2)
    assert torch.equal(hook(None, x, None), x)  # δ starts at 0
    grad = torch.randn_like(x)
    hook.reuse_gradient(grad)  # first call: ε and the step ramped to half
    delta = (x + (0.05 * grad.sign()).clamp(-0.15, 0.15)).clamp(0, 1) - x
    assert torch.allclose(hook(None, x, None) - x, delta)  # δ persists, projected into the box
    hook.reuse_gradient(grad)
    x_next = mnist_test[0][8:12]  # δ carries over to the next (smaller) batch, inside its own box
    d = hook(None, x_next, None) - x_next
    assert d.abs().max() <= 0.3 + 1e-6 and (x_next + d).min() >= 0 and (x_next + d).max() <= 1
    assert torch.allclose(d, (x_next + (delta + 0.1 * grad.sign()).clamp(-0.3, 0.3)[:4]).clamp(0, 1) - x_next)


def test_fgsm_perturb_stays_in_ball(mnist_cnn, mnist_test):
    x, y = mnist_test
    xa = adv.FGSMPerturb(0.1)(mnist_cnn, x, y)
    assert (xa - x).abs().max() <= 0.1 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    assert (xa != x).any()


def test_catastrophic_overfitting_detector():
    # FGSM accuracy climbs while PGD accuracy collapses at epoch 3 (Wong et al.'s signature).
    fgsm_acc = [0.50, 0.60, 0.65, 0.90, 0.95]
    pgd_acc = [0.35, 0.45, 0.50, 0.02, 0.00]
    assert adv.detect_catastrophic_overfitting(fgsm_acc, pgd_acc) == 3
    # Healthy training: both rise together.
    assert adv.detect_catastrophic_overfitting([0.5, 0.6, 0.7], [0.4, 0.5, 0.6]) is None
    # Both collapse (the model got worse at everything): not catastrophic overfitting.
    assert adv.detect_catastrophic_overfitting([0.6, 0.7, 0.05], [0.4, 0.5, 0.0]) is None
    # PGD accuracy never rose: flagged when FGSM accuracy pulls away, unless a sudden drop is required.
    never = ([0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.05, 0.03])
    assert adv.detect_catastrophic_overfitting(*never) == 2
    assert adv.detect_catastrophic_overfitting(*never, drop=0.2) is None
    assert adv.detect_catastrophic_overfitting(fgsm_acc, pgd_acc, drop=0.2) == 3
    with pytest.raises(AdvlabError):
        adv.detect_catastrophic_overfitting([0.1], [0.1, 0.2])


def _co_demo_curves(mnist_cnn, seed: int, **overrides) -> tuple[dict, int | None]:
    """Run adv.CO_DEMO (the notebook's live demonstration) on a copy of the standard CNN; (curves, detected epoch)."""
    setting = {**adv.CO_DEMO, **overrides}
    n = setting.pop("n")
    x, y, _ = data.load("mnist", "train")  # the fast-profile training set, as in the notebook
    out = adv.fgsm_rs_at(copy.deepcopy(mnist_cnn), x[:n].to(config.device()), y[:n].to(config.device()), **setting,
                         seed=seed, progress=False)
    return out["history"].extra, out["catastrophic_overfitting_epoch"]


def _co_collapsed(curves: dict, co_epoch: int | None) -> bool:
    """The claims of notebook 04b about its tiny FGSM run (same thresholds)."""
    fgsm_acc, pgd_acc = curves["fgsm_accuracy"], curves["pgd_accuracy"]
    return max(pgd_acc) < 0.1 and fgsm_acc[-1] > pgd_acc[-1] + 0.2 and co_epoch is not None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_co_demo_overfits_catastrophically(mnist_cnn, seed):
    # Held-out PGD accuracy stays about 0 while FGSM accuracy pulls far away, and the monitor flags it, for every seed
    # (notebook 04b runs this live under ADVLAB_SEED and ADVLAB_JITTER and states it as claims).
    curves, co_epoch = _co_demo_curves(mnist_cnn, seed)
    assert _co_collapsed(curves, co_epoch), (curves, co_epoch)


def test_monitor_records_and_stops(mnist_cnn, mnist_test):
    x, y = mnist_test[0][:50], mnist_test[1][:50]
    hist = train.History()
    mon = adv.RobustnessMonitor(x, y, 0.3, pgd_steps=3, early_stop=True, stop_drop=0.0)
    assert mon(0, mnist_cnn, hist) is False
    assert set(hist.extra) == {"clean_accuracy", "fgsm_accuracy", "pgd_accuracy"}
    assert hist.extra["clean_accuracy"][0] > hist.extra["fgsm_accuracy"][0] >= hist.extra["pgd_accuracy"][0]
    mon.best = 2.0  # any accuracy is now a drop below the best: early stopping restores the best weights
    assert mon(1, mnist_cnn, hist) is True


def test_trades_loss_is_cross_entropy_when_beta_is_zero(mnist_cnn, mnist_test):
    x, y = mnist_test[0][:32], mnist_test[1][:32]
    loss0 = adv.trades_loss(mnist_cnn, x, y, beta=0.0, eps=0.3, steps=2)
    assert torch.allclose(loss0, F.cross_entropy(mnist_cnn(x), y))
    loss6 = adv.trades_loss(mnist_cnn, x, y, beta=6.0, eps=0.3, steps=2)
    assert loss6 > loss0  # the KL term is positive at a real adversary
    x_adv = adv.trades_adversary(mnist_cnn, x, 0.3, steps=2)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    with pytest.raises(AdvlabError):
        adv.trades_loss(mnist_cnn, x, y, beta=-1.0)


def test_vat_loss_nonnegative_and_trains(mnist_test):
    x, y = mnist_test
    config.seed_everything(0)
    model = models.mnist_net()
    loss = adv.vat_loss(model, x[:16], eps=2.0)
    assert loss.ndim == 0 and loss >= 0 and loss.requires_grad
    out = adv.vat_train(model, x[:40], y[:40], x[40:], eps=2.0, unlabelled_batch=16,
                        **{**FIT, "epochs": 1, "batch_size": 20})
    assert out["epochs_run"] == 1 and torch.isfinite(torch.tensor(out["final_loss"]))


def test_label_leaking_eval_returns_both_numbers(mnist_cnn, mnist_test):
    out = adv.label_leaking_eval(mnist_cnn, *mnist_test, eps=0.1)
    assert set(out) == {"clean", "fgsm_true_label", "fgsm_predicted_label"}
    assert out["clean"] > 0.9 and out["fgsm_true_label"] < out["clean"]  # the standard model does not leak
    hook = adv.OneStepPerturb(0.3, label="predicted", mix=0.5)
    xa = hook(mnist_cnn, *mnist_test)
    assert torch.equal(xa[100:], mnist_test[0][100:]) and not torch.equal(xa[:100], mnist_test[0][:100])
    with pytest.raises(AdvlabError):
        adv.OneStepPerturb(0.3, label="guess")


def test_bpda_breaks_input_quantization(mnist_cnn, mnist_test):
    x, y = mnist_test[0][:100], mnist_test[1][:100]
    defended = InputQuantization(mnist_cnn, levels=8).eval()
    assert torch.equal(defended(x).argmax(1), BPDA(defended)(x).argmax(1))
    out = masking_report(mnist_cnn, x, y, eps=0.3, steps=20, sanity=False)
    assert out["pgd"] > 0.7  # the masked gradients fool PGD ...
    assert out["bpda"] < 0.1 and out["transfer"] < 0.3  # ... but not BPDA or a transfer attack
    assert out["square"] < 0.1  # ... nor the Square Attack, which never asks for a gradient
    report = sanity_checks(defended, x[:50], y[:50], 0.3, steps=(5, 20), surrogate=mnist_cnn)
    assert not report.passed
    assert not report["gradients"].passed


@pytest.mark.parametrize("name", DEFENDED)
def test_shipped_defended_models_load_without_training(name, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError(f"zoo.load({name!r}) tried to train instead of loading the shipped checkpoint")

    monkeypatch.setattr(zoo, "save", no_training)
    model = zoo.load(name, profile="fast", progress=False)
    assert not model.training
    record = zoo.info(name, "fast")
    xt, yt, _ = data.load("mnist", "test", profile="fast")
    assert train.accuracy(model, xt, yt) == pytest.approx(record["metrics"]["test_accuracy"], abs=2e-3)
    aa = record["metrics"]["autoattack_grade"]
    assert aa["n"] == len(yt) and aa["interval_95"][0] <= aa["accuracy"] <= aa["interval_95"][1]


def test_data_size_experiment_gives_every_size_the_same_number_of_updates(monkeypatch):
    # Schmidt et al.'s sweep must not confound "less data" with "less training": epochs scale as 1/n.
    seen = []

    def record(model, x, y, **kwargs):
        seen.append((kwargs.get("trainer", "fit"), len(x), kwargs["epochs"], kwargs["batch_size"]))
        return {}

    monkeypatch.setattr(experiments.train, "fit", lambda model, x, y, **kw: record(model, x, y, **kw))
    monkeypatch.setattr(experiments, "pgd_at", lambda model, x, y, **kw: record(model, x, y, trainer="pgd", **kw))
    out = experiments.data_size_experiment(sizes=(500, 1000, 4000), n_train_eval=20, progress=False)
    assert out["sizes"] == [500, 1000, 4000] and set(out) >= {"standard", "pgd-at"}
    for method in ("fit", "pgd"):
        runs = [(n, e, b) for m, n, e, b in seen if m == method]
        assert [n for n, _, _ in runs] == [500, 1000, 4000]
        updates = {e * -(-n // b) for n, e, b in runs}
        assert len(updates) == 1, f"{method}: {runs} make different numbers of optimiser steps"
    for rows in (out["standard"], out["pgd-at"]):
        assert all(len(v) == 3 for v in rows.values())
        assert all(0 <= r <= c <= 1 for r, c in zip(rows["robust_test"], rows["clean_test"], strict=True))
    with pytest.raises(AdvlabError, match="sizes"):
        experiments.data_size_experiment(sizes=(0,), progress=False)


# ------------------------------------------------------------------ Defense-GAN-style purification (purification.py)
@pytest.fixture(scope="module")
def mnist_vae():
    return zoo.load("mnist-vae", progress=False).to(config.device()).eval()


def test_projection_recovers_points_of_the_manifold_and_is_deterministic(mnist_cnn, mnist_vae):
    """An image the generator can draw is its own projection (up to the descent's tolerance); noise is not."""
    z = torch.randn(20, mnist_vae.latent, generator=torch.Generator().manual_seed(1)).to(config.device())
    with torch.no_grad():
        on = mnist_vae.decode(z)
    defense = ManifoldProjection(mnist_cnn, mnist_vae.decode, mnist_vae.latent, steps=200, restarts=4)
    _, err_on = defense.codes(on)
    noise = torch.rand(on.shape, generator=torch.Generator().manual_seed(2)).to(on.device)
    _, err_noise = defense.codes(noise)
    assert err_on.sqrt().median() < 0.1 * err_noise.sqrt().median()
    assert torch.equal(defense.preprocess(on), defense.preprocess(on))  # the same starting codes at every call
    before = [p.grad for p in mnist_vae.parameters()]
    assert all(g is None for g in before)  # the descent never touches the generator's gradients


def test_projection_masks_gradients_and_bpda_sees_through_it(mnist_cnn, mnist_vae, mnist_test):
    x = mnist_test[0][:8].clone().requires_grad_(True)
    y = mnist_test[1][:8]
    defense = ManifoldProjection(mnist_cnn, mnist_vae.decode, mnist_vae.latent, steps=20).eval()
    (g_def,) = torch.autograd.grad(F.cross_entropy(defense(x), y), x)
    (g_bpda,) = torch.autograd.grad(F.cross_entropy(BPDA(defense)(x), y), x)
    assert torch.count_nonzero(g_def) == 0  # what a plain attacker sees
    assert torch.count_nonzero(g_bpda) > 0
    assert torch.equal(defense(x).argmax(1), BPDA(defense)(x).argmax(1))  # the same forward pass


def test_bpda_breaks_manifold_projection(mnist_cnn, mnist_vae, mnist_test):
    x, y = mnist_test[0][:40], mnist_test[1][:40]
    defense = ManifoldProjection(mnist_cnn, mnist_vae.decode, mnist_vae.latent, steps=30, restarts=2)
    out = masking_report(mnist_cnn, x, y, eps=0.3, steps=10, sanity=False, queries=100, defended=defense)
    assert out["pgd"] > out["clean"] - 0.15  # plain PGD cannot move: only its random start changes answers
    assert out["bpda"] < out["pgd"] - 0.3  # BPDA through the projection breaks it


def test_masking_report_refuses_a_defense_around_another_model(mnist_cnn, mnist_vae, mnist_test):
    other = copy.deepcopy(mnist_cnn)
    defense = ManifoldProjection(other, mnist_vae.decode, mnist_vae.latent)
    with pytest.raises(AdvlabError, match="defended.model"):
        masking_report(mnist_cnn, mnist_test[0][:4], mnist_test[1][:4], defended=defense, sanity=False)
    with pytest.raises(AdvlabError, match="restarts"):
        ManifoldProjection(mnist_cnn, mnist_vae.decode, mnist_vae.latent, restarts=0)
