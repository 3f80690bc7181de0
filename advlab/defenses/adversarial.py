"""Adversarial training: train on the worst case in the ball instead of the clean point (survey eq. 8).

Every trainer takes ``(model, x, y, ..., **fit_kwargs)``, trains ``model`` in place with
:func:`advlab.train.fit` (or, for free AT, its own loop with the same schedule) and returns a dict of metrics,
so it can be a zoo ``"trainer"``. The dict holds numbers (kept by the zoo) and the full ``"history"``.

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

Inputs are in [0, 1] pixel space and ε is in pixel units of the chosen norm. The table of
``docs/defenses.md`` is reproduced by ``python -m advlab.defenses.adversarial table``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import config, train
from advlab.attacks.core import project
from advlab.attacks.engine import ascend, default_step_size
from advlab.attacks.fgsm import fgsm
from advlab.attacks.pgd import pgd
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
        res = pgd(model, xb, yb, eps, norm=self.p, steps=self.steps, step_size=step,
                  random_start=self.random_start, generator=self.generator)
        return res.x_adv


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
@config.isolated
def free_at(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    replays: int = 4,
    step_size: float | None = None,
    warmup_epochs: float = 0,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.05,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    schedule: str = "onecycle",
    shift: int = 0,
    ema: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """"Free" adversarial training (Shafahi et al., 2019), L∞.

    Each minibatch is replayed ``replays`` (m) times; every replay does one forward/backward pass that gives the
    gradient for the weights (an optimiser step) *and* for the perturbation δ, which is updated by
    ``δ <- clip_[-ε, ε](δ + step_size · sign(∇_δ L))`` and projected into the box (``x + δ ∈ [0, 1]``) before use.
    δ persists across replays and across minibatches (it is only resized when a batch is smaller), as in the paper.
    ``epochs`` counts gradient computations as in standard training: the data is passed ``ceil(epochs / m)`` times,
    so the cost matches ``epochs`` epochs of natural training.

    Args:
        step_size: δ step, default ε (Shafahi et al.); a smaller step lets δ build up over the replays like PGD
            iterations (the full ε step makes every update an FGSM step, prone to catastrophic overfitting).
        warmup_epochs: ramp ε and the step linearly from 0 over this many epochs (counted like ``epochs``).
        ema: as :func:`advlab.train.fit` (an exponential moving average of the weights replaces them at the end).
        other arguments: as :func:`advlab.train.fit`.
    """
    eps = _check_eps(eps)
    m = _check_int(replays, "replays")
    alpha = eps if step_size is None else _check_eps(step_size, "step_size")
    if len(x) != len(y):
        raise AdvlabError(f"x has {len(x)} examples but y has {len(y)}; they must match.")
    dev = torch.device(device) if device is not None else config.device()
    config.seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    config.jitter_weights(model.to(dev))  # ADVLAB_JITTER (a test switch; no-op by default)
    opt = train.make_optimizer(model, optimizer, lr, weight_decay)
    average = train.WeightAverage(model, ema) if ema else None
    passes = max(1, math.ceil(epochs / m))
    steps_per_pass = (len(x) + batch_size - 1) // batch_size
    total = passes * steps_per_pass * m
    warm = float(warmup_epochs) * steps_per_pass
    hist = train.History()
    start = time.perf_counter()
    bar = train._progress(total, progress, desc="free-AT")
    delta: Tensor | None = None
    step = 0
    for _ in range(passes):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        loss_sum, correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for i in range(steps_per_pass):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if shift:
                xb = train.augment_shift(xb, shift, gen)
            if delta is None or delta.shape[0] < len(xb):
                delta = torch.zeros((batch_size, *xb.shape[1:]), device=dev, dtype=xb.dtype)
            for _ in range(m):
                ramp = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
                e, a = eps * ramp, alpha * ramp
                # Project δ onto the ball ∩ box of this batch, so that no coordinate sits in the clipped region
                # (where its gradient would be 0 and it would stay stuck, e.g. δ = -ε on a black background).
                d = ((xb + delta[: len(xb)].clamp(-e, e)).clamp(0, 1) - xb).requires_grad_(True)
                logits = model(xb + d)
                loss = F.cross_entropy(logits, yb)
                for group in opt.param_groups:
                    group["lr"] = train.lr_at(schedule, lr, step / max(1, total))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if average is not None:
                    average.update(model)
                with torch.no_grad():
                    delta[: len(xb)] = (d + a * d.grad.sign()).clamp(-e, e)
                step += 1
                loss_sum += loss.detach()
                correct += (logits.argmax(1) == yb).sum()
                bar.update(1)
        hist.loss.append(float(loss_sum) / (steps_per_pass * m))
        hist.train_accuracy.append(float(correct) / (len(x) * m))
        hist.lr.append(opt.param_groups[0]["lr"])
    bar.close()
    if average is not None:
        average.copy_to(model)
    model.eval()
    hist.seconds = time.perf_counter() - start
    return _metrics(hist, passes=passes)


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

        def objective(z: Tensor, rows: Tensor | None) -> tuple[Tensor, None]:
            return kl_divergence(logits, model(z)), None

        def feasible(z: Tensor, rows: Tensor | None) -> Tensor:
            return x + project(z - x, x, eps_t, p)

        run = ascend(objective, z0, feasible, steps, alpha, p, keep_last=True)
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


# ----------------------------------------------------------------------------------------------------- metrics
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
    """Accuracy under PGD (cross-entropy, random start, ``restarts`` runs), via :func:`advlab.eval.robust_accuracy`.

    A zoo ``"eval"`` metric: rounded to 4 digits.
    """
    from advlab.eval import robust_accuracy

    gen = torch.Generator().manual_seed(seed)
    attacks = {f"pgd-{steps}": lambda m, xa, ya, e, p: pgd(m, xa, ya, e, norm=p, steps=steps, restarts=restarts,
                                                          generator=gen)}
    dev = next(model.parameters()).device
    rep = robust_accuracy(model, x.to(dev), y.to(dev), eps, norm, attacks=attacks)
    return round(rep.robust_accuracy, 4)


# -------------------------------------------------------------------------------------------------- experiments
TABLE_MODELS = (
    ("standard", "mnist-cnn", 0.3, "inf"),
    ("PGD-AT", "mnist-cnn-pgd", 0.3, "inf"),
    ("FGSM-RS", "mnist-cnn-fgsm-rs", 0.3, "inf"),
    ("free AT", "mnist-cnn-free", 0.3, "inf"),
    ("TRADES", "mnist-cnn-trades", 0.3, "inf"),
    ("standard (L2)", "mnist-cnn", 2.0, 2),
    ("PGD-AT L2", "mnist-cnn-l2", 2.0, 2),
)


def table(n: int = 1000, steps: int = 40, restarts: int = 1, strong: bool = False, seed: int = 0) -> str:
    """Markdown table of clean and robust accuracy of the zoo's defended MNIST models on the first n test images.

    Robust accuracy is :func:`pgd_accuracy` (PGD on cross-entropy, ``steps`` steps, ``restarts`` random starts).
    ``strong=True`` instead takes the AutoAttack-grade default of :func:`advlab.eval.robust_accuracy` (APGD-CE,
    APGD-T, Square; per-sample worst case): the checkpoint's record (``autoattack_grade``, computed by
    :func:`advlab.eval.robustness_record` when the zoo built or re-evaluated it) where it was measured on these
    images at this radius, else computed now. Every accuracy comes with its 95 % Clopper–Pearson interval.
    """
    from advlab import data, zoo
    from advlab.eval import accuracy_interval, robustness_record

    x, y, _ = data.load("mnist", "test", n=n)
    dev = config.device()
    x, y = x.to(dev), y.to(dev)
    n = len(y)
    head = "AutoAttack-grade: APGD-CE → APGD-T → Square" if strong else f"PGD-{steps}, {restarts} restart(s)"

    def with_interval(acc: float) -> str:
        low, high = accuracy_interval(round(acc * n), n)
        return f"{acc:.1%} ({low:.1%}–{high:.1%})"

    lines = [
        f"| Model | zoo name | ε (norm) | clean accuracy (95 % interval) | robust accuracy, {head} (95 % interval) "
        "| training time |",
        "|---|---|---|---|---|---|",
    ]
    full_test = len(data.load("mnist", "test")[1])
    for label, name, eps, norm in TABLE_MODELS:
        model = zoo.load(name)
        info = zoo.info(name) or {}
        if strong:
            rec = info.get("metrics", {}).get("autoattack_grade")
            same = (rec is not None and rec["n"] == n == full_test and rec["eps"] == eps and seed == 0
                    and rec["norm"] == ("Linf" if norm == "inf" else f"L{norm:g}"))
            robust = (rec if same else robustness_record(model, x, y, eps, norm, seed=seed))["accuracy"]
        else:
            robust = pgd_accuracy(model, x, y, eps, norm, steps=steps, restarts=restarts, seed=seed)
        secs = info.get("metrics", {}).get("train_seconds", float("nan"))
        lines.append(
            f"| {label} | `{name}` | {eps:g} (L{'∞' if norm == 'inf' else norm}) | "
            f"{with_interval(train.accuracy(model, x, y))} | {with_interval(robust)} | {secs:.0f} s |"
        )
    return "\n".join(lines)


def _mnist(profile_n: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from advlab import data

    x, y, _ = data.load("mnist", "train")
    xt, yt, _ = data.load("mnist", "test", n=profile_n)
    dev = config.device()
    return x.to(dev), y.to(dev), xt.to(dev), yt.to(dev)


@config.isolated
def overfitting_experiment(
    eps: float = 0.3, epochs: int = 15, settings: tuple[tuple[str, float, bool], ...] | None = None, seed: int = 0,
) -> list[dict[str, Any]]:
    """FGSM training without ε warm-up or early stopping, with and without random start: per-epoch held-out FGSM /
    PGD-10 accuracy, the detected catastrophic-overfitting epoch and the final test clean and PGD-40 accuracy
    (1,000 images). Same optimiser settings as the zoo's ``mnist-cnn-fgsm-rs`` otherwise."""
    from advlab import models

    x, y, xt, yt = _mnist(1000)
    settings = settings or (("FGSM-RS α=1.25ε", 1.25 * eps, True), ("FGSM α=ε, zero init", eps, False))
    rows = []
    for name, alpha, rs in settings:
        config.seed_everything(seed)
        model = models.mnist_net()
        out = fgsm_rs_at(model, x, y, eps, alpha=alpha, random_start=rs, epochs=epochs, batch_size=128, lr=2e-3,
                         optimizer="adam", weight_decay=0.0, shift=1, seed=seed, progress=False)
        h = out["history"].extra
        rows.append({
            "setting": name,
            "fgsm_by_epoch": [round(v, 3) for v in h["fgsm_accuracy"]],
            "pgd_by_epoch": [round(v, 3) for v in h["pgd_accuracy"]],
            "co_epoch": out["catastrophic_overfitting_epoch"],
            "test_clean": round(train.accuracy(model, xt, yt), 4),
            "test_pgd40": pgd_accuracy(model, xt, yt, eps, steps=40),
        })
    return rows


