"""Norm-generic building blocks of gradient attacks: losses, steepest-ascent steps, exact projections, random starts.

Everything works on batches: ``x`` is (N, *) in [0, 1] pixel space, ``delta`` is a perturbation of the same shape,
``eps`` is a (N,) tensor of per-sample radii (see :func:`advlab.attacks.result.as_eps`) and ``p`` is ``math.inf``,
``2.0`` or ``1.0`` (see :func:`advlab.attacks.result.parse_norm`). No function loops over samples.

The feasible set of an attack of radius ε around x is ``B_ε(x) ∩ [0, 1]^d``; in terms of ``delta = x_adv - x``
it is ``{δ : ||δ||_p <= ε, -x <= δ <= 1 - x}``. :func:`project` returns the exact Euclidean projection onto it:

* L∞: one clamp, ``δ_i = clip(z_i, max(-ε, -x_i), min(ε, 1 - x_i))``.
* L2: by the KKT conditions ``δ = clip(z / (1 + λ), -x, 1 - x)`` with the smallest λ >= 0 that makes
  ``||δ||_2 <= ε``; λ is found per sample by bisection, then made exact on the final linear piece.
* L1: ``δ_i = sign(z_i) · clip(|z_i| - λ, 0, c_i)`` where ``c_i`` is the room the box leaves in the direction of
  ``sign(z_i)`` (``1 - x_i`` upwards, ``x_i`` downwards); λ >= 0 again by bisection plus an exact final step.

Just clipping to the ball and then to the box (what many libraries do) is *not* the projection for L2 and L1:
it can leave budget unused on saturated pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.config import AdvlabError

LOSSES = ("ce", "margin", "dlr")


def _bisection_steps(t: Tensor) -> int:
    """Bisection halvings to reach the dtype's resolution; the closed-form final step then makes λ exact."""
    return 52 if t.dtype == torch.float64 else 25


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a (N,) tensor so that it broadcasts against a (N, *) tensor ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


Objective = Callable[[Tensor, Tensor], Tensor]
"""A custom attack objective: ``fn(logits (N, K), y (N,)) -> (N,)`` per-sample value that the attack *maximises*."""


def check_loss(loss: str | Objective) -> str | Objective:
    """Canonical loss name, or the callable objective itself; raises :class:`AdvlabError` for an unknown name."""
    if callable(loss):
        return loss
    name = str(loss).strip().lower()
    if name not in LOSSES:
        raise AdvlabError(f"Unknown loss {loss!r}; use one of {LOSSES}.")
    return name


