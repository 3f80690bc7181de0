"""Robustness evaluation: worst-case accuracy over a set of attacks, and red-flag checks for gradient masking.

:func:`robust_accuracy` returns the fraction of inputs that are classified correctly *and* survive every attack in a
list (per-sample worst case): the empirical adversarial risk of eq. 8 of the survey, with the inner maximisation
approximated by attacks. It is only an upper bound on the true robust accuracy, so :func:`sanity_checks` looks for
the classic signs that the bound is loose (Athalye et al., 2018; Carlini et al., 2019).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from advlab import zoo
from advlab.attacks.apgd import apgd
from advlab.attacks.core import loss_and_grad, random_start
from advlab.attacks.fgsm import fgsm
from advlab.attacks.pgd import pgd
from advlab.attacks.result import AttackResult
from advlab.attacks.square import square
from advlab.attacks.tensors import (
    as_eps,
    check_inputs,
    check_logits,
    eval_mode,
    logits_of,
    lp_norm,
    on_model_device,
    parse_norm,
)
from advlab.config import AdvlabError, profile
from advlab.train import accuracy_interval  # the Clopper–Pearson interval; the zoo needs it too, so it sits lower

AttackFn = Callable[[nn.Module, Tensor, Tensor, Tensor, float], AttackResult]
"""An attack for evaluation: ``fn(model, x, y, eps, p) -> AttackResult`` with eps (N,) and p the norm."""


def _norm_name(p: float) -> str:
    return "Linf" if math.isinf(p) else f"L{p:g}"


def _eps_value(eps_t: Tensor) -> float | Tensor:
    return eps_t[0].item() if bool((eps_t == eps_t[0]).all()) else eps_t.cpu()


# ----------------------------------------------------------------------------------------------------- attacks
BUDGETS = {
    # (APGD steps, APGD-T target classes, Square queries) of the AutoAttack-grade chain per profile. "full" is
    # AutoAttack's "standard" version (Croce & Hein 2020; FAB-T left out). "fast" keeps Square's 5,000 queries and
    # attacks 3 target classes instead of 9: on the zoo's robust L∞ models (1,000 test images) it is within
    # ±0.2 pp of the standard chain built from torchattacks, where 1,000 queries over-reported by up to 0.8 pp
    # (docs/evaluation.md, benchmarks/evaluation.py).
    "fast": (100, 3, 5000),
    "full": (100, 9, 5000),
}
EOT_DRAWS = 20  # gradient samples per step for models that are random at inference (AutoAttack's "rand" version)


def autoattack_attacks(
    steps: int | None = None,
    n_target_classes: int | None = None,
    queries: int | None = None,
    seed: int = 0,
    eot: int = 1,
    chunk: int | None = None,
) -> dict[str, AttackFn]:
    """The AutoAttack-grade chain: APGD-CE, then APGD-T (targeted DLR), then the Square Attack.

    Each attack runs only on the inputs the previous ones left robust (:func:`robust_accuracy` does that), so the
    expensive targeted and query-based attacks cost little on a weak model. Budgets default to :data:`BUDGETS`
    of the profile. With ``eot > 1`` (a model that is random at inference) the chain is AutoAttack's "rand"
    version: APGD-CE and APGD-DLR with gradients averaged over ``eot`` draws, and no Square. Random starts and
    windows use generators seeded with ``seed``. ``chunk``: samples per forward/backward pass
    (:func:`advlab.attacks.tensors.chunk_size`), which changes the speed, not the result.
    """
    fast_steps, fast_targets, fast_queries = BUDGETS[profile()]
    steps = fast_steps if steps is None else steps
    n_target_classes = fast_targets if n_target_classes is None else n_target_classes
    queries = fast_queries if queries is None else queries
    gen = torch.Generator().manual_seed(seed)
    if eot > 1:
        return {
            f"apgd-ce-{steps}-eot{eot}": lambda m, x, y, e, p: apgd(
                m, x, y, e, norm=p, steps=steps, loss="ce", generator=gen, early_stop=True, eot=eot, chunk=chunk),
            f"apgd-dlr-{steps}-eot{eot}": lambda m, x, y, e, p: apgd(
                m, x, y, e, norm=p, steps=steps, loss="dlr", generator=gen, early_stop=True, eot=eot, chunk=chunk),
        }
    return {
        f"apgd-ce-{steps}": lambda m, x, y, e, p: apgd(
            m, x, y, e, norm=p, steps=steps, loss="ce", generator=gen, early_stop=True, chunk=chunk),
        f"apgd-t-{steps}x{n_target_classes}": lambda m, x, y, e, p: _apgd_targeted(
            m, x, y, e, p, steps, n_target_classes, gen, chunk),
        f"square-{queries}": lambda m, x, y, e, p: _square_any_shape(m, x, y, e, p, queries, gen, chunk),
    }


def _square_any_shape(model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, p: float, queries: int,
                      gen: torch.Generator, chunk: int | None = None) -> AttackResult:
    """The Square Attack; inputs that are not images (N, C, H, W) are searched as one row of pixels (N, 1, 1, D),
    where the windows become single coordinates, and the result is returned in their own shape."""
    if x.ndim == 4:
        return square(model, x, y, eps, norm=p, queries=queries, generator=gen, chunk=chunk)
    rows = nn.Sequential(nn.Flatten(), nn.Unflatten(1, tuple(x.shape[1:])), model)  # (N, 1, 1, D) -> model
    res = square(rows, x.reshape(len(x), 1, 1, -1), y, eps, norm=p, queries=queries, generator=gen, chunk=chunk)
    return AttackResult(res.x_adv.reshape(x.shape), res.success, res.norms, res.pred, res.norm)


def _apgd_targeted(model: nn.Module, x: Tensor, y: Tensor, eps: Tensor, p: float, steps: int, n_target_classes: int,
                   gen: torch.Generator, chunk: int | None = None) -> AttackResult:
    """APGD-T against ``min(n_target_classes, K - 1)`` targets; for a model with fewer than 4 classes, where the
    targeted DLR loss is undefined, untargeted APGD on the CW margin loss instead."""
    classes = int(logits_of(model, x[:1]).shape[1])
    if classes < 4:
        return apgd(model, x, y, eps, norm=p, steps=steps, loss="margin", generator=gen, early_stop=True,
                    chunk=chunk)
    return apgd(model, x, y, eps, norm=p, steps=steps, n_target_classes=min(n_target_classes, classes - 1),
                generator=gen, early_stop=True, chunk=chunk)


def pgd_attacks(steps: int | None = None, restarts: int | None = None, seed: int = 0, chunk: int | None = None
                ) -> dict[str, AttackFn]:
    """The naive chain: FGSM, PGD on cross-entropy, and PGD on the CW margin loss with random restarts.

    What notebook 04a's ladder teaches and what a masked model can fool (06's capstone); not the default any more,
    since it over-reports robustness (see :func:`autoattack_attacks`). Sizes follow the profile: ``fast`` = 40
    steps and 2 margin restarts, ``full`` = 100 steps and 5 restarts.
    """
    fast = profile() == "fast"
    steps = steps if steps is not None else (40 if fast else 100)
    restarts = restarts if restarts is not None else (2 if fast else 5)
    gen = torch.Generator().manual_seed(seed)
    return {
        "fgsm": lambda m, x, y, e, p: fgsm(m, x, y, e, norm=p),
        f"pgd-ce-{steps}": lambda m, x, y, e, p: pgd(
            m, x, y, e, norm=p, steps=steps, loss="ce", generator=gen, early_stop=True, chunk=chunk
        ),
        f"pgd-margin-{steps}x{restarts}": lambda m, x, y, e, p: pgd(
            m, x, y, e, norm=p, steps=steps, loss="margin", restarts=restarts, generator=gen, early_stop=True,
            chunk=chunk,
        ),
    }


CHAINS: dict[str, Callable[..., dict[str, AttackFn]]] = {"autoattack": autoattack_attacks, "pgd": pgd_attacks}
"""Attack chains by name, for ``robust_accuracy(..., attacks=name)``."""


def _is_random(model: nn.Module, x: Tensor) -> bool:
    """True when two eval-mode forward passes on the same inputs differ (randomness at inference)."""
    a, b = logits_of(model, x), logits_of(model, x)
    return bool((a - b).abs().max() > 1e-5 * max(1.0, a.abs().max().item()))


@on_model_device
def random_noise(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    draws: int = 20,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Gradient-free baseline: ``draws`` points uniform in the ball (clipped to the box); keeps the first success.

    Random noise is a very weak attack; a white-box attack that does worse than it is not working.
    """
    p = parse_norm(norm)
    x, y = check_inputs(x, y)
    eps_t = as_eps(eps, x)
    with eval_mode(model):
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(int(draws)):
            cand = (x + random_start(x, eps_t, p, generator)).clamp(0, 1)
            hit = (logits_of(model, cand).argmax(1) != y) & ~done
            best[hit] = cand[hit]
            done |= hit
        pred = logits_of(model, best).argmax(1)
        return AttackResult(x_adv=best, success=pred != y, norms=lp_norm(best - x, p), pred=pred, norm=p)


