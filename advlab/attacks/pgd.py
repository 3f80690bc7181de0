"""Projected gradient descent (Madry et al., 2017) and the basic iterative method (Kurakin et al., 2016)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks.core import Objective, attack_loss, check_loss, is_success, loss_and_grad, per_sample, project
from advlab.attacks.core import random_start as _random_start
from advlab.attacks.core import steepest_direction as _direction
from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import as_eps, check_inputs, check_logits, eval_mode, parse_norm
from advlab.config import AdvlabError

STEP_FACTOR = 2.5  # default step size = 2.5 · ε / steps (Madry et al.): the walk can cross the ball and come back


def default_step_size(eps: Tensor, steps: int) -> Tensor:
    """``2.5 · ε / steps`` per sample: enough to reach the border of the ball from anywhere in it."""
    return STEP_FACTOR * eps / max(steps, 1)


def _better(loss_new: Tensor, succ_new: Tensor, loss_old: Tensor, succ_old: Tensor) -> Tensor:
    """(N,) bool: the new iterate beats the old one (a success beats a failure, then the higher objective wins)."""
    return (succ_new & ~succ_old) | ((succ_new == succ_old) & (loss_new > loss_old))


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
) -> tuple[Tensor, Tensor, Tensor]:
    """One PGD run on a batch; returns the best iterate (N, *), its objective (N,) and success (N,).

    With ``early_stop`` the batch shrinks to the samples not yet broken (one host sync per step): a
    sample keeps its first successful iterate and costs nothing afterwards.
    """
    delta = _random_start(x, eps, p, generator) if start else torch.zeros_like(x)
    best_x = x.clone()
    best_loss = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
    best_succ = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    a = alpha.reshape(-1, *([1] * (x.ndim - 1)))
    active = None  # indices of the samples still attacked (None: all of them)
    xa, ya, ea = x, y, eps
    linf = p == math.inf
    if linf:  # the L∞ ball ∩ box is a box: its projection is one clamp to bounds computed once
        lo, hi = torch.maximum(-per_sample(ea, xa), -xa), torch.minimum(per_sample(ea, xa), 1 - xa)
    for k in range(steps + 1):
        x_adv = xa + delta if linf else (xa + delta).clamp_(0, 1)
        if k == steps:
            with torch.no_grad():
                logits = model(x_adv)
            value = attack_loss(logits, ya, loss, targeted)
        else:
            value, grad, logits = loss_and_grad(model, x_adv, ya, loss, targeted)
        succ = is_success(logits, ya, targeted)
        if active is None:
            upd = _better(value, succ, best_loss, best_succ)
            # best_x ← x_adv where upd, in place with a 0/1 float mask: exact (v·1 + w·0 = v) and on CPU several
            # times cheaper than torch.where with a broadcast bool mask
            m = per_sample(upd.to(x.dtype), x)
            best_x.mul_(1 - m).addcmul_(x_adv, m)
            best_loss = torch.where(upd, value, best_loss)
            best_succ = best_succ | succ
        else:
            upd = _better(value, succ, best_loss[active], best_succ[active])
            best_x[active] = torch.where(per_sample(upd, xa), x_adv, best_x[active])
            best_loss[active] = torch.where(upd, value, best_loss[active])
            best_succ[active] = best_succ[active] | succ
        if k == steps:
            break
        # the step, in place on buffers this loop owns (delta, grad): each (N, *) pass costs as much as a
        # convolution layer of a small network, so allocations and extra passes are avoided
        if linf:
            delta = delta.addcmul_(grad.sign_(), a).clamp_(lo, hi)
        elif p == 2.0:  # α · grad / ||grad||_2, fused into one scaling of grad
            scale = a / per_sample(grad.flatten(1).norm(dim=1).clamp_min(1e-30), grad)
            delta = project(delta.add_(grad.mul_(scale)), xa, ea, p)
        else:
            delta = project(delta.add_(_direction(grad, p, x_adv, l1_fraction).mul_(a)), xa, ea, p)
        if early_stop:
            keep = ~(best_succ if active is None else best_succ[active])
            if not bool(keep.all()):
                active = (torch.arange(len(x), device=x.device) if active is None else active)[keep]
                if active.numel() == 0:
                    break
                xa, ya, ea, a, delta = xa[keep], ya[keep], ea[keep], a[keep], delta[keep]
                if linf:
                    lo, hi = lo[keep], hi[keep]
    return best_x, best_loss, best_succ


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

    Returns:
        :class:`~advlab.attacks.result.AttackResult` re-checked in eval mode.
    """
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
            check_logits(model(x[:1]), y)
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
                l1_fraction, generator, early_stop,
            )
            upd = _better(lr, sr, best_loss[idx], best_succ[idx])
            best_x[idx[upd]] = xr[upd]
            best_loss[idx[upd]] = lr[upd]
            best_succ[idx] = best_succ[idx] | sr
        return finish(model, x, best_x, y, p, targeted)


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