@config.isolated
def leaking_experiment(
    eps: float = 0.3, epochs: int = 10, mix: float = 0.5, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Train one-step AT with true and with predicted labels; :func:`label_leaking_eval` of each on the test set."""
    from advlab import models

    x, y, xt, yt = _mnist(1000)
    out = {}
    for label in ("true", "predicted"):
        config.seed_everything(seed)
        model = models.mnist_net()
        one_step_at(model, x, y, eps, label=label, mix=mix, epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam",
                    weight_decay=0.0, seed=seed, progress=False)
        out[f"{label}-label model"] = label_leaking_eval(model, xt, yt, eps)
    return out


@config.isolated
def vat_experiment(
    labels: int = 100, eps: float = 2.0, alpha: float = 1.0, epochs: int = 60, seed: int = 0
) -> dict[str, float]:
    """Semi-supervised MNIST: ``labels`` labelled training images (class-balanced) and the rest of the fast
    training set unlabelled; test accuracy of supervised-only training vs VAT, same steps and seed."""
    from advlab import data, models
    from advlab.data.splits import stratified_subset

    x, y, xt, yt = _mnist(1000)
    idx = stratified_subset(y.cpu(), labels, seed=seed).to(x.device)
    mask = torch.ones(len(x), dtype=torch.bool, device=x.device)
    mask[idx] = False
    xl, yl, xu = x[idx], y[idx], x[mask]
    fit = {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "shift": 1,
           "seed": seed, "progress": False}
    del data
    config.seed_everything(seed)
    sup = models.mnist_net()
    train.fit(sup, xl, yl, **fit)
    config.seed_everything(seed)
    semi = models.mnist_net()
    vat_train(semi, xl, yl, xu, eps=eps, alpha=alpha, **fit)
    return {"labels": labels, "supervised_only": round(train.accuracy(sup, xt, yt), 4),
            "vat": round(train.accuracy(semi, xt, yt), 4)}


@config.isolated
def data_size_experiment(
    sizes: tuple[int, ...] = (500, 1000, 2000, 4000), eps: float = 0.3, n_train_eval: int = 500, seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Robust generalization needs more data (Schmidt et al., 2018): standard training and PGD-AT on growing subsets.

    For each size n (the first n fast-profile training images), trains ``mnist-cnn`` and ``mnist-cnn-pgd`` with
    their zoo recipes, the number of epochs scaled by ``4000 / n`` so that every run makes the same number of
    optimiser steps (a small set is not simply under-trained). Measures, with the AutoAttack-grade default of
    :func:`advlab.eval.robust_accuracy` at L∞ ``eps``: clean and robust accuracy on the 1,000 fast test images, and
    on the first ``n_train_eval`` of the n training images (robust *training* accuracy: the gap between the two is
    the robust generalization gap).

    Returns:
        ``{"sizes", "eps", "n_test", "n_train_eval", "standard": {...}, "pgd-at": {...}}``, each method holding lists
        (one entry per size) ``clean_test``, ``robust_test``, ``clean_train``, ``robust_train``, ``seconds``.
    """
    from tqdm.auto import tqdm

    from advlab import data, models, zoo
    from advlab.eval import robust_accuracy

    x, y, _ = data.load("mnist", "train", profile="fast")
    xt, yt, _ = data.load("mnist", "test", profile="fast")
    dev = config.device()
    recipes = {"standard": ("mnist-cnn", None), "pgd-at": ("mnist-cnn-pgd", pgd_at)}
    out: dict[str, Any] = {"sizes": list(sizes), "eps": eps, "n_test": len(yt), "n_train_eval": n_train_eval}
    bar = tqdm(total=len(sizes) * len(recipes), desc="data-size sweep", disable=not progress)
    for method, (name, trainer) in recipes.items():
        rows: dict[str, list[float]] = {k: [] for k in ("clean_test", "robust_test", "clean_train", "robust_train",
                                                        "seconds")}
        for n in sizes:
            if not 0 < n <= len(x):
                raise AdvlabError(f"sizes must lie in 1..{len(x)} (the fast training set), got {n}.")
            kwargs = dict(zoo.recipe(name)["fit"]["fast"])
            scale = len(x) / n
            kwargs["epochs"] = round(kwargs["epochs"] * scale)
            if "warmup_epochs" in kwargs:
                kwargs["warmup_epochs"] = kwargs["warmup_epochs"] * scale
            config.seed_everything(seed)
            arch, arch_kwargs = zoo.architecture(name, "fast")
            model = models.build(arch, **arch_kwargs)
            start = time.perf_counter()
            if trainer is None:
                train.fit(model, x[:n], y[:n], seed=seed, progress=False, **kwargs)
            else:
                trainer(model, x[:n], y[:n], seed=seed, progress=False, **kwargs)
            rows["seconds"].append(round(time.perf_counter() - start, 1))
            model = model.to(dev).eval()
            k = min(n, n_train_eval)
            for split, (xs, ys) in (("test", (xt, yt)), ("train", (x[:k], y[:k]))):
                rep = robust_accuracy(model, xs.to(dev), ys.to(dev), eps, "inf", seed=seed)
                rows[f"clean_{split}"].append(rep.clean_accuracy)
                rows[f"robust_{split}"].append(rep.robust_accuracy)
            bar.update(1)
        out[method] = rows
    bar.close()
    return out


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.defenses.adversarial",
                                     description="Reproduce the numbers of docs/defenses.md.")
    parser.add_argument("what", choices=["table", "overfitting", "leaking", "vat"])
    parser.add_argument("--n", type=int, default=1000, help="test images for the table")
    parser.add_argument("--strong", action="store_true",
                        help="table: the AutoAttack-grade default of advlab.eval.robust_accuracy instead of PGD-40")
    parser.add_argument("--eps", type=float, default=0.3, help="leaking: L∞ radius of training and evaluation")
    parser.add_argument("--mix", type=float, default=0.5, help="leaking: adversarial fraction of each batch")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.what == "table":
        print(table(args.n, strong=args.strong))
    elif args.what == "overfitting":
        for row in overfitting_experiment():
            print(row)
    elif args.what == "leaking":
        for name, row in leaking_experiment(args.eps, mix=args.mix).items():
            print(name, row)
    else:
        print(vat_experiment())
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