def _named(attacks: Mapping[str, AttackFn] | Sequence[AttackFn | tuple[str, AttackFn]]) -> list[tuple[str, AttackFn]]:
    if isinstance(attacks, Mapping):
        items = list(attacks.items())
    else:
        items = []
        for a in attacks:
            if isinstance(a, tuple) and len(a) == 2:
                items.append((str(a[0]), a[1]))
            elif callable(a):
                base = a.func if isinstance(a, functools.partial) else a
                items.append((getattr(base, "__name__", f"attack{len(items)}"), a))
            else:
                raise AdvlabError(f"Attacks must be callables fn(model, x, y, eps, p) or (name, fn) pairs, got {a!r}.")
    if not items:
        raise AdvlabError("The list of attacks is empty; pass at least one, or attacks=None for the defaults.")
    for name, fn in items:
        if not callable(fn):
            raise AdvlabError(f"Attack {name!r} is not callable; pass fn(model, x, y, eps, p) -> AttackResult.")
    return items


# ------------------------------------------------------------------------------------------------------ report
@dataclass
class AttackRecord:
    """What one attack contributed to a :class:`RobustnessReport`.

    Attributes:
        name: the attack's name.
        attacked: how many inputs it was run on (clean-correct and not yet broken).
        broken: how many of those it broke (the model's eval-mode prediction on its output is wrong).
        robust_after: robust accuracy over all n inputs after this and all previous attacks.
        seconds: wall time spent in the attack.
    """

    name: str
    attacked: int
    broken: int
    robust_after: float
    seconds: float


