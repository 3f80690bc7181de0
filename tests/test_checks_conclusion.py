"""Exercise checks of section ⑥'s capstone (solutions/06_conclusion): pass on the reference solutions, [TODO] on stubs,
[FAIL] with a specific hint on plausible mistakes; the zoo's masked model, its claim and the check's fixed cases."""

from __future__ import annotations

import torch
from check_harness import check_tests

from advlab import checks, data, zoo
from advlab.attacks import apgd, fgsm, pgd
from advlab.checks import conclusion
from advlab.defenses import BPDA
from advlab.eval import robust_accuracy, sanity_checks


# ----------------------------------------------------------------------------------------- reference solutions
def naive_robust_accuracy(model, x, y, eps, seed=0):
    return robust_accuracy(model, x, y, eps, attacks="pgd", seed=seed).robust_accuracy


def measured_robust_accuracy(model, x, y, eps, seed=0):
    return robust_accuracy(model, x, y, eps, seed=seed).robust_accuracy


def bpda_robust_accuracy(model, x, y, eps, seed=0, through="bpda", evaluate="defended", steps=40):
    gen = torch.Generator().manual_seed(seed)
    source = {"bpda": lambda m: BPDA(m).eval(), "defended": lambda m: m, "inner": lambda m: m.model}[through]
    target = model.model if evaluate == "inner" else model

    def attack(m, xa, ya, e, p):
        if steps == 1:
            return fgsm(source(model), xa, ya, e, norm=p)
        return pgd(source(model), xa, ya, e, norm=p, steps=steps, generator=gen)

    return robust_accuracy(target, x, y, eps, attacks={"attack": attack}).robust_accuracy


def red_flags(model, x, y, eps, seed=0):
    return {c.name for c in sanity_checks(model, x, y, eps, seed=seed).red_flags}


# ------------------------------------------------------------------------------------ wrong implementations
def _apgd_only(model, x, y, eps, seed=0):
    attack = {"apgd-ce": lambda m, xa, ya, e, p: apgd(m, xa, ya, e, norm=p, steps=100)}
    return robust_accuracy(model, x, y, eps, attacks=attack, seed=seed).robust_accuracy


def _relative(model, x, y, eps, seed=0):
    rep = robust_accuracy(model, x, y, eps, seed=seed)
    return rep.robust_accuracy / rep.clean_accuracy


MASKED_FLAGS = {"gradients", "unbounded attack", "white-box beats black-box"}  # what the notebook shows

def _kw(fn, **fixed):
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs, **fixed)

    return wrapped


WRONG = {
    "naive_robust_accuracy": {
        "the AutoAttack-grade default (not the claim's attacks)": measured_robust_accuracy,
        "FGSM only": lambda m, x, y, eps, seed=0: robust_accuracy(
            m, x, y, eps, attacks={"fgsm": lambda mm, xa, ya, e, p: fgsm(mm, xa, ya, e, norm=p)}).robust_accuracy,
        "clean accuracy": lambda m, x, y, eps, seed=0: robust_accuracy(
            m, x, y, eps, attacks="pgd", seed=seed).clean_accuracy,
        "the record's claim": lambda m, x, y, eps, seed=0: 0.907,
    },
    "bpda_robust_accuracy": {
        "plain PGD on the defended model (gradient 0)": _kw(bpda_robust_accuracy, through="defended"),
        "the undefended model attacked and evaluated": _kw(bpda_robust_accuracy, through="inner", evaluate="inner"),
        "one FGSM step through BPDA": _kw(bpda_robust_accuracy, steps=1),
        "clean accuracy": lambda m, x, y, eps, seed=0: (m(x).argmax(1) == y).float().mean().item(),
    },
    "measured_robust_accuracy": {
        "the naive FGSM/PGD chain (the claim)": lambda m, x, y, eps, seed=0: robust_accuracy(
            m, x, y, eps, attacks="pgd", seed=seed).robust_accuracy,
        "APGD-CE only (gradients only)": _apgd_only,
        "clean accuracy": lambda m, x, y, eps, seed=0: robust_accuracy(
            m, x, y, eps, seed=seed).clean_accuracy,
        "divided by the clean accuracy": _relative,
        "hard-coded eps = 0.3": lambda m, x, y, eps, seed=0: measured_robust_accuracy(m, x, y, 0.3, seed),
        "a constant (the masked model's number)": lambda m, x, y, eps, seed=0: 0.0,
        "the whole report": lambda m, x, y, eps, seed=0: robust_accuracy(m, x, y, eps, seed=seed),
        "a percentage": lambda m, x, y, eps, seed=0: 100 * measured_robust_accuracy(m, x, y, eps, seed),
    },
    "red_flags": {
        "the checks that passed": lambda m, x, y, eps, seed=0: {
            c.name for c in sanity_checks(m, x, y, eps, seed=seed).checks if c.passed},
        "every check": lambda m, x, y, eps, seed=0: {c.name for c in sanity_checks(m, x, y, eps, seed=seed).checks},
        "the Check objects": lambda m, x, y, eps, seed=0: sanity_checks(m, x, y, eps, seed=seed).red_flags,
        "hard-coded (the masked model's flags)": lambda m, x, y, eps, seed=0: set(MASKED_FLAGS),
        "the printed report": lambda m, x, y, eps, seed=0: repr(sanity_checks(m, x, y, eps, seed=seed)),
        "gradient flags only": lambda m, x, y, eps, seed=0: red_flags(m, x, y, eps, seed) - {"logits"},
    },
}

