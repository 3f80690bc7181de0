"""Checks for the capstone of section ⑥ (solutions/06_conclusion): evaluate a model you have not seen.

The learner's four functions take the model and the data as arguments and report the robust accuracy under the
attacks behind the model's claim (the naive FGSM/PGD chain), under advlab's AutoAttack-grade default, and under PGD
through BPDA (an adaptive attack), and the names of the sanity checks that raise a red flag. Each check grades them on
models with different answers, so that no fixed answer passes: a 2-class linear model whose exact robust accuracy is
known (every attack that works finds it), the same model behind an input quantisation, a linear model that returns
probabilities, and the zoo's ``mnist-cnn-defended`` on 100 MNIST test digits, where the reference is advlab's own
evaluation, recomputed here (once per process) on the same digits with the same seed.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from advlab.checks._core import Mismatch, _gen, _unchanged, register

UNSEEN = "mnist-cnn-defended"
UNSEEN_EPS = 0.3  # the radius at which the zoo record states its claim
N_DIGITS = 100
TOLERANCE = 0.03  # absolute, on 100 digits: 3 digits, for another seed's random starts and Square windows
SANITY_NAMES = ("logits", "deterministic", "gradients", "iterative beats single-step", "accuracy falls with eps",
                "unbounded attack", "white-box beats black-box")


def _linear_case(seed: int = 3) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """A 2-class linear model on (64, 1, 4, 5) "images" in [0.25, 0.75] (so no ε ≤ 0.25 reaches the box), labels
    with about 20 % flipped (clean accuracy below 1); returns (model, x, y, margin / ||w_1 - w_0||_1 per sample)."""
    g = _gen(seed)
    lin = nn.Linear(20, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn((2, 20), generator=g, dtype=torch.float64))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.25 + 0.5 * torch.rand((64, 1, 4, 5), generator=g, dtype=torch.float64)
    w = lin.weight.detach()[1] - lin.weight.detach()[0]
    score = x.flatten(1) @ w
    y = (score > 0).long()
    y = torch.where(torch.rand(64, generator=g) < 0.2, 1 - y, y)
    return model, x, y, torch.where(y == 1, score, -score) / w.abs().sum()


# Radii of the linear case, chosen away from every sample's distance to the boundary (> 2e-3, see the tests): the
# exact robust accuracy is the fraction of samples whose margin exceeds ε·||w_1 - w_0||_1.
LINEAR_EPS = (0.04, 0.077)


def _unseen_case() -> tuple[nn.Module, Tensor, Tensor]:
    from advlab import data, zoo

    model = zoo.load(UNSEEN, profile="fast", progress=False)
    x, y, _ = data.load("mnist", "test", n=N_DIGITS, profile="fast")
    dev = next(model.parameters()).device
    return model, x.to(dev), y.to(dev)


def _evaluate(kind: str, model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int = 0):
    """advlab's own number for task ``kind``: the report of the naive FGSM/PGD chain (``naive``), of the
    AutoAttack-grade default (``autoattack``) or of PGD-40 through BPDA (``bpda``), seeded with ``seed``."""
    from advlab.attacks.pgd import pgd
    from advlab.defenses.masking import BPDA
    from advlab.eval import robust_accuracy

    if kind == "naive":
        return robust_accuracy(model, x, y, eps, attacks="pgd", seed=seed)
    if kind == "autoattack":
        return robust_accuracy(model, x, y, eps, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    attack = {"bpda-pgd-40": lambda m, xa, ya, e, p: pgd(BPDA(m).eval(), xa, ya, e, norm=p, steps=40,
                                                         generator=gen)}
    return robust_accuracy(model, x, y, eps, attacks=attack)


@functools.cache
def _unseen_reference(kind: str, eps: float) -> tuple[float, float]:
    """(robust, clean accuracy) of the unseen model on its digits by advlab's own evaluation ``kind`` (seed 0),
    computed once per process, on a copy of the model that the learner's function never sees."""
    model, x, y = _unseen_case()
    rep = _evaluate(kind, model, x, y, eps)
    return rep.robust_accuracy, rep.clean_accuracy


@functools.lru_cache(maxsize=1)
def _unseen_flags() -> frozenset[str]:
    from advlab.eval import sanity_checks

    model, x, y = _unseen_case()
    return frozenset(c.name for c in sanity_checks(model, x, y, UNSEEN_EPS, seed=0).red_flags)