@dataclass
class RobustnessReport:
    """Result of :func:`robust_accuracy`.

    Attributes:
        n: number of inputs.
        eps: the radius (a float, or a (N,) tensor when it varied per sample), pixel units.
        norm: p of the norm (``math.inf``, 2.0 or 1.0).
        clean_accuracy: accuracy on the unperturbed inputs.
        robust_accuracy: fraction correct on the clean input and on every attack's output (per-sample worst case).
        attacks: per-attack breakdown, in the order they ran.
        robust: (N,) bool, the inputs that survived everything (False for clean errors).
        broken_by: (N,) int64, index into ``attacks`` of the attack that broke the input; -1 if none did, -2 for
            inputs already misclassified without perturbation.
        x_adv: (N, *) the successful adversarial input where there is one, else the clean input.
        eot: gradient samples per attack step: 1, or 20 when the model was found random at inference and was
            evaluated with expectation over transformation (AutoAttack's "rand" version).
    """

    n: int
    eps: float | Tensor
    norm: float
    clean_accuracy: float
    robust_accuracy: float
    attacks: list[AttackRecord]
    robust: Tensor = field(repr=False)
    broken_by: Tensor = field(repr=False)
    x_adv: Tensor = field(repr=False)
    eot: int = 1

    @property
    def interval(self) -> tuple[float, float]:
        """95 % Clopper–Pearson interval of :attr:`robust_accuracy` over these n inputs (:func:`accuracy_interval`)."""
        return accuracy_interval(int(self.robust.sum()), self.n)

    def summary(self) -> str:
        """A small text table: clean accuracy, then each attack's contribution, then the robust accuracy."""
        eps = f"{self.eps:g}" if isinstance(self.eps, float) else "per-sample"
        width = max([len(a.name) for a in self.attacks] + [14])
        lines = [
            f"Robustness of {self.n} inputs, {_norm_name(self.norm)} eps = {eps}"
            + ("" if self.eot == 1 else f" (random model: gradients averaged over {self.eot} draws, EOT)"),
            f"{'attack':<{width}}  {'attacked':>8}  {'broken':>6}  {'accuracy':>8}  {'time':>7}",
            f"{'(clean)':<{width}}  {'':>8}  {'':>6}  {self.clean_accuracy:>8.1%}  {'':>7}",
        ]
        for a in self.attacks:
            lines.append(
                f"{a.name:<{width}}  {a.attacked:>8d}  {a.broken:>6d}  {a.robust_after:>8.1%}  {a.seconds:>6.1f}s"
            )
        low, high = self.interval
        lines.append(f"{'robust accuracy':<{width}}  {'':>8}  {'':>6}  {self.robust_accuracy:>8.1%}  "
                     f"(95 % interval {low:.1%} to {high:.1%}, n = {self.n})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


@on_model_device
def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    attacks: str | Mapping[str, AttackFn] | Sequence[AttackFn | tuple[str, AttackFn]] | None = None,
    batch_size: int = 500,
    seed: int = 0,
    tol: float = 1e-4,
    chunk: int | None = None,
) -> RobustnessReport:
    """Per-sample worst-case accuracy of ``model`` under a list of attacks.

    Only clean-correct inputs are attacked, and each attack only runs on the inputs that no earlier attack broke.
    Every returned input is checked: it must lie in [0, 1] and in the ball (``||x_adv - x||_p <= eps + tol``, else
    :class:`AdvlabError`, since the attack is broken), and it is re-classified here in eval mode, so an attack's own
    ``success`` flag is never trusted.

    Args:
        model: returns logits; evaluated and attacked in eval mode (restored afterwards), on its own device (the
            attacks get inputs there; the report's tensors come back on x's device).
        x: (N, *) inputs in [0, 1]; y: (N,) labels.
        eps: radius in pixel units (scalar or (N,)).
        norm: ``"inf"``, ``2`` or ``1``.
        attacks: ``None`` (the default) or ``"autoattack"``: the AutoAttack-grade chain APGD-CE → APGD-T → Square
            (:func:`autoattack_attacks`); for a model that is random at inference, its "rand" version with
            expectation over 20 draws (the report's ``eot`` says so). ``"pgd"``: the naive FGSM/PGD chain
            (:func:`pgd_attacks`). Or your own ``{name: fn}`` / list of ``fn`` or ``(name, fn)`` with
            ``fn(model, x, y, eps, p)``.
        batch_size: inputs given to each attack call (the random draws of the default attacks follow this split).
        seed: seeds the random starts of the default attacks.
        tol: slack on the ball check (absolute, pixel units; float32 rounding).
        chunk: samples per forward/backward pass in the clean evaluation and the default attacks (``None``: the
            device's default, :func:`advlab.attacks.tensors.chunk_size`; ``0``: the whole batch). Only the speed
            depends on it.

    Returns:
        :class:`RobustnessReport`.
    """
    p = parse_norm(norm)
    x, y = check_inputs(x, y)
    eps_t = as_eps(eps, x)
    if int(batch_size) != batch_size or batch_size < 1:
        raise AdvlabError(f"batch_size must be a positive integer, got {batch_size!r}.")
    eot = 1
    with eval_mode(model):
        if attacks is None or isinstance(attacks, str):
            chain = "autoattack" if attacks is None else attacks.strip().lower()
            if chain not in CHAINS:
                raise AdvlabError(f"Unknown attack chain {attacks!r}; use one of {sorted(CHAINS)} or pass attacks.")
            if chain == "autoattack" and _is_random(model, x[: min(len(x), 64)]):
                eot = EOT_DRAWS
                items = _named(autoattack_attacks(seed=seed, eot=eot, chunk=chunk))
            else:
                items = _named(CHAINS[chain](seed=seed, chunk=chunk))
        else:
            items = _named(attacks)
        logits = logits_of(model, x, chunk)
        check_logits(logits, y)
        correct = logits.argmax(1) == y
        robust = correct.clone()
        broken_by = torch.where(correct, -1, -2).to(torch.long)
        x_adv = x.clone()
        stats = [[0, 0, 0.0] for _ in items]  # attacked, broken, seconds
        for start in range(0, len(x), int(batch_size)):
            sl = torch.arange(start, min(start + int(batch_size), len(x)), device=x.device)
            for k, (name, fn) in enumerate(items):
                idx = sl[robust[sl]]
                if idx.numel() == 0:
                    break
                t0 = time.perf_counter()
                res = fn(model, x[idx], y[idx], eps_t[idx], p)
                stats[k][2] += time.perf_counter() - t0
                adv = _checked(name, res, x[idx], eps_t[idx], p, tol)
                broken = logits_of(model, adv, chunk).argmax(1) != y[idx]
                hit = idx[broken]
                robust[hit] = False
                broken_by[hit] = k
                x_adv[hit] = adv[broken]
                stats[k][0] += idx.numel()
                stats[k][1] += int(broken.sum())
    n = len(x)
    records, still = [], int(correct.sum())
    for (name, _), (attacked, nbroken, secs) in zip(items, stats, strict=True):
        still -= nbroken
        records.append(AttackRecord(name, attacked, nbroken, still / n, secs))
    return RobustnessReport(
        n=n,
        eps=_eps_value(eps_t),
        norm=p,
        clean_accuracy=correct.float().mean().item(),
        robust_accuracy=robust.float().mean().item(),
        attacks=records,
        robust=robust,
        broken_by=broken_by,
        x_adv=x_adv,
        eot=eot,
    )


