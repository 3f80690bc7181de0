"""The one projected steepest-ascent loop: every iterative gradient attack of advlab is a call of :func:`ascend`.

PGD and BIM in pixel space, TRADES' inner maximisation, the representation inversion of Ilyas et al., the latent
and font-parameter attacks of the manifold lesson and Kos et al.'s VAE attacks all do the same thing: start at
``z0``, step along the steepest-ascent direction of a norm for an objective, project back onto a feasible set,
and (usually) keep each sample's best iterate. What differs is the space, the objective and the projection,
which the caller passes in::

    out = ascend(objective, z0, project, steps=40, step_size=alpha, norm=math.inf)

* ``objective(z, rows) -> (value, success)``: the per-sample value (N,) to *maximise*, computed differentiably from
  ``z`` (N, *), and an optional (N,) bool success flag (``None`` when there is none). ``rows`` says which of the
  ``N0`` samples that the call started with are in ``z``: ``None`` (all of them), a ``slice`` (a chunk of them)
  or an index tensor (a chunk of the samples still moving), so the objective can pick its own per-sample data
  (labels, targets) with :func:`select_rows`. An objective must use them: the engine calls it on chunks of the
  batch (``chunk``) and on the samples still moving (``early_stop``).
* ``project(z, rows) -> z``: the feasible set (an Lp ball ∩ the pixel box, a box of latent codes, the box alone),
  for the same ``rows`` (select its per-sample bounds with :func:`select_rows` too). ``z`` is the engine's own
  buffer: the projection may write into it and return it (``torch.clamp(z, lo, hi, out=z)``).

Each chunk goes from its forward pass through its step before the next chunk starts, so that on a CPU its
tensors are still in the caches when they are updated.

Gradients are taken with respect to ``z`` only; non-finite gradient entries count as 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from advlab.attacks.core import per_sample, steepest_direction
from advlab.attacks.core import project as project_onto  # not ascend's own `project` argument
from advlab.attacks.tensors import chunk_size, chunk_slices

Rows = Tensor | slice | None
ObjectiveFn = Callable[[Tensor, Rows], tuple[Tensor, Tensor | None]]
ProjectFn = Callable[[Tensor, Rows], Tensor]

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


def select_rows(t: Tensor | None, rows: Rows) -> Tensor | None:
    """``t``'s entries for the samples ``rows`` an objective is called on (``t`` itself while ``rows`` is None; a view
    for a slice)."""
    return t if rows is None or t is None else t[rows]


def ball_box(x: Tensor, eps: Tensor, p: float) -> ProjectFn:
    """The feasible set ``B_ε(x) ∩ [0, 1]^d`` of a pixel-space attack as an :func:`ascend` projection: each sample's
    exact projection onto its own ball ∩ box (:func:`advlab.attacks.core.project`), for any ``rows``.

    Args:
        x: (N, *) the clean inputs in [0, 1]; eps: (N,) radii in pixel units; p: ``math.inf``, 2.0 or 1.0.
    """

    def feasible(z: Tensor, rows: Rows) -> Tensor:
        xr = select_rows(x, rows)
        return xr + project_onto(z - xr, xr, select_rows(eps, rows), p)

    return feasible


def better(value: Tensor, success: Tensor, best_value: Tensor, best_success: Tensor) -> Tensor:
    """(N,) bool: the new iterate beats the kept one (a success beats a failure, then the higher value wins)."""
    return (success & ~best_success) | ((success == best_success) & (value > best_value))


def _value_and_grad(objective: ObjectiveFn, z: Tensor, rows: Rows, grad: bool
                    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The objective (n,), its gradient w.r.t. ``z`` (n, *) (``None`` without ``grad``) and its success flag (n,)
    or None, on one chunk ``z`` of the samples ``rows``; non-finite gradient entries count as 0."""
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


def _chunks(n: int, size: int, rows: Tensor | None) -> list[tuple[slice, Rows]]:
    """The chunks of the ``n`` samples in ``z``: each one's slice of ``z`` and its ``rows`` for the objective and
    the projection (``None``: the whole batch in one chunk; a slice of the ``N0`` samples while all are present;
    the index tensor ``rows[s]`` once some have stopped)."""
    slices = chunk_slices(n, size)
    if rows is not None:
        return [(s, rows[s]) for s in slices]
    return [(slices[0], None)] if len(slices) == 1 else [(s, s) for s in slices]


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

    def step(zc: Tensor, grad: Tensor, r: Rows, k: int) -> None:
        """Move the chunk ``zc`` (a view of ``z``) one projected step along ``grad``, in place."""
        a = select_rows(alpha, r)
        if decay:
            a = a * (1 - k / steps)
        d = steepest_direction(grad, norm, zc, l1_fraction).mul_(per_sample(a, zc))  # a fresh tensor, scaled in place
        moved = project(zc.add_(d), r)
        if moved is not zc:
            zc.copy_(moved)

    if keep_last:
        value = torch.full((n,), -math.inf, dtype=z0.dtype, device=z0.device)
        parts = _chunks(n, chunk_size(z, chunk), None)  # all samples move at every step: the same chunks
        for k in range(steps):
            for s, r in parts:
                v, grad, _ = _value_and_grad(objective, z[s], r, True)
                value[s] = v
                step(z[s], grad, r, k)
        return Ascent(z, value, torch.zeros(n, dtype=torch.bool, device=z0.device))
    best_z = z.clone()
    best_value = torch.full((n,), -math.inf, dtype=z0.dtype, device=z0.device)
    best_succ = torch.zeros(n, dtype=torch.bool, device=z0.device)
    rows: Tensor | None = None  # the samples still moving (None: all of them)
    on_cpu = z.device.type == "cpu"
    for k in range(steps + 1):
        last = k == steps
        # one chunk at a time from its forward to its step, so that its tensors are still in the CPU's caches
        for s, r in _chunks(len(z), chunk_size(z, chunk), rows):
            zc = z[s]
            value, grad, succ = _value_and_grad(objective, zc, r, not last)
            succ = torch.zeros_like(value, dtype=torch.bool) if succ is None else succ
            if rows is None:  # s is a slice of the N0 samples: best_*[s] are views updated in place
                upd = better(value, succ, best_value[s], best_succ[s])
                if on_cpu and bool(upd.all()):  # common while the objective climbs: one copy, not two masked passes
                    best_z[s].copy_(zc)  # (on a GPU the test would stop the queue of kernels once per step)
                elif not on_cpu or bool(upd.any()):
                    m = per_sample(upd.to(z.dtype), zc)  # 0/1 float mask: exact, and cheaper than where on CPU
                    best_z[s].mul_(1 - m).addcmul_(zc, m)
                best_value[s] = torch.where(upd, value, best_value[s])
                best_succ[s] |= succ
            else:
                upd = better(value, succ, best_value[r], best_succ[r])
                best_z[r] = torch.where(per_sample(upd, zc), zc, best_z[r])
                best_value[r] = torch.where(upd, value, best_value[r])
                best_succ[r] = best_succ[r] | succ
            if not last:
                step(zc, grad, r, k)
        if last:
            break
        if early_stop:
            keep = ~(best_succ if rows is None else best_succ[rows])
            if not bool(keep.all()):
                rows = (torch.arange(n, device=z.device) if rows is None else rows)[keep]
                if rows.numel() == 0:
                    break
                z = z[keep]
    return Ascent(best_z, best_value, best_succ)