def _call(fn: Callable, model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int):
    x0, y0 = x.clone(), y.clone()
    out = fn(model, x, y, eps, seed=seed)
    _unchanged([x0.cpu(), y0.cpu()], [x, y], "x or y")
    return out


def _fraction(out, what: str) -> float:
    if isinstance(out, Tensor) and out.numel() == 1:
        out = out.item()
    if out is None:
        raise Mismatch(f"{what} returned None.", "did you forget the `return` statement?")
    if hasattr(out, "robust_accuracy") and hasattr(out, "attacks"):
        raise Mismatch(f"{what} returned the whole report.", "return the number: report.robust_accuracy.")
    if isinstance(out, bool) or not isinstance(out, (int, float)) or not math.isfinite(float(out)):
        raise Mismatch(f"{what} returned {out!r}, not a number.",
                       "return a float in [0, 1]: robust_accuracy(...).robust_accuracy.")
    if not 0.0 <= float(out) <= 1.0:
        raise Mismatch(f"{what} returned {float(out):.4g}, outside [0, 1].",
                       "return the fraction of the inputs (0.42), not a percentage (42) or a count.")
    return float(out)


_HOW = {
    "naive": "robust_accuracy(model, x, y, eps, attacks=\"pgd\", seed=seed).robust_accuracy (the chain of "
             "advlab.eval.pgd_attacks: FGSM → PGD-CE → PGD-margin, the attacks behind the claim)",
    "autoattack": "robust_accuracy(model, x, y, eps, seed=seed).robust_accuracy (its default attacks: APGD-CE → "
                  "APGD-T → Square)",
    "bpda": "robust_accuracy(model, x, y, eps, attacks={name: attack}).robust_accuracy, where attack(m, x, y, e, p) "
            "runs advlab.attacks.pgd(BPDA(m).eval(), x, y, e, norm=p, steps=40, generator=...) seeded with seed",
}
_NAMES = {"naive": "the FGSM/PGD chain", "autoattack": "advlab's AutoAttack-grade default",
          "bpda": "PGD-40 through BPDA"}


def _common_mistakes(got: float, exact: float, clean: float, what: str, kind: str) -> None:
    """Mistakes that any robust-accuracy task can make, recognised from the numbers."""
    if abs(got - clean) <= 1e-9 and abs(exact - clean) > 1e-9:
        raise Mismatch(f"{what}: you return the clean accuracy (no perturbation).",
                       "the robust accuracy counts the inputs classified correctly AND surviving every attack: "
                       + _HOW[kind] + ".")
    if clean > 0 and abs(got - exact / clean) <= 1e-9 and abs(clean - 1) > 1e-9:
        raise Mismatch(f"{what}: you divide by the clean accuracy.",
                       "report the fraction of ALL inputs that survive (a clean error counts as not robust), as "
                       "robust_accuracy's .robust_accuracy does.")