@on_model_device
def robustness_record(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str | float = "inf", seed: int = 0
) -> dict[str, object]:
    """The AutoAttack-grade robust accuracy of ``model`` as a JSON-ready record (what the zoo stores per checkpoint).

    Runs :func:`robust_accuracy` with its default chain on all of (x, y), on the model's device, and returns
    ``{"chain", "eps", "norm", "n", "correct", "accuracy", "interval_95", "clean_accuracy"}``: the attacks in order,
    the radius (pixel units) and norm name, the number of inputs, how many survived every attack, their fraction
    (exact ``correct / n``) and its 95 % Clopper–Pearson interval.
    """
    return report_record(robust_accuracy(model, x, y, eps, norm, seed=seed), eps)


def report_record(rep: RobustnessReport, eps: float) -> dict[str, object]:
    """The JSON-ready record of a :class:`RobustnessReport` at radius ``eps`` (see :func:`robustness_record`)."""
    correct = int(rep.robust.sum())
    low, high = accuracy_interval(correct, rep.n)
    return {
        "chain": " → ".join(a.name for a in rep.attacks) + ("" if rep.eot == 1 else f" (EOT {rep.eot})"),
        "eps": float(eps),
        "norm": _norm_name(rep.norm),
        "n": rep.n,
        "correct": correct,
        "accuracy": correct / rep.n,
        "interval_95": [low, high],
        "clean_accuracy": rep.clean_accuracy,
    }