# ----------------------------------------------------------------------------------------------------------- losses
def _others_max(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j per sample (the true/target class is masked with -inf)."""
    mask = F.one_hot(y, logits.shape[1]).bool()
    return logits.masked_fill(mask, -math.inf).amax(1)


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """CW margin ``max_{j != y} z_j - z_y`` (N,): positive exactly when the prediction is not y."""
    return _others_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr_loss(logits: Tensor, y: Tensor, targeted: bool = False) -> Tensor:
    """Difference of logits ratio of Croce & Hein (2020), (N,), to be maximised.

    Untargeted: ``-(z_y - max_{j != y} z_j) / (z_π1 - z_π3)``; targeted (y is the target t):
    ``(z_t - max_{j != t} z_j) / (z_π1 - (z_π3 + z_π4) / 2)``, with z_π the sorted logits. The ratio is invariant to
    shifting and scaling the logits, so a model cannot hide behind a saturated softmax.
    """
    k = logits.shape[1]
    need = 4 if targeted else 3
    if k < need:
        raise AdvlabError(f"The dlr loss needs at least {need} classes (the model has {k}); use loss='margin'.")
    srt = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if targeted:
        scale = srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3])
        return (z_y - _others_max(logits, y)) / (scale + 1e-12)
    return -(z_y - _others_max(logits, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """AutoAttack's targeted DLR (APGD-T), (N,), to be maximised: ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2)``.

    ``y`` is the true label and ``target`` the class pushed up; z_π are the sorted logits (needs K >= 4). Unlike
    :func:`dlr_loss` with ``targeted=True``, which only knows the target, it measures the gap to the true class.
    """
    if logits.shape[1] < 4:
        raise AdvlabError(f"The targeted dlr loss needs at least 4 classes (the model has {logits.shape[1]}).")
    srt = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def attack_loss(logits: Tensor, y: Tensor, loss: str | Objective = "ce", targeted: bool = False) -> Tensor:
    """Per-sample objective (N,) that an attack *maximises*.

    Untargeted (y = true label): ``ce`` = cross-entropy, ``margin`` = :func:`margin_loss`, ``dlr`` = :func:`dlr_loss`.
    Targeted (y = target label): minus the cross-entropy to the target, minus the margin of the target, or the
    targeted DLR, so that larger is always better for the attacker. A callable ``loss(logits, y) -> (N,)`` is used
    as it is (``targeted`` is then the callable's business).
    """
    loss = check_loss(loss)
    if callable(loss):
        value = loss(logits, y)
        if not isinstance(value, Tensor) or value.shape != (len(logits),):
            raise AdvlabError(f"A custom loss must return one value per sample, shape ({len(logits)},); got "
                              f"{getattr(value, 'shape', type(value).__name__)}.")
        return value
    if loss == "ce":
        ce = F.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if loss == "margin":
        m = margin_loss(logits, y)
        return -m if targeted else m
    return dlr_loss(logits, y, targeted)


def is_success(logits: Tensor, y: Tensor, targeted: bool = False) -> Tensor:
    """(N,) bool: prediction differs from y (untargeted) or equals the target y (targeted)."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def loss_and_grad(
    model: nn.Module, x_adv: Tensor, y: Tensor, loss: str | Objective = "ce", targeted: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Objective (N,), its gradient w.r.t. the input (N, *) and the logits (N, K) at ``x_adv``.

    The gradient is taken w.r.t. the input only (``torch.autograd.grad``); non-finite entries are set to 0.
    A model whose output does not depend differentiably on its input gets a zero gradient and a warning.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        value = attack_loss(logits, y, loss, targeted)
        if value.requires_grad:
            (grad,) = torch.autograd.grad(value.sum(), x_adv, allow_unused=True)
        else:
            grad = None
    if grad is None:
        warnings.warn(
            "The model's output does not depend differentiably on its input (no gradient flows back); gradient "
            "attacks cannot work here. Use a gradient-free or BPDA attack before trusting any robustness number.",
            stacklevel=3,
        )
        grad = torch.zeros_like(x_adv)
    if not grad.is_contiguous():  # e.g. an expanded gradient of a linear model: callers may update it in place
        grad = grad.contiguous()
    return value.detach(), grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0), logits.detach()


# ------------------------------------------------------------------------------------------------- steepest ascent
def steepest_direction(grad: Tensor, p: float, x_adv: Tensor | None = None, l1_fraction: float = 0.01) -> Tensor:
    """Steepest-ascent direction of unit p-norm for a first-order step ``x_adv + α · direction``.

    * L∞: ``sign(grad)`` (the maximiser of <g, d> over the unit L∞ ball, eq. 7 of the survey).
    * L2: ``grad / ||grad||_2`` per sample.
    * L1: the maximiser of <g, d> over the L1 ball is a single coordinate, which makes dense-update L1 PGD weak and
      single-coordinate PGD slow. Following Tramèr & Boneh (2019, SLIDE) we spread the step over the
      ``k = ceil(l1_fraction · d)`` coordinates with the largest ``|grad|``, each getting ``sign(grad) / k``.
      With ``x_adv`` given, coordinates that cannot move in the direction of their gradient (a pixel at 1 with a
      positive gradient, at 0 with a negative one) are skipped.

    A zero gradient gives a zero direction. Shapes: grad (N, *) -> (N, *), always a new tensor (callers may
    scale it in place).
    """
    if math.isinf(p):
        return grad.sign()
    flat = grad.flatten(1)
    if p == 2.0:
        nrm = flat.norm(dim=1).clamp_min(1e-30)
        return grad / per_sample(nrm, grad)
    score = flat.abs()
    if x_adv is not None:
        room = torch.where(flat > 0, 1 - x_adv.flatten(1), x_adv.flatten(1))
        score = score * (room > 0)
    k = max(1, min(flat.shape[1], math.ceil(l1_fraction * flat.shape[1])))
    top = score.topk(k, dim=1)
    weight = (top.values > 0).to(grad.dtype) / k
    direction = torch.zeros_like(flat).scatter(1, top.indices, weight) * flat.sign()
    return direction.view_as(grad)


def greedy_l1_step(grad: Tensor, x: Tensor, eps: Tensor) -> Tensor:
    """Exact maximiser of <grad, δ> over ``{||δ||_1 <= ε} ∩ box``: fill coordinates by decreasing |grad|.

    Each coordinate gets as much of the remaining budget as its box room (in the direction of its gradient sign)
    allows, largest |grad| first (a fractional knapsack). Returns δ (N, *).
    """
    flat = grad.flatten(1)
    room = torch.where(flat > 0, 1 - x.flatten(1), x.flatten(1)) * (flat != 0)
    order = flat.abs().argsort(dim=1, descending=True)
    room_sorted = room.gather(1, order)
    before = room_sorted.cumsum(1) - room_sorted
    amount_sorted = torch.minimum(room_sorted, (eps[:, None] - before).clamp_min(0))
    amount = torch.zeros_like(flat).scatter(1, order, amount_sorted)
    return (amount * flat.sign()).view_as(grad)


# ----------------------------------------------------------------------------------------------------- projections
def project_linf(z: Tensor, x: Tensor, eps: Tensor) -> Tensor:
    """Exact projection of δ = z onto ``{||δ||_∞ <= ε} ∩ [-x, 1 - x]`` (one clamp)."""
    e = per_sample(eps, z)
    return torch.maximum(torch.minimum(z, torch.minimum(e, 1 - x)), torch.maximum(-e, -x))


def project_l2(z: Tensor, x: Tensor, eps: Tensor, max_iter: int = 1000) -> Tensor:
    """Exact projection of δ = z onto ``{||δ||_2 <= ε} ∩ [-x, 1 - x]``.

    KKT: ``δ(t) = clip(t · z, -x, 1 - x)`` with ``t = 1 / (1 + λ) ∈ (0, 1]``, the largest t with ``||δ(t)|| <= ε``.
    Coordinate i is clipped once t passes its breakpoint ``r_i = bound_i / z_i`` (``bound_i`` = 1 - x_i if z_i > 0,
    -x_i if z_i < 0), so with C the coordinates clipped at t, ``||δ(s)||² <= s² Σ_{i∉C} z_i² + Σ_{i∈C} bound_i²`` for
    every s >= t, with equality until the next breakpoint. Solving that quadratic for ``= ε²`` gives a feasible
    larger t; repeating it (an active-set iteration) increases t monotonically and stops, exactly on the right
    piece, when no new coordinate clips: usually after 2–6 rounds of a few passes, instead of 25–50 bisection halvings.
    """
    # CPU note: comparisons written into float buffers and products with 0/1 masks are ~10x cheaper here
    # than boolean masks with torch.where / masked_fill, so every pass below is one of those
    zf, xf = z.flatten(1), x.flatten(1)
    bound = torch.gt(zf, 0, out=torch.empty_like(zf)).sub_(xf)  # 1 - x where z > 0, -x elsewhere
    brk = torch.div(bound, zf).nan_to_num_(nan=math.inf, neginf=math.inf)  # z_i = 0: never clipped
    clipped, free, prod = torch.empty_like(zf), torch.empty_like(zf), torch.empty_like(zf)  # reused every round:
    z2, b2 = zf * zf, bound * bound  # a fresh large CPU tensor costs page faults, often more than the pass itself
    e2 = eps * eps
    t = (eps / z2.sum(1).sqrt().clamp_min(1e-30)).clamp(max=1.0)  # nothing clipped: ||t z|| = ε

    def masks(t: Tensor) -> None:  # 1.0 where coordinate i is clipped at t (resp. not), else 0.0
        torch.le(brk, t[:, None], out=clipped)
        torch.gt(brk, t[:, None], out=free)

    moved = True
    for _ in range(max_iter):
        masks(t)
        a = torch.mul(free, z2, out=prod).sum(1)  # each sum over its own mask: a difference of two large sums
        b = torch.mul(clipped, b2, out=prod).sum(1)  # would lose digits
        t_next = torch.where(a > 0, ((e2 - b).clamp_min(0) / a.clamp_min(1e-30)).sqrt(), torch.ones_like(t))
        t_next = torch.maximum(t, t_next.clamp(max=1.0))
        moved = bool((t_next > t).any())  # one host sync per round
        t = t_next
        if not moved:
            break
    if moved:  # stopped by max_iter: the masks must belong to the final t
        masks(t)
    delta = clipped.mul_(bound).addcmul_(free, torch.mul(zf, t[:, None], out=prod))  # clip(t z, -x, 1 - x)
    return _shrink_into(delta, eps, 2.0).view_as(z)


def project_l1(z: Tensor, x: Tensor, eps: Tensor, steps: int | None = None) -> Tensor:
    """Exact projection of δ = z onto ``{||δ||_1 <= ε} ∩ [-x, 1 - x]``.

    KKT: ``δ_i = sign(z_i) · clip(|z_i| - λ, 0, c_i)`` with ``c_i`` the box room in the direction of ``sign(z_i)``;
    ``||δ(λ)||_1`` decreases in λ, so the smallest feasible λ >= 0 is found per sample by bisection and then solved in
    closed form on the linear piece it lies in. ``steps``: bisection steps (default: enough to reach the dtype's
    resolution).
    """
    zf = z.flatten(1)
    xf = x.flatten(1)
    a = zf.abs()
    cap = torch.where(zf > 0, 1 - xf, xf) * (zf != 0)

    def mass(lam: Tensor) -> Tensor:
        return torch.minimum((a - lam[:, None]).clamp_min(0), cap).sum(1)

    lam_lo = torch.zeros_like(eps)
    inside = mass(lam_lo) <= eps
    lam_hi = a.amax(1)
    for _ in range(steps or _bisection_steps(z)):
        mid = 0.5 * (lam_lo + lam_hi)
        ok = mass(mid) <= eps
        lam_hi = torch.where(ok, mid, lam_hi)
        lam_lo = torch.where(ok, lam_lo, mid)
    # closed form on the piece: ||δ(λ)||_1 = S_sat + Σ_free (a_i - λ)
    mid = 0.5 * (lam_lo + lam_hi)
    shifted = a - mid[:, None]
    free = (shifted > 0) & (shifted < cap)
    sat = shifted >= cap
    n_free = free.sum(1)
    lam_exact = ((a * free).sum(1) + (cap * sat).sum(1) - eps) / n_free.clamp_min(1)
    lam = torch.where((lam_exact >= lam_lo) & (lam_exact <= lam_hi) & (n_free > 0), lam_exact, lam_hi)
    lam = torch.where(inside, torch.zeros_like(lam), lam)
    delta = torch.minimum((a - lam[:, None]).clamp_min(0), cap) * zf.sign()
    return _shrink_into(delta, eps, 1.0).view_as(z)


def _shrink_into(delta: Tensor, eps: Tensor, p: float) -> Tensor:
    """Scale rows by ``min(1, ε / ||δ||_p)``: removes rounding excess; stays in the box, which contains 0."""
    nrm = delta.norm(p=p, dim=1)
    scale = torch.where(nrm > eps, eps / nrm.clamp_min(1e-30), torch.ones_like(nrm))
    return delta.mul_(scale[:, None])  # delta is a fresh tensor of the caller's


def project(z: Tensor, x: Tensor, eps: Tensor, p: float) -> Tensor:
    """Exact projection of a perturbation ``z`` (N, *) onto ``{||δ||_p <= ε} ∩ [-x, 1 - x]``; returns δ (N, *)."""
    if math.isinf(p):
        return project_linf(z, x, eps)
    if p == 2.0:
        return project_l2(z, x, eps)
    if p == 1.0:
        return project_l1(z, x, eps)
    raise AdvlabError(f"No projection for p = {p}; use inf, 2 or 1.")


# --------------------------------------------------------------------------------------------------- random starts
def _rand(kind: str, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    dev = generator.device if generator is not None else like.device
    fn = torch.rand if kind == "uniform" else torch.randn
    return fn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def random_ball(x: Tensor, eps: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """δ (N, *) drawn uniformly from the p-ball of radius ``eps[i]`` in R^d, d = x[0].numel() (box ignored).

    * L∞: uniform in the cube ``[-ε, ε]^d``.
    * L2: a Gaussian direction normalised to the sphere, times ``ε · u^(1/d)`` (u uniform), so that the volume
      inside radius r grows like r^d.
    * L1: d + 1 i.i.d. exponentials divided by their sum are uniform on the simplex; dropping the last one gives a
      point uniform in the solid simplex ``{w >= 0, Σw <= 1}``; random signs make it uniform in the L1 ball.
    """
    n, d = len(x), x[0].numel()
    shape = (n, d)
    e = eps[:, None]
    if math.isinf(p):
        delta = (2 * _rand("uniform", shape, x, generator) - 1) * e
    elif p == 2.0:
        g = _rand("normal", shape, x, generator)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
        r = _rand("uniform", (n, 1), x, generator).pow(1.0 / d)
        delta = g * r * e
    elif p == 1.0:
        u = _rand("uniform", (n, d + 1), x, generator)
        expo = -torch.log1p(-u)  # exponential(1), finite because u < 1
        w = expo[:, :d] / expo.sum(1, keepdim=True)
        signs = torch.where(_rand("uniform", shape, x, generator) < 0.5, -1.0, 1.0).to(x.dtype)
        delta = w * signs * e
    else:
        raise AdvlabError(f"No random start for p = {p}; use inf, 2 or 1.")
    return delta.view_as(x)


def random_start(x: Tensor, eps: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """A random starting perturbation: uniform in the ball (:func:`random_ball`), then clipped into the box.

    Clipping each coordinate into ``[-x, 1 - x]`` only shrinks |δ_i|, so the point stays inside the ball.
    """
    delta = random_ball(x, eps, p, generator)
    return torch.maximum(torch.minimum(delta, 1 - x), -x)