def _check_accuracy(fn: Callable, name: str, kind: str) -> None:
    """The linear cases (the naive and the AutoAttack-grade chain are exact on a linear model), then the unseen
    model at the claim's radius (and, for the adaptive attack, a quantised linear model and a smaller radius)."""
    from advlab.defenses.masking import InputQuantization

    model, x, y, margin = _linear_case()
    clean = (margin > 0).double().mean().item()
    if kind == "bpda":
        quantised = InputQuantization(model, levels=2).eval()
        rep = _evaluate(kind, quantised, x, y, 0.15)
        got = _fraction(_call(fn, quantised, x, y, 0.15, seed=0), name)
        if abs(got - rep.robust_accuracy) > 1.5 / len(y):  # one sample: another seed's random start
            _common_mistakes(got, rep.robust_accuracy, rep.clean_accuracy, "on a quantised linear model", kind)
            said = (f"on a linear model behind a 2-level input quantisation (L∞ ε = 0.15), your function returns "
                    f"{got:.4f}; {_NAMES[kind]} gives {rep.robust_accuracy:.4f}")
            if got < rep.robust_accuracy:
                raise Mismatch(f"{said}: lower than the defended model's under BPDA.",
                               "evaluate the DEFENDED model (robust_accuracy(model, ...), which re-classifies every "
                               "input through the preprocessing), not the undefended model.model: " + _HOW[kind] + ".")
            raise Mismatch(f"{said}.",
                           "attack the straight-through view BPDA(model) (forward: the defended model; backward: "
                           "the rounding as the identity), and let robust_accuracy re-classify with the defended "
                           "model itself: " + _HOW[kind] + ".")
    else:
        for eps in LINEAR_EPS:
            exact = (margin > eps).double().mean().item()
            got = _fraction(_call(fn, model, x, y, eps, seed=0), name)
            if abs(got - exact) <= 1e-9:
                continue
            _common_mistakes(got, exact, clean, "on a linear model", kind)
            raise Mismatch(f"on a linear model whose exact robust accuracy at L∞ ε = {eps:g} is {exact:.4f} (every "
                           f"working attack finds it), your function returns {got:.4f}.",
                           "evaluate the model you are given, at the ε you are given: " + _HOW[kind] + ".")
    for eps in (UNSEEN_EPS, 0.1) if kind == "bpda" else (UNSEEN_EPS,):
        ref, _ = _unseen_reference(kind, eps)
        model, x, y = _unseen_case()
        got = _fraction(_call(fn, model, x, y, eps, seed=0), name)
        if abs(got - ref) <= TOLERANCE:
            continue
        where = f"on {UNSEEN} ({N_DIGITS} test digits, L∞ ε = {eps:g})"  # (a blind attack leaves the clean accuracy)
        said = f"{where} your function returns {got:.2f}; {_NAMES[kind]} gives {ref:.2f}"
        if kind == "naive" and got < ref:
            raise Mismatch(f"{said}: your attacks are stronger than the ones behind the claim.",
                           "reproduce the claim with the authors' own attacks, not the strongest ones: "
                           + _HOW[kind] + ".")
        if kind == "naive":
            raise Mismatch(f"{said}: your attacks are weaker than the ones behind the claim.",
                           "all three attacks of the naive chain, each on the survivors of the previous one: "
                           + _HOW[kind] + ".")
        if kind == "autoattack" and got > ref:
            raise Mismatch(f"{said}.",
                           "a chain of gradient attacks (FGSM, PGD, even APGD) is blind on a model that masks its "
                           "gradients: that is how the claim came about. Use robust_accuracy's default attacks "
                           "(attacks=None), whose gradient-free Square Attack is not fooled.")
        if kind == "bpda" and got > ref:
            raise Mismatch(f"{said}: your attack finds fewer adversarial examples.",
                           "the defended model's own gradient is 0 (the rounding): attack BPDA(model), whose "
                           "backward pass treats the preprocessing as the identity, for 40 steps, and evaluate on "
                           "the defended model: " + _HOW[kind] + ".")
        if kind == "bpda":
            raise Mismatch(f"{said}: your number is lower than the defended model's under BPDA.",
                           "evaluate the DEFENDED model (robust_accuracy(model, ...), which re-classifies every "
                           "input through the preprocessing), not the undefended model.model: " + _HOW[kind] + ".")
        raise Mismatch(f"{said}.", "on all the inputs you are given: " + _HOW[kind] + ".")


@register("naive_robust_accuracy", "the claim reproduced (FGSM/PGD)", "06",
          "call advlab.eval.robust_accuracy(model, x, y, eps, attacks=\"pgd\", seed=seed) and return its "
          ".robust_accuracy.")
def check_naive_robust_accuracy(fn: Callable) -> str:
    """``naive_robust_accuracy(model, x, y, eps, seed=0) -> float``: the robust accuracy the FGSM/PGD chain reports."""
    _check_accuracy(fn, "naive_robust_accuracy", "naive")
    return (f"exact on a linear model at two radii, and on {UNSEEN} within {TOLERANCE:g} of advlab's FGSM/PGD "
            f"chain on the same {N_DIGITS} digits: the claim, reproduced.")


@register("measured_robust_accuracy", "measured robust accuracy", "06",
          "call advlab.eval.robust_accuracy(model, x, y, eps, seed=seed) and return its .robust_accuracy.")
def check_measured_robust_accuracy(fn: Callable) -> str:
    """``measured_robust_accuracy(model, x, y, eps, seed=0) -> float``: the AutoAttack-grade robust accuracy."""
    _check_accuracy(fn, "measured_robust_accuracy", "autoattack")
    return (f"exact on a linear model at two radii, and on {UNSEEN} within {TOLERANCE:g} of advlab's AutoAttack-grade "
            f"evaluation of the same {N_DIGITS} digits.")


