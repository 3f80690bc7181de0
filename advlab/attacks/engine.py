"""The one projected steepest-ascent loop: every iterative gradient attack of advlab is a call of :func:`ascend`.

PGD and BIM in pixel space, TRADES' inner maximisation, the representation inversion of Ilyas et al., the latent
and font-parameter attacks of the manifold lesson and Kos et al.'s VAE attacks all do the same thing: start at
``z0``, step along the steepest-ascent direction of a norm for an objective, project back onto a feasible set,
and (usually) keep each sample's best iterate. What differs is the space, the objective and the projection,
which the caller passes in::

    out = ascend(objective, z0, project, steps=40, step_size=alpha, norm=math.inf)

* ``objective(z, rows) -> (value, success)``: the per-sample value (N,) to *maximise*, computed differentiably from
  ``z`` (N, *), and an optional (N,) bool success flag (``None`` when there is none). ``rows`` are the indices
  of the samples in ``z`` among the ``N0`` that the call started with (``None`` while all are present), so the
  objective can pick its own per-sample data (labels, targets) with :func:`select_rows`. An objective must use
  them: the engine calls it on chunks of the batch (``chunk``) and on the samples still moving (``early_stop``).
* ``project(z, rows) -> z``: the feasible set (an Lp ball ∩ the pixel box, a box of latent codes, the box alone).

Gradients are taken with respect to ``z`` only; non-finite gradient entries count as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from advlab.attacks.core import per_sample, steepest_direction
from advlab.attacks.tensors import chunk_size, chunk_slices

ObjectiveFn = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]
ProjectFn = Callable[[Tensor, Tensor | None], Tensor]

STEP_FACTOR = 2.5  # the default step 2.5 · ε / steps (Madry et al.): a walk can cross the ball and come back


def default_step_size(eps: Tensor, steps: int) -> Tensor:
    """``2.5 · ε / steps`` per sample: enough to reach the border of the ball from anywhere in it."""
    return STEP_FACTOR * eps / max(steps, 1)


@dataclass
class Ascent:
    """What :func:`ascend` returns.

    Attributes:
        z: (N, *) each sample's best iterate (a success first, then the highest value), or its last one.
        value: (N,) the objective at ``z`` (with ``keep_last``: at the iterate before the last step).
        success: (N,) bool, the objective's success flag at ``z`` (all False without one).
    """

    z: Tensor
    value: Tensor
    success: Tensor


def select_rows(t: Tensor | None, rows: Tensor | None) -> Tensor | None:
    """``t``'s entries for the samples ``rows`` an objective is called on (``t`` itself while ``rows`` is None)."""
    return t if rows is None or t is None else t[rows]


def better(value: Tensor, success: Tensor, best_value: Tensor, best_success: Tensor) -> Tensor:
    """(N,) bool: the new iterate beats the kept one (a success beats a failure, then the higher value wins)."""
    return (success & ~best_success) | ((success == best_success) & (value > best_value))


