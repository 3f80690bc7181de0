"""Projected gradient descent (Madry et al., 2017) and the basic iterative method (Kurakin et al., 2016)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks.core import Objective, attack_loss, check_loss, is_success, per_sample
from advlab.attacks.core import random_start as _random_start
from advlab.attacks.engine import Rows, ascend, ball_box, better, default_step_size, select_rows
from advlab.attacks.result import AttackResult, checked_inputs, finish
from advlab.attacks.tensors import (
    as_eps,
    check_inputs,
    check_logits,
    eval_mode,
    logits_of,
    on_model_device,
    parse_norm,
)
from advlab.config import AdvlabError


def _run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    alpha: Tensor,
    p: float,
    steps: int,
    start: bool,
    targeted: bool,
    loss: str | Objective,
    l1_fraction: float,
    generator: torch.Generator | None,
    early_stop: bool = False,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One PGD run on a batch with the engine (:func:`advlab.attacks.engine.ascend`) in pixel space; returns the
    best iterate (N, *), its objective (N,) and success (N,)."""
    if p == math.inf:  # the L∞ ball ∩ box is a box: its projection is one clamp to bounds computed once
        lo, hi = (x - per_sample(eps, x)).clamp_(min=0), (x + per_sample(eps, x)).clamp_(max=1)

        def feasible(z: Tensor, rows: Rows) -> Tensor:  # in place: z is the engine's buffer
            return torch.clamp(z, select_rows(lo, rows), select_rows(hi, rows), out=z)
    else:
        feasible = ball_box(x, eps, p)

    def objective(z: Tensor, rows: Rows) -> tuple[Tensor, Tensor]:
        yr = select_rows(y, rows)
        logits = model(z)
        return attack_loss(logits, yr, loss, targeted), is_success(logits.detach(), yr, targeted)

    z0 = x + _random_start(x, eps, p, generator) if start else x
    out = ascend(objective, z0, feasible, steps, alpha, p, early_stop=early_stop, l1_fraction=l1_fraction, chunk=chunk)
    return out.z, out.value, out.success


def _search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float,
    steps: int,
    step_size: float | Tensor | None,
    random_start: bool,
    restarts: int,
    targeted: bool,
    loss: str | Objective,
    l1_fraction: float,
    generator: torch.Generator | None,
    early_stop: bool,
    chunk: int | None,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """:func:`pgd`'s work without its re-check: the checked inputs, labels, each sample's best iterate (N, *) in
    [0, 1] and the norm's p. A training hook needs only the adversarial inputs (:func:`pgd_inputs`)."""
    p = parse_norm(norm)
    x, y = check_inputs(x, y)
    eps_t = as_eps(eps, x)
    loss = check_loss(loss)
    if int(steps) != steps or steps < 0:
        raise AdvlabError(f"steps must be a non-negative integer, got {steps!r}.")
    if int(restarts) != restarts or restarts < 1:
        raise AdvlabError(f"restarts must be an integer >= 1, got {restarts!r}.")
    if restarts > 1 and not random_start:
        raise AdvlabError("restarts > 1 repeats the same deterministic run without a random start; "
                          "set random_start=True.")
    if not 0 < l1_fraction <= 1:
        raise AdvlabError(f"l1_fraction must lie in (0, 1], got {l1_fraction!r}.")
    if step_size is None:
        alpha = default_step_size(eps_t, steps)
    else:
        alpha = torch.as_tensor(step_size, dtype=x.dtype, device=x.device)
        if alpha.numel() not in (1, len(x)) or not bool((alpha > 0).all()):
            raise AdvlabError(f"step_size must be > 0, a scalar or one per sample; got {step_size!r}.")
        alpha = alpha.flatten().expand(len(x)).clone() if alpha.numel() == 1 else alpha.flatten()
    with eval_mode(model):
        with torch.no_grad():  # shape, label range and softmax checks on one input: cheap, before any loss
            check_logits(logits_of(model, x[:1]), y)
        # no clean forward: without a random start the first iterate is x itself and is evaluated in the loop;
        # with one, x is not an iterate of the run (Madry et al.), and ε = 0 makes the start x again
        best_x = x.clone()
        best_loss = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
        best_succ = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for r in range(int(restarts)):
            idx = torch.arange(len(x), device=x.device) if r == 0 else (~best_succ).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xr, lr, sr = _run(
                model, x[idx], y[idx], eps_t[idx], alpha[idx], p, int(steps), random_start, targeted, loss,
                l1_fraction, generator, early_stop, chunk,
            )
            upd = better(lr, sr, best_loss[idx], best_succ[idx])
            best_x[idx[upd]] = xr[upd]
            best_loss[idx[upd]] = lr[upd]
            best_succ[idx] = best_succ[idx] | sr
    return x, y, checked_inputs(best_x), p