@register("bpda_robust_accuracy", "adaptive attack (BPDA)", "06",
          "wrap the model in advlab.defenses.BPDA for the attack, and evaluate the defended model with "
          "advlab.eval.robust_accuracy(model, x, y, eps, attacks={...}).")
def check_bpda_robust_accuracy(fn: Callable) -> str:
    """``bpda_robust_accuracy(model, x, y, eps, seed=0) -> float``: robust accuracy of a defended model (with
    ``.preprocess`` and ``.model``) under PGD-40 through its BPDA view."""
    _check_accuracy(fn, "bpda_robust_accuracy", "bpda")
    return (f"matches advlab's PGD-40 through BPDA on a quantised linear model, and on {UNSEEN} at two radii within "
            f"{TOLERANCE:g}, on the same {N_DIGITS} digits.")


def _names(out, what: str) -> set[str]:
    if out is None:
        raise Mismatch(f"{what} returned None.", "did you forget the `return` statement?")
    if isinstance(out, str) or not isinstance(out, (set, frozenset, list, tuple)):
        raise Mismatch(f"{what} returned a {type(out).__name__}, not a collection of names.",
                       "return a set of the checks' names: {check.name for check in report.red_flags}.")
    items = list(out)
    if any(hasattr(i, "passed") and hasattr(i, "name") for i in items):
        raise Mismatch(f"{what} returned the Check objects, not their names.",
                       "return the names: {check.name for check in report.red_flags}.")
    if not all(isinstance(i, str) for i in items):
        raise Mismatch(f"{what} returned something other than names (strings).",
                       "return a set of str: {check.name for check in report.red_flags}.")
    unknown = sorted(set(items) - set(SANITY_NAMES))
    if unknown:
        raise Mismatch(f"{what} returned names that are not sanity checks: {unknown}.",
                       f"the seven checks of sanity_checks are named {', '.join(SANITY_NAMES)}.")
    return set(items)


def _compare_flags(got: set[str], want: set[str], case: str) -> None:
    if got == want:
        return
    shown = sorted(want) or "none"
    if got == set(SANITY_NAMES):
        raise Mismatch(f"on {case} you return every check's name (the red flags are {shown}).",
                       "keep only the checks that failed: {check.name for check in report.red_flags}.")
    if got == set(SANITY_NAMES) - want:
        raise Mismatch(f"on {case} you return the checks that passed (the red flags are {shown}).",
                       "a red flag is a check with passed == False: report.red_flags holds exactly those.")
    missing, extra = sorted(want - got), sorted(got - want)
    raise Mismatch(f"on {case} the red flags are {shown}; yours miss {missing or 'none'} and add "
                   f"{extra or 'none'}.",
                   "run sanity_checks(model, x, y, eps, seed=seed) on the model and data you are given (the default "
                   "settings) and return {check.name for check in report.red_flags}.")


@register("red_flags", "red flags of the sanity checks", "06",
          "call advlab.eval.sanity_checks(model, x, y, eps, seed=seed) and return the names of its red flags.")
def check_red_flags(fn: Callable) -> str:
    """``red_flags(model, x, y, eps, seed=0) -> set[str]``: the names of the sanity checks that fail."""
    from advlab.eval import sanity_checks

    model, x, y, _ = _linear_case()
    probabilities = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    eps = LINEAR_EPS[1]
    for m, case in ((probabilities, "a linear model that returns probabilities"), (model, "a linear model")):
        with warnings.catch_warnings():  # the attacks warn about the probabilities: that is the point of this case
            warnings.simplefilter("ignore", UserWarning)
            want = {c.name for c in sanity_checks(m, x, y, eps, seed=0).red_flags}
            got = _call(fn, m, x, y, eps, seed=0)
        _compare_flags(_names(got, "red_flags"), want, case)
    want = set(_unseen_flags())
    model, x, y = _unseen_case()
    got = _names(_call(fn, model, x, y, UNSEEN_EPS, seed=0), "red_flags")
    _compare_flags(got, want, f"{UNSEEN} ({N_DIGITS} test digits, L∞ ε = {UNSEEN_EPS})")
    return (f"the red flags of a linear model that returns probabilities, of one that returns logits (none) and of "
            f"{UNSEEN}, as advlab's sanity_checks raise them.")