# Registration from above: every classifier entry of the zoo records this metric (zoo.autoattack_eval).
zoo.register_function("robustness_record", robustness_record)


@on_model_device
def pgd_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float = 0.3,
    norm: str | float = "inf",
    steps: int = 40,
    restarts: int = 1,
    seed: int = 0,
) -> float:
    """Accuracy under PGD alone (cross-entropy, random start, ``restarts`` runs), rounded to 4 digits: a quick number
    that over-reports robustness; the default of :func:`robust_accuracy` is the one to trust."""
    gen = torch.Generator().manual_seed(seed)
    attacks = {f"pgd-{steps}": lambda m, xa, ya, e, p: pgd(m, xa, ya, e, norm=p, steps=steps, restarts=restarts,
                                                          generator=gen)}
    return round(robust_accuracy(model, x, y, eps, norm, attacks=attacks).robust_accuracy, 4)


def _checked(name: str, res: AttackResult, x: Tensor, eps: Tensor, p: float, tol: float) -> Tensor:
    """The attack's output after checking shape, box and ball; raises :class:`AdvlabError` if it cheats."""
    adv = res.x_adv if isinstance(res, AttackResult) else res
    if not isinstance(adv, Tensor) or adv.shape != x.shape:
        raise AdvlabError(f"Attack {name!r} must return an AttackResult whose x_adv has shape {tuple(x.shape)}.")
    adv = adv.detach().to(x.device, x.dtype)
    if not bool(torch.isfinite(adv).all()):
        raise AdvlabError(f"Attack {name!r} returned non-finite inputs (NaN or inf); its numbers cannot be trusted.")
    if adv.min() < 0 or adv.max() > 1:
        raise AdvlabError(f"Attack {name!r} returned inputs outside [0, 1]; clip its output to the box.")
    excess = lp_norm(adv - x, p) - eps
    if (excess > tol).any():
        raise AdvlabError(
            f"Attack {name!r} returned inputs outside the {_norm_name(p)} ball (by up to {excess.max().item():.3g}); "
            "its projection is wrong, so its numbers cannot be trusted."
        )
    return adv