def _value_and_grad(objective: ObjectiveFn, z: Tensor, rows: Tensor | None, grad: bool, chunk: int | None
                    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The objective (N,), its gradient w.r.t. ``z`` (N, *) and its success flag (N,) or None, computed on chunks
    (:func:`advlab.attacks.tensors.chunk_size` of the samples still moving): each chunk's objective gets the chunk's
    own ``rows`` (indices among the ``N0`` samples)."""
    size = chunk_size(z, chunk)
    if len(z) > size:
        parts = []
        for s in chunk_slices(len(z), size):
            r = torch.arange(s.start, s.stop, device=z.device) if rows is None else rows[s]
            parts.append(_value_and_grad(objective, z[s], r, grad, size))
        value = torch.cat([v for v, _, _ in parts])
        g = torch.cat([gr for _, gr, _ in parts]) if grad else None
        succ = None if parts[0][2] is None else torch.cat([sc for _, _, sc in parts])
        return value, g, succ
    if not grad:
        with torch.no_grad():
            value, succ = objective(z, rows)
        return value.detach(), None, None if succ is None else succ.detach()
    zg = z.detach().requires_grad_(True)
    with torch.enable_grad():
        value, succ = objective(zg, rows)
        if value.requires_grad:
            (g,) = torch.autograd.grad(value.sum(), zg, allow_unused=True)
        else:
            g = None
    g = torch.zeros_like(z) if g is None else g.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return value.detach(), g, None if succ is None else succ.detach()


def ascend(
    objective: ObjectiveFn,
    z0: Tensor,
    project: ProjectFn,
    steps: int,
    step_size: Tensor | float,
    norm: float = math.inf,
    *,
    decay: bool = False,
    keep_last: bool = False,
    early_stop: bool = False,
    l1_fraction: float = 0.01,
    chunk: int | None = None,
) -> Ascent:
    """Projected steepest ascent of ``objective`` from ``z0`` for ``steps`` steps, per sample, no loop over samples.

    Step k moves every sample by ``step_size · dir(∇ value)`` (``dir`` = :func:`advlab.attacks.core.steepest_direction`
    of ``norm``: sign for L∞, normalised gradient for L2, sparse top-k for L1) and projects with ``project``.

    Args:
        objective, project: see the module docstring.
        z0: (N, *) the first iterate (it should be feasible).
        steps: gradient steps; the objective is evaluated at ``steps + 1`` iterates (``steps`` with ``keep_last``).
        step_size: a scalar or (N,) step length in the norm's units.
        norm: ``math.inf``, ``2.0`` or ``1.0``: the geometry of the step.
        decay: shrink the step linearly to 0 over the run (``step_size · (1 - k / steps)``), so a walk with no
            bound settles instead of oscillating at the step length.
        keep_last: return the last iterate (no best-iterate bookkeeping, no final evaluation), as TRADES' inner
            maximisation does.
        early_stop: stop moving a sample once its success flag is set (it keeps that iterate).
        l1_fraction: fraction of coordinates moved by an L1 step.
        chunk: samples per forward/backward pass (:func:`advlab.attacks.tensors.chunk_size`: ``None`` is the
            device's default, ``0`` the whole batch); only where the work is split, not the result.

    Returns:
        :class:`Ascent`.
    """
    n = len(z0)
    alpha = torch.as_tensor(step_size, dtype=z0.dtype, device=z0.device)
    alpha = alpha.expand(n).clone() if alpha.ndim == 0 else alpha.flatten().clone()
    z = z0.detach().clone()
    chunk_size(z0, chunk)  # a bad chunk is refused before any work
    if keep_last:
        value = torch.full((n,), -math.inf, dtype=z0.dtype, device=z0.device)
        for k in range(steps):
            value, grad, _ = _value_and_grad(objective, z, None, True, chunk)
            a = alpha * (1 - k / steps) if decay else alpha
            z = project(z + per_sample(a, z) * steepest_direction(grad, norm, z, l1_fraction), None)
        return Ascent(z, value, torch.zeros(n, dtype=torch.bool, device=z0.device))
    best_z = z.clone()
    best_value = torch.full((n,), -math.inf, dtype=z0.dtype, device=z0.device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=z0.device)
    rows: Tensor | None = None  # the samples still moving (None: all of them)
    for k in range(steps + 1):
        last = k == steps
        value, grad, succ = _value_and_grad(objective, z, rows, not last, chunk)
        succ = torch.zeros_like(value, dtype=torch.bool) if succ is None else succ
        if rows is None:
            upd = better(value, succ, best_value, best_succ)
            m = per_sample(upd.to(z.dtype), z)  # 0/1 float mask: exact, and cheaper than where on CPU
            best_z.mul_(1 - m).addcmul_(z, m)
            best_value = torch.where(upd, value, best_value)
            best_succ = best_succ | succ
        else:
            upd = better(value, succ, best_value[rows], best_succ[rows])
            best_z[rows] = torch.where(per_sample(upd, z), z, best_z[rows])
            best_value[rows] = torch.where(upd, value, best_value[rows])
            best_succ[rows] = best_succ[rows] | succ
        if last:
            break
        a = alpha if rows is None else alpha[rows]
        if decay:
            a = a * (1 - k / steps)
        z = project(z + per_sample(a, z) * steepest_direction(grad, norm, z, l1_fraction), rows)
        if early_stop:
            keep = ~(best_succ if rows is None else best_succ[rows])
            if not bool(keep.all()):
                rows = (torch.arange(n, device=z.device) if rows is None else rows)[keep]
                if rows.numel() == 0:
                    break
                z = z[keep]
    return Ascent(best_z, best_value, best_succ)
