"""Adversarial training: train on the worst case in the ball instead of the clean point (survey eq. 8).

Every trainer takes ``(model, x, y, ..., **fit_kwargs)``, trains ``model`` in place with
:func:`advlab.train.fit` (each through a per-batch hook or loss) and returns a dict of metrics, so it can be a zoo
``"trainer"`` (:mod:`advlab.defenses.recipes`). The dict holds numbers (kept by the zoo) and the full ``"history"``.

================== ========================================================= ===============================
trainer            inner maximisation                                        paper
================== ========================================================= ===============================
:func:`pgd_at`     PGD with random start, optional linear ε warm-up          Madry et al. (2017)
:func:`fgsm_rs_at` one FGSM step of α = 1.25ε from a uniform random start     Wong, Rice & Kolter (2020)
:func:`free_at`    one gradient per step for weights *and* δ, m replays       Shafahi et al. (2019)
:func:`trades`     PGD on KL(p(x) || p(x')); loss CE + β·KL                   Zhang et al. (2019)
:func:`vat_train`  virtual adversarial direction; CE + α·KL, uses unlabelled  Miyato et al. (2017), eq. 5
:func:`one_step_at` FGSM with the true or the predicted label (label leaking) Kurakin et al. (2016)
================== ========================================================= ===============================

Inputs are in [0, 1] pixel space and ε is in pixel units of the chosen norm. The experiments of
``docs/defenses.md`` are in :mod:`advlab.defenses.experiments` (``python -m advlab.defenses.adversarial table``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import train
from advlab.attacks.core import project
from advlab.attacks.engine import Rows, ascend, ball_box, default_step_size, select_rows
from advlab.attacks.fgsm import fgsm
from advlab.attacks.pgd import pgd, pgd_inputs
from advlab.attacks.tensors import as_eps, check_inputs, eval_mode, parse_norm
from advlab.attacks.vat import kl_divergence, vat_direction
from advlab.config import AdvlabError


def _check_eps(eps: float, name: str = "eps") -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not math.isfinite(eps) or eps < 0:
        raise AdvlabError(f"{name} must be a finite number >= 0 (a radius in pixel units), got {eps!r}.")
    return float(eps)


def _check_int(value: int, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise AdvlabError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _steps_per_epoch(n: int, fit_kwargs: dict[str, Any]) -> int:
    batch = int(fit_kwargs.get("batch_size", 128))
    return (n + batch - 1) // batch


def _metrics(hist: train.History, **extra: Any) -> dict[str, Any]:
    """Trainer result: final loss, epochs run, seconds, and the history itself."""
    out: dict[str, Any] = {
        "final_loss": round(hist.loss[-1], 4) if hist.loss else float("nan"),
        "epochs_run": len(hist.loss),
        "fit_seconds": round(hist.seconds, 1),
        "history": hist,
    }
    out.update(extra)
    return out


# ------------------------------------------------------------------------------------------------------- PGD-AT
class _WarmupPerturb:
    """Shared by the ``perturb`` hooks: ε ramps linearly from 0 to ``eps`` over ``warmup_steps`` calls."""

    eps: float
    warmup_steps: int
    calls: int

    def current_eps(self) -> float:
        """ε for the next batch: ``eps · min(1, (calls + 1) / warmup_steps)``."""
        if self.warmup_steps == 0:
            return self.eps
        return self.eps * min(1.0, (self.calls + 1) / self.warmup_steps)


class PGDPerturb(_WarmupPerturb):
    """A :func:`advlab.train.fit` ``perturb`` hook: replace each batch by its PGD adversarial (Madry et al.).

    ``warmup_steps`` > 0 ramps ε linearly from 0 to ``eps`` over that many calls (one call per batch), which helps
    large-ε training (e.g. MNIST at 0.3) escape the constant-prediction solution of the first epochs. A given
    ``step_size`` is scaled along with ε so that the number of steps needed to cross the ball stays the same.

    Attributes:
        calls: how many batches have been perturbed so far.
    """

    def __init__(
        self,
        eps: float,
        norm: str | float = "inf",
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        warmup_steps: int = 0,
        seed: int = 0,
    ) -> None:
        self.eps = _check_eps(eps)
        self.p = parse_norm(norm)
        self.steps = _check_int(steps, "steps")
        self.step_size = None if step_size is None else _check_eps(step_size, "step_size")
        self.random_start = bool(random_start)
        self.warmup_steps = _check_int(warmup_steps, "warmup_steps", 0)
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        eps = self.current_eps()
        self.calls += 1
        if eps == 0:
            return xb
        step = None if self.step_size is None else self.step_size * eps / self.eps
        # the inputs only: the trainer never reads their success flags, so no re-check forward
        return pgd_inputs(model, xb, yb, eps, norm=self.p, steps=self.steps, step_size=step,
                          random_start=self.random_start, generator=self.generator)


def pgd_at(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    norm: str | float = "inf",
    steps: int = 10,
    step_size: float | None = None,
    warmup_epochs: float = 0,
    progress: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """PGD adversarial training (Madry et al., 2017): minimise the loss at PGD's worst case in the ε-ball.

    Args:
        model: trained in place (returns logits for [0, 1] inputs).
        x, y: training images (N, C, H, W) in [0, 1] and labels (N,).
        eps: radius in pixel units of ``norm``; norm: ``"inf"``, 2 or 1.
        steps: PGD steps per batch (training cost ≈ steps + 1 forward/backward passes per batch).
        step_size: PGD step; default ``2.5 · ε / steps``.
        warmup_epochs: ramp ε linearly from 0 over this many (possibly fractional) epochs.
        **fit_kwargs: :func:`advlab.train.fit` arguments (epochs, batch_size, lr, optimizer, shift, seed, ...).

    Returns:
        dict with ``final_loss``, ``epochs_run``, ``fit_seconds`` and ``history`` (:class:`advlab.train.History`).
    """
    warm = int(round(float(warmup_epochs) * _steps_per_epoch(len(x), fit_kwargs)))
    hook = PGDPerturb(eps, norm, steps, step_size, True, warm, seed=int(fit_kwargs.get("seed", 0)))
    hist = train.fit(model, x, y, perturb=hook, progress=progress, **fit_kwargs)
    return _metrics(hist)


# --------------------------------------------------------------------------------------------- FGSM-RS (fast AT)
class FGSMPerturb(_WarmupPerturb):
    """``perturb`` hook of fast adversarial training (Wong et al., 2020), L∞ only.

    δ ~ U(-ε, ε)^d (or 0 without random start), then one step ``δ <- clip_[-ε, ε](δ + α · sign(∇_x L))``, and
    ``x + δ`` clipped into [0, 1]. Wong et al. use α = 1.25ε with the random start; α = ε without it is the FGSM
    training of Goodfellow et al., prone to catastrophic overfitting. ``warmup_steps`` ramps ε (and α with it)
    linearly from 0 over that many batches, as in :class:`PGDPerturb`.
    """

    def __init__(
        self, eps: float, alpha: float | None = None, random_start: bool = True, warmup_steps: int = 0, seed: int = 0
    ) -> None:
        self.eps = _check_eps(eps)
        self.alpha = 1.25 * self.eps if alpha is None else _check_eps(alpha, "alpha")
        self.random_start = bool(random_start)
        self.warmup_steps = _check_int(warmup_steps, "warmup_steps", 0)
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        eps = self.current_eps()
        alpha = self.alpha * eps / self.eps if self.eps > 0 else 0.0
        self.calls += 1
        xb = xb.detach()
        if self.random_start:
            u = torch.rand(xb.shape, generator=self.generator, dtype=xb.dtype).to(xb.device)
            delta = (2 * u - 1) * eps
        else:
            delta = torch.zeros_like(xb)
        x0 = (xb + delta).clamp(0, 1).requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(x0), yb)
            (grad,) = torch.autograd.grad(loss, x0)
        delta = (x0.detach() - xb + alpha * grad.sign()).clamp(-eps, eps)
        return (xb + delta).clamp(0, 1)


def detect_catastrophic_overfitting(
    fgsm_accuracy: list[float],
    pgd_accuracy: list[float],
    collapse: float = 0.1,
    gap: float = 0.3,
    drop: float = 0.0,
) -> int | None:
    """First epoch (0-based) showing catastrophic overfitting (Wong et al., 2020), or None.

    Epoch e ≥ 1 qualifies when PGD accuracy is about zero (``pgd[e] <= collapse``) while FGSM accuracy did not
    fall (``fgsm[e] >= fgsm[e-1] - 0.02``) and exceeds PGD accuracy by at least ``gap``: the model has learned to
    defeat the single-step attack only. ``drop > 0`` additionally requires PGD accuracy to have been ``drop``
    higher at an earlier epoch (Wong et al.'s sudden collapse; with ``drop = 0`` a model whose PGD accuracy never
    rose is flagged as soon as its FGSM accuracy pulls away).

    Args:
        fgsm_accuracy, pgd_accuracy: per-epoch accuracies in [0, 1] on the same held-out batch.
    """
    if len(fgsm_accuracy) != len(pgd_accuracy):
        raise AdvlabError(
            f"fgsm_accuracy has {len(fgsm_accuracy)} epochs but pgd_accuracy has {len(pgd_accuracy)}; they must match."
        )
    for e in range(1, len(pgd_accuracy)):
        f, p = fgsm_accuracy[e], pgd_accuracy[e]
        if (
            p <= collapse
            and (drop <= 0 or max(pgd_accuracy[:e]) >= p + drop)
            and f >= fgsm_accuracy[e - 1] - 0.02
            and f >= p + gap
        ):
            return e
    return None


class RobustnessMonitor:
    """A :func:`advlab.train.fit` ``callback`` recording clean, FGSM and PGD accuracy on a held-out batch.

    Each epoch appends to ``history.extra["clean_accuracy" | "fgsm_accuracy" | "pgd_accuracy"]``. With
    ``early_stop`` it keeps the weights of the epoch with the best PGD accuracy and stops (restoring them) when
    PGD accuracy falls below ``best - stop_drop`` (Wong et al.'s early stopping against catastrophic overfitting).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        eps: float,
        pgd_steps: int = 10,
        early_stop: bool = False,
        stop_drop: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.x, self.y = check_inputs(x, y)
        self.eps = _check_eps(eps)
        self.pgd_steps = _check_int(pgd_steps, "pgd_steps")
        self.early_stop = bool(early_stop)
        self.stop_drop = float(stop_drop)
        self.seed = seed
        self.best = -1.0
        self.best_state: dict[str, Tensor] | None = None

    def measure(self, model: nn.Module) -> tuple[float, float, float]:
        """(clean, FGSM, PGD) accuracy of ``model`` on the held-out batch."""
        was = model.training
        model.eval()
        try:
            dev = next(model.parameters()).device
            x, y = self.x.to(dev), self.y.to(dev)
            clean = train.accuracy(model, x, y)
            f = fgsm(model, x, y, self.eps)
            gen = torch.Generator().manual_seed(self.seed)
            p = pgd(model, x, y, self.eps, steps=self.pgd_steps, generator=gen)
            return clean, 1 - f.success_rate, 1 - p.success_rate
        finally:
            model.train(was)

    def __call__(self, epoch: int, model: nn.Module, hist: train.History) -> bool:
        clean, f, p = self.measure(model)
        for key, value in (("clean_accuracy", clean), ("fgsm_accuracy", f), ("pgd_accuracy", p)):
            hist.extra.setdefault(key, []).append(value)
        if p > self.best:
            self.best = p
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.early_stop and p < self.best - self.stop_drop:
            model.load_state_dict(self.best_state)
            return True
        return False


def _holdout(x: Tensor, y: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split off n random examples: (x_train, y_train, x_held, y_held)."""
    if not 0 < n < len(x):
        raise AdvlabError(f"holdout must be between 1 and {len(x) - 1} examples, got {n}.")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1)).to(x.device)
    return x[order[n:]], y[order[n:]], x[order[:n]], y[order[:n]]


def fgsm_rs_at(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    alpha: float | None = None,
    random_start: bool = True,
    warmup_epochs: float = 0,
    holdout: int = 200,
    monitor_steps: int = 10,
    early_stop: bool = False,
    progress: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Fast adversarial training (Wong et al., 2020): FGSM from a random start, α = 1.25ε, L∞.

    ``holdout`` training examples are set aside (not trained on) to monitor clean / FGSM / PGD-``monitor_steps``
    accuracy after each epoch (:class:`RobustnessMonitor`). With ``early_stop`` training stops when PGD accuracy
    collapses, and the model ends with the weights of the epoch of best held-out PGD accuracy. ``warmup_epochs`` ramps ε
    linearly from 0. ``random_start=False, alpha=eps`` is plain FGSM training.

    Returns:
        metrics dict (see :func:`pgd_at`) plus ``catastrophic_overfitting_epoch`` (0-based epoch from
        :func:`detect_catastrophic_overfitting`, or None), ``stopped_early`` and the last held-out accuracies.
    """
    seed = int(fit_kwargs.get("seed", 0))
    xt, yt, xh, yh = _holdout(x, y, holdout, seed)
    warm = int(round(float(warmup_epochs) * _steps_per_epoch(len(xt), fit_kwargs)))
    hook = FGSMPerturb(eps, alpha, random_start, warm, seed=seed)
    monitor = RobustnessMonitor(xh, yh, eps, pgd_steps=monitor_steps, early_stop=early_stop, seed=seed)
    hist = train.fit(model, xt, yt, perturb=hook, callback=monitor, progress=progress, **fit_kwargs)
    fa, pa = hist.extra["fgsm_accuracy"], hist.extra["pgd_accuracy"]
    if early_stop and monitor.best_state is not None and pa[-1] < monitor.best:
        model.load_state_dict(monitor.best_state)
    return _metrics(
        hist,
        catastrophic_overfitting_epoch=detect_catastrophic_overfitting(fa, pa),
        stopped_early=hist.stopped_early,
        holdout_fgsm_accuracy=round(fa[-1], 4),
        holdout_pgd_accuracy=round(pa[-1], 4),
        holdout_best_pgd_accuracy=round(max(pa), 4),
    )


#: The live catastrophic-overfitting demonstration of ``notebooks/04b_defenses.ipynb`` (10-15 s on 2 CPU cores):
#: FGSM training in Goodfellow et al.'s setting (α = ε, no random start), fine-tuning a copy of the zoo's standard
#: ``mnist-cnn`` on the first ``n`` fast-profile MNIST training images, ``holdout`` of which are set aside for the
#: per-epoch monitor. Within a few epochs the held-out FGSM accuracy pulls far away from PGD-10 accuracy, which stays
#: about 0, and :func:`detect_catastrophic_overfitting` fires, for every seed tried (0-4, each also under
#: ``ADVLAB_JITTER`` 1e-6 and 1e-5; ``tests/test_defenses.py`` runs seeds 0-2). Use as
#: ``fgsm_rs_at(model, x[:n], y[:n], **rest, seed=...)`` with ``n = CO_DEMO["n"]`` and ``rest`` the other keys.
CO_DEMO: dict[str, Any] = dict(
    n=1100, eps=0.3, alpha=0.3, random_start=False, holdout=100, epochs=6, batch_size=32, lr=3e-3, optimizer="adam",
    weight_decay=0.0, schedule="constant", shift=1,
)


# ------------------------------------------------------------------------------------------------------ free AT
class FreePerturb:
    """``perturb`` hook of free adversarial training (Shafahi et al., 2019), L∞, for :func:`advlab.train.fit` with
    ``replays``: it adds a perturbation δ to each replay of a batch and updates δ with the input gradient of the very
    backward pass that trained the weights (:meth:`reuse_gradient`): ``δ <- clip_[-ε, ε](δ + step · sign(∇_δ L))``.

    δ persists across replays and across minibatches (it is only resized when a batch is larger), as in the paper.
    Before use it is projected into the ball ∩ box of the batch (``x + δ ∈ [0, 1]``), so that no coordinate sits in
    the clipped region, where its gradient would be 0 and it would stay stuck (e.g. δ = -ε on a black background).
    ``warmup_steps`` > 0 ramps ε and the step linearly from 0 over that many calls (one call per replay).
    """

    def __init__(self, eps: float, step_size: float | None = None, warmup_steps: float = 0) -> None:
        self.eps = _check_eps(eps)
        self.step_size = self.eps if step_size is None else _check_eps(step_size, "step_size")
        if not math.isfinite(warmup_steps) or warmup_steps < 0:
            raise AdvlabError(f"warmup_steps must be a finite number >= 0, got {warmup_steps!r}.")
        self.warmup_steps = float(warmup_steps)
        self.calls = 0
        self.delta: Tensor | None = None
        self._last: tuple[Tensor, float, float] | None = None  # (the δ used, its ε, its step) awaiting a gradient

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        ramp = min(1.0, (self.calls + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        e, a = self.eps * ramp, self.step_size * ramp
        self.calls += 1
        if self.delta is None or self.delta.shape[0] < len(xb):
            self.delta = torch.zeros_like(xb)
        d = (xb + self.delta[: len(xb)].clamp(-e, e)).clamp(0, 1) - xb
        self._last = (d, e, a)
        return xb + d

    @torch.no_grad()
    def reuse_gradient(self, grad: Tensor) -> None:
        """Take one signed step on δ with ``grad``, the loss's gradient with respect to the batch :meth:`__call__`
        returned last (what :func:`advlab.train.fit` hands a hook that has this method)."""
        d, e, a = self._last
        self.delta[: len(d)] = (d + a * grad.sign()).clamp(-e, e)


def free_at(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    replays: int = 4,
    step_size: float | None = None,
    warmup_epochs: float = 0,
    progress: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """"Free" adversarial training (Shafahi et al., 2019), L∞: :func:`advlab.train.fit` with ``replays`` and
    :class:`FreePerturb`.

    Each minibatch is replayed ``replays`` (m) times; every replay does one forward/backward pass that gives the
    gradient for the weights (an optimiser step) *and* for the perturbation δ. ``epochs`` counts gradient
    computations as in standard training: the data is passed ``ceil(epochs / m)`` times, so the cost matches
    ``epochs`` epochs of natural training.

    Args:
        step_size: δ step, default ε (Shafahi et al.); a smaller step lets δ build up over the replays like PGD
            iterations (the full ε step makes every update an FGSM step, prone to catastrophic overfitting).
        warmup_epochs: ramp ε and the step linearly from 0 over this many epochs (counted like ``epochs``).
        **fit_kwargs: :func:`advlab.train.fit` arguments (epochs, batch_size, lr, optimizer, shift, ema, seed, ...).

    Returns:
        metrics dict (see :func:`pgd_at`) plus ``passes``, the passes over the data.
    """
    m = _check_int(replays, "replays")
    hook = FreePerturb(eps, step_size, float(warmup_epochs) * _steps_per_epoch(len(x), fit_kwargs))
    hist = train.fit(model, x, y, perturb=hook, replays=m, progress=progress, **fit_kwargs)
    return _metrics(hist, passes=len(hist.loss))


# ------------------------------------------------------------------------------------------------------- TRADES
def trades_adversary(
    model: nn.Module,
    x: Tensor,
    eps: float,
    norm: str | float = "inf",
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TRADES' inner maximisation: PGD on ``KL(p(·|x) || p(·|x'))`` over x' in the ε-ball ∩ [0, 1] (N, *).

    Starts at ``x + 0.001·N(0, I)`` (Zhang et al.), steps along the steepest-ascent direction of the norm with
    ``step_size`` (default ``2.5 · ε / steps``) and projects exactly. Gradients are w.r.t. x' only; the model is used
    in eval mode and put back in its previous mode.
    """
    p = parse_norm(norm)
    eps_t = as_eps(_check_eps(eps), x)
    steps = _check_int(steps, "steps", 0)
    alpha = default_step_size(eps_t, steps) if step_size is None else as_eps(step_size, x)
    x = x.detach()
    with eval_mode(model, warn=False):  # TRADES calls it on a model in train mode on purpose
        with torch.no_grad():
            logits = model(x)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        z0 = x + project(0.001 * noise, x, eps_t, p)

        def objective(z: Tensor, rows: Rows) -> tuple[Tensor, None]:
            return kl_divergence(select_rows(logits, rows), model(z)), None

        run = ascend(objective, z0, ball_box(x, eps_t, p), steps, alpha, p, keep_last=True)
    return run.z.clamp(0, 1).detach()


def trades_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    beta: float = 6.0,
    eps: float = 0.3,
    norm: str | float = "inf",
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TRADES objective (Zhang et al., 2019): ``CE(f(x), y) + β · mean_i KL(p(·|x_i) || p(·|x'_i))``.

    x' comes from :func:`trades_adversary`; gradients flow through both the clean and the adversarial logits.
    With ``beta = 0`` it is exactly the cross-entropy. Returns a scalar.
    """
    if not math.isfinite(beta) or beta < 0:
        raise AdvlabError(f"beta must be a finite number >= 0 (the robustness weight), got {beta!r}.")
    x_adv = trades_adversary(model, x, eps, norm, steps, step_size, generator)
    logits = model(x)
    robust = kl_divergence(logits, model(x_adv)).mean()
    return F.cross_entropy(logits, y) + beta * robust


def trades(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    beta: float = 6.0,
    norm: str | float = "inf",
    steps: int = 10,
    step_size: float | None = None,
    progress: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Train with :func:`trades_loss` (β trades clean accuracy for smoothness; Zhang et al. use β = 6)."""
    gen = torch.Generator().manual_seed(int(fit_kwargs.get("seed", 0)))

    def loss_fn(m: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        return trades_loss(m, xb, yb, beta, eps, norm, steps, step_size, gen)

    hist = train.fit(model, x, y, loss_fn=loss_fn, progress=progress, **fit_kwargs)
    return _metrics(hist)


# ---------------------------------------------------------------------------------------------------------- VAT
def vat_loss(
    model: nn.Module,
    x: Tensor,
    eps: float = 2.0,
    xi: float = 1e-6,
    power_iterations: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Local distributional smoothness (survey eq. 5): ``mean_i KL(p(·|x_i) || p(·|x_i + ε d_i))``, a scalar.

    d is the virtual adversarial direction of :func:`advlab.attacks.vat_direction` (unit L2, no labels needed) and
    ε an L2 radius in pixel units; ``x + εd`` is clipped to [0, 1]. The clean distribution is a fixed target
    (no gradient through it), as in Miyato et al.
    """
    eps = _check_eps(eps)
    d = vat_direction(model, x, xi=xi, power_iterations=power_iterations, generator=generator)
    with torch.no_grad():
        target = model(x)
    return kl_divergence(target, model((x + eps * d).clamp(0, 1))).mean()


def vat_train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_unlabelled: Tensor | None = None,
    eps: float = 2.0,
    alpha: float = 1.0,
    unlabelled_batch: int = 128,
    xi: float = 1e-6,
    progress: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Virtual adversarial training (Miyato et al., 2017): ``CE on labelled + α · VAT loss on labelled ∪ unlabelled``.

    Epochs run over the labelled set (x, y); each step also draws ``unlabelled_batch`` images of
    ``x_unlabelled`` (with replacement), so a few labels plus many unlabelled images give a semi-supervised
    learner. Without ``x_unlabelled`` the smoothness term uses the labelled batch only.
    """
    if not math.isfinite(alpha) or alpha < 0:
        raise AdvlabError(f"alpha must be a finite number >= 0, got {alpha!r}.")
    gen = torch.Generator().manual_seed(int(fit_kwargs.get("seed", 0)))
    if x_unlabelled is not None:
        x_unlabelled, _ = check_inputs(x_unlabelled)

    def loss_fn(m: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        xs = xb
        if x_unlabelled is not None:
            idx = torch.randint(len(x_unlabelled), (unlabelled_batch,), generator=gen)
            xs = torch.cat([xb, x_unlabelled[idx.to(x_unlabelled.device)].to(xb.device)])
        return F.cross_entropy(m(xb), yb) + alpha * vat_loss(m, xs, eps, xi, generator=gen)

    hist = train.fit(model, x, y, loss_fn=loss_fn, progress=progress, **fit_kwargs)
    return _metrics(hist)


# ------------------------------------------------------------------------------------------------ label leaking
class OneStepPerturb:
    """``perturb`` hook of Kurakin et al.'s one-step adversarial training (L∞ FGSM, no random start).

    A fraction ``mix`` of each batch is replaced by FGSM examples with a per-sample ε ~ U(0, eps) crafted with
    the true label (``label="true"``: prone to label leaking) or with the model's own prediction
    (``label="predicted"``: Kurakin et al.'s fix).
    """

    def __init__(self, eps: float, label: str = "true", mix: float = 0.5, seed: int = 0) -> None:
        if label not in ("true", "predicted"):
            raise AdvlabError(f"label must be 'true' or 'predicted', got {label!r}.")
        if not 0 < mix <= 1:
            raise AdvlabError(f"mix is the adversarial fraction of each batch, in (0, 1]; got {mix!r}.")
        self.eps, self.label, self.mix = _check_eps(eps), label, float(mix)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        k = max(1, int(round(self.mix * len(xb))))
        eps = self.eps * torch.rand(k, generator=self.generator).to(xb.device)
        if self.label == "predicted":
            with torch.no_grad():
                target = model(xb[:k]).argmax(1)
        else:
            target = yb[:k]
        out = xb.clone()
        out[:k] = fgsm(model, xb[:k], target, eps).x_adv
        return out


def one_step_at(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    label: str = "true",
    mix: float = 0.5,
    progress: bool = True,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """One-step adversarial training with :class:`OneStepPerturb` (true or predicted label)."""
    hook = OneStepPerturb(eps, label, mix, seed=int(fit_kwargs.get("seed", 0)))
    hist = train.fit(model, x, y, perturb=hook, progress=progress, **fit_kwargs)
    return _metrics(hist)


def label_leaking_eval(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> dict[str, float]:
    """Accuracy on clean inputs and on one-step (FGSM, L∞) adversarial inputs crafted with the true label and with
    the model's predicted label.

    Label leaking (Kurakin et al., 2016) shows as ``fgsm_true_label > clean``: the perturbation made from the
    true label carries information about it, which the model has learned to read.
    """
    x, y = check_inputs(x, y)
    model.eval()
    pred = train.labels_of(model, x).to(y.device)
    acc = (pred == y).float().mean().item()
    adv_true = fgsm(model, x, y, eps).x_adv
    adv_pred = fgsm(model, x, pred, eps).x_adv
    return {
        "clean": round(acc, 4),
        "fgsm_true_label": round(train.accuracy(model, adv_true, y), 4),
        "fgsm_predicted_label": round(train.accuracy(model, adv_pred, y), 4),
    }


_MOVED_TO_EXPERIMENTS = ("TABLE_MODELS", "table", "overfitting_experiment", "leaking_experiment", "vat_experiment",
                         "data_size_experiment")


def __getattr__(name: str) -> Any:
    # The experiments moved to advlab.defenses.experiments (they use these trainers, not the other way round); the
    # old names still answer here (notebook 05 cites advlab.defenses.adversarial.data_size_experiment), lazily.
    if name in _MOVED_TO_EXPERIMENTS:
        from advlab.defenses import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    # ``python -m advlab.defenses.adversarial table|overfitting|leaking|vat``, the command docs/defenses.md and the
    # notebooks cite: the command line lives in advlab.defenses.cli (it runs the experiments, which use these trainers).
    from advlab.defenses.cli import main

    raise SystemExit(main())
