"""Robust accuracy (worst case over attacks) and the gradient-masking red-flag checks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from advlab import AdvlabError
from advlab.attacks import bim, fgsm
from advlab.attacks.result import AttackResult
from advlab.attacks.tensors import lp_norm
from advlab.eval import RobustnessReport, autoattack_attacks, pgd_attacks, robust_accuracy, sanity_checks

EPS = 0.1


@pytest.fixture(scope="module")
def batch(mnist_cnn, mnist_test):
    x, y = mnist_test
    return mnist_cnn, x[:64], y[:64]


def _correct(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


ATTACKS = {
    "fgsm": lambda m, x, y, e, p: fgsm(m, x, y, e, norm=p),
    "bim-ce": lambda m, x, y, e, p: bim(m, x, y, e, norm=p, steps=10),
    "bim-margin": lambda m, x, y, e, p: bim(m, x, y, e, norm=p, steps=10, loss="margin"),
}


def test_worst_case_is_below_every_single_attack_and_fields_are_consistent(batch):
    model, x, y = batch
    rep = robust_accuracy(model, x, y, EPS, attacks=ATTACKS, batch_size=40)
    assert isinstance(rep, RobustnessReport)
    correct = _correct(model, x, y)
    assert rep.n == 64 and rep.eps == pytest.approx(EPS) and rep.norm == math.inf
    assert rep.clean_accuracy == pytest.approx(correct.float().mean().item())
    singles = {name: robust_accuracy(model, x, y, EPS, attacks={name: fn}).robust_accuracy
               for name, fn in ATTACKS.items()}
    assert all(rep.robust_accuracy <= acc for acc in singles.values()), (rep.robust_accuracy, singles)
    # bookkeeping: attacked = still-robust before each attack, broken sums up, masks agree
    assert [a.name for a in rep.attacks] == list(ATTACKS)
    assert rep.attacks[0].attacked == int(correct.sum())
    for prev, cur in zip(rep.attacks, rep.attacks[1:], strict=False):
        assert cur.attacked == prev.attacked - prev.broken
    assert rep.attacks[-1].robust_after == pytest.approx(rep.robust_accuracy)
    assert int(rep.robust.sum()) == round(rep.robust_accuracy * rep.n)
    assert torch.equal(rep.broken_by == -2, ~correct)
    assert torch.equal(rep.broken_by == -1, rep.robust)
    broken = rep.broken_by >= 0
    assert not _correct(model, rep.x_adv[broken], y[broken]).any()
    assert (lp_norm(rep.x_adv - x, math.inf) <= EPS + 1e-6).all()
    assert torch.equal(rep.x_adv[~broken], x[~broken])
    text = rep.summary()
    assert text == repr(rep)
    for a in rep.attacks:
        assert a.name in text
    assert f"{rep.robust_accuracy:.1%}" in text and f"{rep.clean_accuracy:.1%}" in text


def test_only_clean_correct_points_are_attacked_and_success_is_rechecked(batch):
    model, x, y = batch
    seen = []

    def liar(m, xb, yb, e, p):
        seen.append((xb.clone(), yb.clone()))
        # claims success everywhere but returns the clean input
        return AttackResult(xb, torch.ones(len(xb), dtype=torch.bool), torch.zeros(len(xb)), yb, p)

    wrong_model = nn.Sequential(model, nn.Identity()).eval()
    rep = robust_accuracy(wrong_model, x, y, EPS, attacks=[("liar", liar)], batch_size=25)
    xs, ys = torch.cat([s[0] for s in seen]), torch.cat([s[1] for s in seen])
    assert len(seen) == 3  # three batches
    assert len(xs) == int(_correct(model, x, y).sum())
    assert _correct(model, xs, ys).all()
    assert rep.robust_accuracy == rep.clean_accuracy  # its claims were not trusted


def test_cheating_attacks_are_caught(batch):
    model, x, y = batch

    def too_far(m, xb, yb, e, p):
        return fgsm(m, xb, yb, 2 * e, norm=p)

    def off_box(m, xb, yb, e, p):
        return AttackResult(xb + 1.5, torch.ones(len(xb), dtype=torch.bool), torch.zeros(len(xb)), yb, p)

    with pytest.raises(AdvlabError, match="outside the Linf ball"):
        robust_accuracy(model, x, y, EPS, attacks=[too_far])
    with pytest.raises(AdvlabError, match=r"outside \[0, 1\]"):
        robust_accuracy(model, x, y, EPS, attacks=[off_box])
    with pytest.raises(AdvlabError, match="empty"):
        robust_accuracy(model, x, y, EPS, attacks=[])


def test_pgd_chain_and_train_mode_model(batch):
    model, x, y = batch
    x, y = x[:32], y[:32]
    assert list(pgd_attacks(steps=5, restarts=2)) == ["fgsm", "pgd-ce-5", "pgd-margin-5x2"]
    model.train()
    try:
        with pytest.warns(UserWarning, match="train mode"):
            rep = robust_accuracy(model, x, y, EPS, attacks=pgd_attacks(steps=10, restarts=2))
        assert model.training
    finally:
        model.eval()
    single = robust_accuracy(model, x, y, EPS, attacks={"fgsm": ATTACKS["fgsm"]})
    assert rep.robust_accuracy <= single.robust_accuracy
    assert rep.robust_accuracy < rep.clean_accuracy


def test_the_default_is_the_autoattack_grade_chain(mnist_test):
    from advlab import zoo

    x, y = mnist_test
    x, y = x[:64], y[:64]
    model = zoo.load("mnist-cnn-pgd", progress=False)
    assert list(autoattack_attacks(steps=10, n_target_classes=2, queries=50)) == [
        "apgd-ce-10", "apgd-t-10x2", "square-50"]
    default = robust_accuracy(model, x, y, 0.3)
    assert [a.name for a in default.attacks] == list(autoattack_attacks()) and default.eot == 1
    naive = robust_accuracy(model, x, y, 0.3, attacks="pgd")
    assert [a.name for a in naive.attacks] == list(pgd_attacks())
    # per-sample: the AutoAttack-grade chain breaks (almost) everything the naive chain breaks, and more overall
    assert int((default.robust & ~naive.robust).sum()) <= 1
    assert default.robust_accuracy <= naive.robust_accuracy
    with pytest.raises(AdvlabError, match="Unknown attack chain"):
        robust_accuracy(model, x, y, 0.3, attacks="strongest")


def test_random_models_are_evaluated_with_eot(batch):
    model, x, y = batch
    noisy = nn.Sequential(Noisy(), model).eval()
    rep = robust_accuracy(noisy, x[:16], y[:16], EPS)
    assert rep.eot == 20 and all("eot20" in a.name for a in rep.attacks)
    assert "gradients averaged over 20 draws" in rep.summary()


# ----------------------------------------------------------------------------------------------------- sanity checks
class Quantize(nn.Module):
    """round(x * 4) / 4: a "defense" with zero gradient almost everywhere."""

    def forward(self, x):
        return torch.round(x * 4) / 4


class Noisy(nn.Module):
    """Gaussian noise at inference: random outputs."""

    def forward(self, x):
        return x + 0.2 * torch.randn_like(x)


SANITY = {"steps": (5, 20), "draws": 10}


def test_sanity_checks_pass_on_the_plain_cnn(batch):
    model, x, y = batch
    surrogate = copy.deepcopy(model)
    rep = sanity_checks(model, x[:48], y[:48], EPS, surrogate=surrogate, **SANITY)
    assert rep.passed, repr(rep)
    assert len(rep.checks) == 7
    assert "transfer from surrogate" in rep["white-box beats black-box"].message
    assert all(line.startswith("[ok] ") for line in repr(rep).splitlines())


def test_sanity_checks_flag_zero_gradient_preprocessing(batch):
    model, x, y = batch
    masked = nn.Sequential(Quantize(), model).eval()
    assert _correct(masked, x, y).float().mean() > 0.8  # still a good classifier
    rep = sanity_checks(masked, x[:32], y[:32], EPS, **SANITY)
    assert not rep.passed
    assert not rep["gradients"].passed and "zero input gradient" in rep["gradients"].message
    assert not rep["unbounded attack"].passed
    assert "[RED FLAG] gradients" in repr(rep)
    assert rep["deterministic"].passed and rep["logits"].passed


def test_sanity_checks_flag_detached_preprocessing_and_probabilities(batch):
    model, x, y = batch

    class Detached(nn.Module):
        def forward(self, x):
            return (torch.round(x * 4) / 4).detach()

    with pytest.warns(UserWarning, match="differentiably"):
        rep = sanity_checks(nn.Sequential(Detached(), model).eval(), x[:16], y[:16], EPS, steps=(2, 4), draws=2)
    assert not rep["gradients"].passed
    with pytest.warns(UserWarning, match="probabilities"):
        rep = sanity_checks(nn.Sequential(model, nn.Softmax(1)).eval(), x[:16], y[:16], EPS, steps=(2, 4), draws=2)
    assert not rep["logits"].passed


def test_sanity_checks_flag_randomness_at_inference(batch):
    model, x, y = batch
    noisy = nn.Sequential(Noisy(), model).eval()
    rep = sanity_checks(noisy, x[:32], y[:32], EPS, **SANITY)
    assert not rep["deterministic"].passed
    assert "random at inference" in rep["deterministic"].message
    assert not rep.passed


# ------------------------------------------------------------------------------------ no silent wrong result
@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_infinite_eps_is_refused_not_returned_as_nan(batch, norm):
    from advlab.attacks import fgsm, pgd

    model, x, y = batch
    for call in (lambda: pgd(model, x[:4], y[:4], math.inf, norm=norm, steps=2),
                 lambda: fgsm(model, x[:4], y[:4], math.inf, norm=norm)):
        with pytest.raises(AdvlabError, match="finite"):
            call()


@pytest.mark.parametrize("shape", [(4, 5), (1, 20), (19,), (2,)])
def test_per_sample_eps_must_be_scalar_one_or_n(batch, shape):
    model, x, y = batch
    with pytest.raises(AdvlabError, match="one radius per sample"):
        bim(model, x[:20], y[:20], torch.full(shape, 0.1), steps=1)
    for ok in (torch.tensor(0.1), torch.tensor([0.1]), torch.full((20,), 0.1)):
        bim(model, x[:20], y[:20], ok, steps=1)


def test_a_nan_is_never_a_success(batch):
    from advlab.attacks.result import finish

    model, x, y = batch
    bad = x[:4].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(AdvlabError, match="non-finite"):
        finish(model, x[:4], bad, y[:4], math.inf)

    def nan_attack(m, xa, ya, e, p):
        return AttackResult(x_adv=torch.full_like(xa, float("nan")), success=torch.ones(len(xa), dtype=torch.bool),
                            norms=torch.zeros(len(xa)), pred=ya, norm=p)

    with pytest.raises(AdvlabError, match="non-finite"):
        robust_accuracy(model, x[:8], y[:8], EPS, attacks=[nan_attack])


class _Tuple(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), x


def test_misfit_models_get_one_clear_error(batch):
    from advlab.attacks import apgd, fgsm, pgd, square

    model, x, y = batch
    x, y = x[:4], y[:4]
    attacks = (lambda m, xa: pgd(m, xa, y, 0.1, steps=1), lambda m, xa: fgsm(m, xa, y, 0.1),
               lambda m, xa: apgd(m, xa, y, 0.1, steps=1), lambda m, xa: square(m, xa, y, 0.1, queries=1))
    for attack in attacks:
        with pytest.raises(AdvlabError, match="tuple"):
            attack(_Tuple(model).eval(), x)
        with pytest.raises(AdvlabError, match="nn.Module"):
            attack(lambda t: model(t), x)
    with pytest.raises(AdvlabError, match=r"inputs shaped \(1, 784\).*\(N, 1, 28, 28\)"):
        pgd(model, x.flatten(1), y, 0.1, steps=1)


def test_accuracy_interval_is_the_exact_binomial_interval():
    from scipy.stats import binomtest

    from advlab.eval import accuracy_interval

    for k, n in [(700, 1000), (3, 20), (0, 50), (50, 50)]:
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        low, high = accuracy_interval(k, n)
        assert low == pytest.approx(ref.low, abs=1e-9) and high == pytest.approx(ref.high, abs=1e-9)
    low, high = accuracy_interval(700, 1000)
    assert 0.026 < 0.7 - low < 0.031 and 0.026 < high - 0.7 < 0.031  # the ±2.8 points quoted in the docs
    with pytest.raises(AdvlabError):
        accuracy_interval(5, 4)


def test_report_prints_its_interval(mnist_cnn, mnist_test):
    x, y = mnist_test[0][:40], mnist_test[1][:40]
    rep = robust_accuracy(mnist_cnn, x, y, 0.0, attacks={"fgsm": lambda m, xa, ya, e, p: fgsm(m, xa, ya, e)})
    low, high = rep.interval
    assert low <= rep.robust_accuracy <= high and "95 % interval" in rep.summary()


def test_the_default_chain_works_on_a_two_class_model():
    # APGD-T attacks min(n_target_classes, K - 1) targets: a binary model has only one other class.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    x = torch.rand(20, 1, 4, 4)
    y = model(x).argmax(1)
    rep = robust_accuracy(model, x, y, 0.5, "inf")
    assert rep.attacks[1].name.startswith("apgd-t") and rep.robust_accuracy < 1.0