@on_model_device
def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    steps: int = 40,
    step_size: float | Tensor | None = None,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    loss: str | Objective = "ce",
    l1_fraction: float = 0.01,
    generator: torch.Generator | None = None,
    early_stop: bool = False,
    chunk: int | None = None,
) -> AttackResult:
    """Projected gradient ascent on the loss inside ``B_ε(x) ∩ [0, 1]^d`` (eq. 7 of the survey, for any Lp).

    Each step moves by ``step_size`` along the steepest-ascent direction of the norm (sign for L∞, normalised gradient
    for L2, sparse top-k for L1, see :func:`advlab.attacks.core.steepest_direction`) and projects exactly back onto
    the ball ∩ box (:func:`advlab.attacks.core.project`). Per sample the best iterate is kept (a successful one
    first, then the highest objective), so more steps can never make the attack weaker.

    Args:
        model: returns logits (N, K) for inputs in [0, 1]; attacked in eval mode with frozen parameters.
        x: (N, *) inputs in [0, 1].
        y: (N,) true labels, or target labels when ``targeted``.
        eps: radius in pixel units, a scalar or a (N,) tensor; 0 returns x unchanged.
        norm: ``"inf"``, ``2`` or ``1``.
        steps: gradient steps per restart.
        step_size: absolute step (scalar or (N,)); default ``2.5 · eps / steps``.
        random_start: start uniformly in the ball (Madry's PGD); ``False`` is BIM / I-FGSM, whose first
            iterate is x itself. The candidates for the best iterate are the iterates of the runs: with a random
            start x is not one of them (an input that is already misclassified may come back as a failure if no
            iterate near it is; :func:`advlab.eval.robust_accuracy` counts such inputs as broken anyway).
        restarts: number of runs; runs after the first only attack samples that are still not broken.
        targeted: make the model predict y instead of anything but y.
        loss: ``"ce"`` (cross-entropy), ``"margin"`` (CW: ``max_{j≠y} z_j - z_y``), ``"dlr"`` (Croce & Hein), or a
            callable objective ``fn(logits, y) -> (N,)`` to maximise (:data:`advlab.attacks.core.Objective`).
        l1_fraction: fraction of coordinates updated per L1 step.
        generator: optional ``torch.Generator`` for the random starts (reproducibility).
        early_stop: stop attacking a sample at its first success (it keeps that iterate). Robust accuracy is
            the same and a weak model costs far fewer steps; leave it off to maximise the loss (eq. 1), e.g.
            when crafting examples for adversarial training.
        chunk: samples per forward/backward pass: ``None`` is the device's default
            (:func:`advlab.attacks.tensors.chunk_size`: at most 334 MNIST images on a CPU, the whole batch on a GPU),
            ``0`` the whole batch. It changes the speed, not the result: the random starts are drawn for the whole
            batch first.

    Returns:
        :class:`~advlab.attacks.result.AttackResult` re-checked in eval mode.
    """
    x, y, x_adv, p = _search(model, x, y, eps, norm, steps, step_size, random_start, restarts, targeted, loss,
                             l1_fraction, generator, early_stop, chunk)
    with eval_mode(model, warn=False):
        return finish(model, x, x_adv, y, p, targeted, chunk)


@on_model_device
def pgd_inputs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    steps: int = 40,
    step_size: float | Tensor | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The adversarial inputs (N, *) of :func:`pgd` (the same tensor as its ``x_adv``), without the eval-mode forward
    that re-checks their predictions: what an adversarial-training hook needs (it trains on them and never reads
    ``success``). Arguments as in :func:`pgd`."""
    return _search(model, x, y, eps, norm, steps, step_size, random_start, 1, False, "ce", 0.01, generator, False,
                   None)[2]


@on_model_device
def bim(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    steps: int = 40,
    step_size: float | Tensor | None = None,
    targeted: bool = False,
    loss: str = "ce",
) -> AttackResult:
    """Basic iterative method / I-FGSM (Kurakin et al., 2016): :func:`pgd` without the random start."""
    return pgd(model, x, y, eps, norm=norm, steps=steps, step_size=step_size, random_start=False, restarts=1,
               targeted=targeted, loss=loss)