REFERENCE = {"naive_robust_accuracy": naive_robust_accuracy, "measured_robust_accuracy": measured_robust_accuracy,
             "bpda_robust_accuracy": bpda_robust_accuracy, "red_flags": red_flags}

(
    test_every_task_has_a_reference_and_two_wrong_implementations,
    test_check_passes_on_the_reference,
    test_check_reports_a_stub_as_todo,
    test_check_fails_on_a_wrong_implementation,
) = check_tests(REFERENCE, WRONG, sections={"06"})


def test_an_alternative_correct_solution_passes(capsys):
    """Another seed, a list instead of a set, the report's own numbers: all fine."""

    def other_seed(model, x, y, eps, seed=0):
        return float(robust_accuracy(model, x, y, eps, seed=seed + 1).robust_accuracy)

    def as_list(model, x, y, eps, seed=0):
        return sorted(check.name for check in sanity_checks(model, x, y, eps, seed=seed).checks if not check.passed)

    assert checks.check_measured_robust_accuracy(other_seed) is True
    assert checks.check_red_flags(as_list) is True
    assert capsys.readouterr().out.count("[PASS]") == 2


def test_specific_hints(capsys):
    for label, needle in [("FGSM only", "weaker than the ones behind"), ("clean accuracy", "clean accuracy")]:
        checks.check_naive_robust_accuracy(WRONG["naive_robust_accuracy"][label])
        assert needle in capsys.readouterr().out, label
    for label, needle in [("plain PGD on the defended model (gradient 0)", "straight-through"),
                          ("the undefended model attacked and evaluated", "DEFENDED"),
                          ("clean accuracy", "clean accuracy")]:
        checks.check_bpda_robust_accuracy(WRONG["bpda_robust_accuracy"][label])
        assert needle in capsys.readouterr().out, label
    for label, needle in [("the naive FGSM/PGD chain (the claim)", "Square Attack"),
                          ("APGD-CE only (gradients only)", "blind"),
                          ("clean accuracy", "clean accuracy"), ("divided by the clean accuracy", "divide"),
                          ("the whole report", "whole report"), ("a percentage", "percentage")]:
        checks.check_measured_robust_accuracy(WRONG["measured_robust_accuracy"][label])
        assert needle in capsys.readouterr().out, label
    for label, needle in [("the checks that passed", "checks that passed"), ("every check", "every check"),
                          ("the Check objects", "Check objects"), ("hard-coded (the masked model's flags)", "add"),
                          ("the printed report", "not a collection"), ("gradient flags only", "miss ['logits']")]:
        checks.check_red_flags(WRONG["red_flags"][label])
        assert needle in capsys.readouterr().out, label


def test_the_linear_cases_are_exact_and_far_from_the_boundary():
    model, x, y, margin = conclusion._linear_case()
    clean = (margin > 0).double().mean().item()
    for eps in conclusion.LINEAR_EPS:
        assert (margin - eps).abs().min() > 2e-3  # no sample within reach of rounding
        exact = (margin > eps).double().mean().item()
        assert 0.3 < exact < clean < 1.0
        for chain in (None, "pgd"):  # every working attack finds the exact answer of a linear model
            assert robust_accuracy(model, x, y, eps, attacks=chain).robust_accuracy == exact
    assert len({(margin > eps).double().mean().item() for eps in conclusion.LINEAR_EPS}) == 2
    assert red_flags(model, x, y, conclusion.LINEAR_EPS[1]) == set()


def test_the_masked_zoo_model_claims_robustness_that_the_default_evaluation_refutes():
    record = zoo.info(conclusion.UNSEEN, "fast")
    assert record is not None, "the masked model's checkpoint must ship (python -m advlab.zoo build --ship)"
    claim = record["metrics"]["claimed_robust_accuracy"]
    assert "autoattack_grade" not in record["metrics"]  # measuring it is the exercise
    assert "claim" in claim and "pgd" in claim["chain"] and claim["eps"] == conclusion.UNSEEN_EPS
    assert claim["n"] == record["metrics"]["test_n"] and claim["accuracy"] > 0.8
    robust, clean = conclusion._unseen_reference("autoattack", conclusion.UNSEEN_EPS)
    naive, _ = conclusion._unseen_reference("naive", conclusion.UNSEEN_EPS)
    bpda, _ = conclusion._unseen_reference("bpda", conclusion.UNSEEN_EPS)
    assert clean > 0.85 and robust < 0.1 < claim["accuracy"] - 0.7
    assert abs(naive - claim["accuracy"]) < 0.05 and bpda < 0.1  # the claim reproduces; BPDA agrees with the default
    assert conclusion._unseen_flags() == MASKED_FLAGS
    model = zoo.load(conclusion.UNSEEN, profile="fast", progress=False)
    x, y, _ = data.load("mnist", "test", n=8, profile="fast")
    xg = x.to(next(model.parameters()).device).requires_grad_(True)
    model(xg).sum().backward()
    assert torch.count_nonzero(xg.grad) == 0  # the rounding masks every input gradient