# ----------------------------------------------------------------------------------------------- sanity checks
@dataclass
class Check:
    """One red-flag test: its name, whether it passed, and a message saying what was seen and why it matters."""

    name: str
    passed: bool
    message: str

    def __repr__(self) -> str:
        return f"{'[ok]' if self.passed else '[RED FLAG]'} {self.name}: {self.message}"


@dataclass
class SanityReport:
    """The list of :class:`Check` s run by :func:`sanity_checks`; prints one ``[ok]``/``[RED FLAG]`` line each."""

    checks: list[Check]

    @property
    def passed(self) -> bool:
        """True when no check raised a red flag."""
        return all(c.passed for c in self.checks)

    @property
    def red_flags(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.passed]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"No check named {name!r}; have {[c.name for c in self.checks]}.")

    def __repr__(self) -> str:
        return "\n".join(repr(c) for c in self.checks)


def _acc(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    return (logits_of(model, x_adv).argmax(1) == y).float().mean().item()


def _unbounded_eps(x: Tensor, p: float) -> float:
    """A radius that contains the whole box around any x: 1 for L∞, sqrt(d) for L2, d for L1."""
    d = x[0].numel()
    return 1.0 if math.isinf(p) else (math.sqrt(d) if p == 2.0 else float(d))


@on_model_device
def sanity_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str | float = "inf",
    surrogate: nn.Module | None = None,
    steps: tuple[int, int] = (10, 50),
    draws: int = 20,
    tol: float = 0.02,
    seed: int = 0,
    queries: int = 300,
) -> SanityReport:
    """Red flags that a robustness number is an artefact of a broken evaluation (gradient masking).

    Checks, after Athalye et al. (2018) and Carlini et al. (2019, "On evaluating adversarial robustness"):

    1. ``logits``: the model's outputs should be logits; probabilities (non-negative rows summing to 1) saturate and
       hide gradients.
    2. ``deterministic``: two forward passes in eval mode must agree; randomness at inference defeats a single
       gradient sample (use expectation over transformation).
    3. ``gradients``: the input gradient of the margin loss must be finite and non-zero; zero or NaN gradients
       (quantisation, ``torch.round``, detached preprocessing) make gradient attacks useless.
    4. ``iterative beats single-step``: PGD with ``steps[1]`` steps must not leave more accuracy than FGSM, nor
       than PGD with ``steps[0]`` steps.
    5. ``accuracy falls with eps``: accuracy under PGD at eps/4, eps/2, eps, 2·eps must not rise, and must fall
       overall unless it is already 0.
    6. ``unbounded attack``: with a radius that contains the whole box, accuracy must reach ~0.
    7. ``white-box beats black-box``: random noise (``draws`` points in the ball), the gradient-free Square Attack
       (``queries`` model evaluations) and, if given, PGD transferred from ``surrogate`` must not leave less
       accuracy than the best white-box attack (PGD, APGD-CE with ``steps[1]`` steps).

    Accuracies are over all N inputs; ``tol`` is the slack (absolute accuracy) allowed for noise in comparisons
    and in "reaches ~0". Each check's message says what was measured.
    """
    p = parse_norm(norm)
    x, y = check_inputs(x, y)
    eps = float(eps)
    as_eps(eps, x)
    few, many = (int(s) for s in steps)
    if not 1 <= few < many:
        raise AdvlabError(f"steps must be two increasing positive integers (few, many), got {steps!r}.")

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    checks: list[Check] = []
    with eval_mode(model):
        out1 = logits_of(model, x)
        check_logits(out1, y)
        out2 = logits_of(model, x)

        rows = out1.float()
        tol = tol + 1e-9  # accuracies are multiples of 1/N: keep the comparisons exact under float rounding
        probs = bool((rows >= 0).all()) and torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]), atol=1e-4)
        checks.append(Check("logits", not probs, (
            "outputs are non-negative and sum to 1: the model returns probabilities; attack its logits instead, "
            "softmax saturation hides gradients" if probs else "outputs are not probabilities"
        )))

        diff = (out1 - out2).abs().max().item()
        same = diff <= 1e-5 * max(1.0, out1.abs().max().item())
        checks.append(Check("deterministic", same, (
            f"two forward passes on the same input agree (max difference {diff:.2g})" if same else
            f"two forward passes differ by up to {diff:.3g}: the model is random at inference, so one gradient "
            "sample is misleading; attack the expectation (EOT) before trusting robustness"
        )))

        _, grad, _ = loss_and_grad(model, x, y, "margin")
        finite = bool(torch.isfinite(grad).all())
        gnorm = grad.flatten(1).norm(dim=1)
        zero = (gnorm == 0).float().mean().item()
        ok = finite and zero <= 0.05
        checks.append(Check("gradients", ok, (
            f"input gradients are finite and non-zero (median norm {gnorm.median().item():.3g})" if ok else
            f"{zero:.0%} of inputs have a zero input gradient" + ("" if finite else " and some are NaN/inf") +
            ": gradient attacks cannot move; the model is masking gradients (e.g. quantisation or a detached "
            "step); use BPDA or gradient-free attacks"
        )))

        acc_fgsm = _acc(model, fgsm(model, x, y, eps, norm=p).x_adv, y)
        acc_few = _acc(model, pgd(model, x, y, eps, norm=p, steps=few, generator=gen()).x_adv, y)
        acc_many = _acc(model, pgd(model, x, y, eps, norm=p, steps=many, generator=gen()).x_adv, y)
        ok = acc_many <= acc_fgsm + tol and acc_many <= acc_few + tol
        checks.append(Check("iterative beats single-step", ok, (
            f"accuracy FGSM {acc_fgsm:.1%}, PGD-{few} {acc_few:.1%}, PGD-{many} {acc_many:.1%}"
            + ("" if ok else ": more attack iterations did not lower accuracy, so the attack is not optimising "
               "the model's true loss (masked or noisy gradients)")
        )))

        scales = (0.25, 0.5, 1.0, 2.0)
        accs = [_acc(model, pgd(model, x, y, eps * s, norm=p, steps=many, generator=gen()).x_adv, y) for s in scales]
        rising = any(b > a + tol for a, b in zip(accs, accs[1:], strict=False))
        flat = accs[0] > tol and accs[-1] >= accs[0] - tol
        ok = not rising and not flat
        curve = ", ".join(f"{s:g}·eps {a:.1%}" for s, a in zip(scales, accs, strict=True))
        checks.append(Check("accuracy falls with eps", ok, (
            f"PGD-{many} accuracy: {curve}" + ("" if ok else (
                ": accuracy rose with a larger budget" if rising else ": a budget 8 times larger did not lower "
                "accuracy") + ", which a working attack cannot produce")
        )))

        big = _unbounded_eps(x, p)
        acc_big = _acc(model, pgd(model, x, y, big, norm=p, steps=many, loss="margin", generator=gen()).x_adv, y)
        ok = acc_big <= tol
        checks.append(Check("unbounded attack", ok, (
            f"PGD-{many} with eps = {big:g} (the whole box) leaves {acc_big:.1%} accuracy"
            + ("" if ok else "; any input is reachable, so a working attack reaches 0%: the gradients are not "
               "useful to the attack")
        )))

        acc_apgd = _acc(model, apgd(model, x, y, eps, norm=p, steps=many, generator=gen()).x_adv, y)
        white = min(acc_few, acc_many, accs[2], acc_apgd)
        noise = random_noise(model, x, y, eps, norm=p, draws=draws, generator=gen())
        acc_noise = _acc(model, noise.x_adv, y)
        acc_square = _acc(model, square(model, x, y, eps, norm=p, queries=queries, generator=gen()).x_adv, y)
        parts = [f"white-box PGD/APGD {white:.1%}, random noise ({draws} draws) {acc_noise:.1%}, Square "
                 f"({queries} queries, no gradients) {acc_square:.1%}"]
        ok = acc_noise >= white - tol and acc_square >= white - tol
        if surrogate is not None:
            with eval_mode(surrogate):
                crafted = pgd(surrogate, x, y, eps, norm=p, steps=many, generator=gen()).x_adv
            acc_tr = _acc(model, crafted, y)
            parts.append(f"transfer from surrogate {acc_tr:.1%}")
            ok = ok and acc_tr >= white - tol
        checks.append(Check("white-box beats black-box", ok, ", ".join(parts) + (
            "" if ok else ": an attack that ignores the model's gradients did better than one that uses them, so "
            "the gradients are misleading (gradient masking)"
        )))
    return SanityReport(checks)
