"""Checks for the attack tasks of section ④ (solutions/04a_attacks): FGSM, projections, PGD, targeted, CW, DeepFool."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.checks._core import (
    _RESHAPE_HINT,
    Mismatch,
    _close,
    _col,
    _gen,
    _images,
    _in_box,
    _in_linf_ball,
    _input_grad,
    _linear,
    _linf_corner,
    _mlp,
    _params_untouched,
    _shape,
    _tensor,
    _unchanged,
    register,
)


@register("fgsm_step", "FGSM step", "04a", _RESHAPE_HINT)
def check_fgsm_step(fn: Callable) -> str:
    """``fgsm_step(x, grad, eps) -> x_adv = clip(x + ε·sign(grad), 0, 1)``; x, grad (N, *), eps (N,)."""
    g = _gen(4)
    cases = [(_images(6, (1, 4, 4), g, torch.float32), torch.tensor([0.1, 0.3, 0.0, 0.05, 0.2, 1.0])),
             (_images(5, (7,), g, torch.float32), torch.full((5,), 0.25))]
    for x, eps in cases:
        grad = torch.randn(x.shape, generator=g)
        grad.view(len(x), -1)[:, 0] = 0.0  # a zero gradient: sign(0) = 0, the pixel must not move
        x0, g0, e0 = x.clone(), grad.clone(), eps.clone()
        out = _tensor(fn(x, grad, eps), "fgsm_step")
        _unchanged([x0, g0, e0], [x, grad, eps], "x, grad or eps")
        _shape(out, x.shape, "x_adv", _RESHAPE_HINT)
        ref = (x + _col(eps, x) * grad.sign()).clamp(0, 1)
        _in_box(out)
        if _close(out, ref, 1e-6):
            continue
        zero = eps == 0
        if zero.any() and not _close(out[zero], x[zero], 1e-7):
            raise Mismatch("a sample with ε = 0 was changed.", "with ε = 0 the input must come back unchanged.")
        if _close(out, (x + _col(eps, x) * grad).clamp(0, 1), 1e-6):
            raise Mismatch("you step along the raw gradient.",
                           "FGSM moves every pixel by exactly ±ε: use grad.sign(), not grad (eq. 6 with the sign).")
        if _close(out, (x - _col(eps, x) * grad.sign()).clamp(0, 1), 1e-6):
            raise Mismatch("your step goes down the loss.", "an untargeted attack ascends the loss: x + ε·sign(grad).")
        _in_linf_ball(out - x, eps, 1e-6)
        raise Mismatch("x_adv differs from clip(x + ε·sign(grad), 0, 1).",
                       "one ε per sample, multiplied by grad.sign(), then .clamp(0, 1).")
    return "matches clip(x + ε·sign(∇L), 0, 1) with per-sample ε, ε = 0, zero gradients and pixels at 0 and 1."


@register("project_linf", "L∞ ball ∩ box projection", "04a", _RESHAPE_HINT)
def check_project_linf(fn: Callable) -> str:
    """``project_linf(z, x, eps) -> δ``: exact projection of z onto {||δ||∞ <= ε} ∩ [-x, 1 - x]."""
    from advlab.attacks.core import project_linf

    g = _gen(5)
    x = _images(7, (1, 3, 3), g, saturate=0.4)
    z = torch.randn(x.shape, generator=g, dtype=x.dtype) * 0.4
    eps = torch.tensor([0.1, 0.3, 0.0, 0.05, 0.5, 2.0, 0.2], dtype=x.dtype)
    inside = 3  # sample 3: z already feasible, it must not move
    z[inside] = project_linf(z[inside:inside + 1] * 0.5, x[inside:inside + 1], eps[inside:inside + 1])[0]
    for xx, zz, ee in [(x, z, eps), (x.flatten(1)[:4], z.flatten(1)[:4], eps[:4])]:
        x0, z0, e0 = xx.clone(), zz.clone(), ee.clone()
        out = _tensor(fn(zz, xx, ee), "project_linf")
        _unchanged([x0, z0, e0], [xx, zz, ee], "z, x or eps")
        _shape(out, zz.shape, "δ")
        _in_box(xx + out, "x + δ")
        _in_linf_ball(out, ee, hint="also clamp δ to [-ε, ε] (each sample has its own ε).")
        ref = project_linf(zz, xx, ee)
        if not _close(out, ref, 1e-7):
            if not _close(out[inside], zz[inside], 1e-7):
                raise Mismatch("a perturbation that was already feasible was moved.",
                               "the projection of a feasible point is the point itself.")
            raise Mismatch("δ is feasible but not the closest feasible point to z.",
                           "clamp each coordinate on its own: δ_i = clip(z_i, max(-ε, -x_i), min(ε, 1 - x_i)).")
    return "exact on 2 batches (per-sample ε, ε = 0, saturated pixels, feasible points kept)."


@register("project_l2", "L2 ball ∩ box projection", "04a", _RESHAPE_HINT)
def check_project_l2(fn: Callable) -> str:
    """``project_l2(z, x, eps) -> δ``: exact projection onto {||δ||_2 <= ε} ∩ [-x, 1 - x] (compare core.project_l2)."""
    from advlab.attacks.core import project_l2

    g = _gen(6)
    x = _images(8, (1, 4, 4), g, saturate=0.5)
    z = torch.randn(x.shape, generator=g, dtype=x.dtype) * 0.5
    eps = torch.tensor([0.5, 1.0, 0.0, 0.3, 5.0, 1.5, 0.8, 2.0], dtype=x.dtype)
    # sample 7: point inside the ball (and box) must stay; sample 6 pushes hard against saturated pixels
    z[7] = project_l2(z[7:8], x[7:8], eps[7:8] * 0.5)[0]
    z[6] = torch.where(x[6] == 1, 1.0, torch.where(x[6] == 0, -1.0, 0.3 * z[6]))
    for xx, zz, ee in [(x, z, eps), (x.flatten(1)[3:], z.flatten(1)[3:], eps[3:])]:
        x0, z0, e0 = xx.clone(), zz.clone(), ee.clone()
        out = _tensor(fn(zz, xx, ee), "project_l2")
        _unchanged([x0, z0, e0], [xx, zz, ee], "z, x or eps")
        _shape(out, zz.shape, "δ")
        _in_box(xx + out, "x + δ")
        norms = out.flatten(1).norm(dim=1)
        if bool((norms > ee * (1 + 1e-6) + 1e-9).any()):
            i = int((norms - ee).argmax())
            raise Mismatch(f"sample {i} has ||δ||_2 = {norms[i].item():.4g} > ε = {ee[i].item():.4g}.",
                           "the L2 norm is per sample: delta.flatten(1).norm(dim=1), and every sample must end "
                           "inside its own ball.")
        ref = project_l2(zz, xx, ee)
        if _close(out, ref, 1e-5):
            continue
        if bool((ee == 0).any()) and not _close(out[ee == 0], torch.zeros_like(out[ee == 0]), 1e-9):
            raise Mismatch("a sample with ε = 0 got a non-zero δ.", "with ε = 0 the only feasible δ is 0.")
        scaled = zz * _col((ee / zz.flatten(1).norm(dim=1).clamp_min(1e-30)).clamp(max=1), zz)
        if _close(out, torch.maximum(torch.minimum(scaled, 1 - xx), -xx), 1e-6):
            raise Mismatch("δ is feasible but not the closest feasible point to z: scale-then-clip leaves ε budget "
                           "unused on saturated pixels.",
                           "use δ = clip(z / (1 + λ), -x, 1 - x) with the smallest λ >= 0 such that ||δ||_2 <= ε, "
                           "found per sample by bisection.")
        if bool((norms < ref.flatten(1).norm(dim=1) - 1e-6).any()):
            raise Mismatch("δ leaves part of the ε budget unused on some samples (||δ||_2 < ε although z is "
                           "outside the ball).",
                           "λ is per sample (norms with .flatten(1).norm(dim=1)); run the bisection long enough "
                           "(e.g. 50 halvings) to make ||clip(z / (1 + λ), -x, 1 - x)||_2 = ε.")
        raise Mismatch("δ is feasible but not the closest feasible point to z.",
                       "δ = clip(z / (1 + λ), -x, 1 - x), the same λ >= 0 for all coordinates of a sample.")
    return "matches advlab.attacks.core.project_l2 (per-sample ε, ε = 0, saturated pixels, points inside)."


@register("pgd_linf", "PGD loop with random start", "04a",
          "x_adv must be a leaf that requires grad when you differentiate: x_adv = x_adv.detach().requires_grad_(); "
          + _RESHAPE_HINT)
def check_pgd_linf(fn: Callable) -> str:
    """``pgd_linf(model, x, y, eps, alpha, steps) -> x_adv``: eq. 7 with a uniform random start, L∞, eps (N,)."""
    from advlab.attacks.fgsm import fgsm

    g = _gen(7)
    # (a) linear 2-class model: the maximiser over ball ∩ box is a clipped corner that PGD must reach
    x = _images(6, (1, 2, 4), g)
    model = _linear(8, 2, g)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    eps = torch.tensor([0.1, 0.3, 0.0, 0.05, 0.2, 0.25], dtype=x.dtype)
    x0, e0 = x.clone(), eps.clone()
    out = _tensor(fn(model, x, y, eps, 0.1, 10), "pgd_linf")
    _unchanged([x0, e0], [x, eps], "x or eps")
    _shape(out, x.shape, "x_adv", _RESHAPE_HINT)
    _params_untouched(model)
    _in_linf_ball(out - x, eps)
    _in_box(out)
    if not _close(out, _linf_corner(model, x, y, eps), 1e-6):
        raise Mismatch("on a linear model PGD does not reach the exact maximiser of the loss over the ball ∩ box "
                       "(the corner x + ε·sign(∇L), clipped to [0, 1]).",
                       "step from the current iterate: x_adv + α·sign(∇L(x_adv)), then project onto the ball and "
                       "the box; repeat `steps` times.")
    # (b) a model with zero gradient everywhere: PGD stays at its random start, which must be uniform in the ball
    flat = _linear(16, 3, g, scale=0.0)
    xc = torch.full((256, 16), 0.5, dtype=torch.float64)
    ec = torch.rand(256, generator=g, dtype=torch.float64) * 0.3 + 0.1
    ec[0] = 0.0
    out = _tensor(fn(flat, xc, torch.zeros(256, dtype=torch.long), ec, 0.05, 3), "pgd_linf")
    _in_box(out)
    _in_linf_ball(out - xc, ec)
    u = (out - xc)[1:] / ec[1:, None]
    if bool((u.abs() < 1e-12).all()):
        raise Mismatch("with a zero gradient your PGD returns x itself: there is no random start.",
                       "start from x + δ0 with δ0 uniform in [-ε, ε] (torch.rand_like(x) * 2 - 1) * ε, clipped to "
                       "the box (Madry et al.).")
    if abs(u.abs().mean().item() - 0.5) > 0.05 or (u.abs() > 0.99).float().mean().item() > 0.05 \
            or abs(u.mean().item()) > 0.05:
        raise Mismatch("the random start is not uniform in the ε-ball (|δ|/ε should be uniform on [0, 1]).",
                       "δ0 = (2·torch.rand_like(x) - 1) · ε with ε reshaped per sample; not randn, not ±ε.")
    # (c) a small nonlinear model: PGD must beat FGSM on average
    net = _mlp(10, 3, _gen(8), scale=3.0)
    xn = _images(32, (10,), g, saturate=0.1)
    yn = net(xn).argmax(1).detach()
    en = torch.full((32,), 0.1, dtype=xn.dtype)
    out = _tensor(fn(net, xn, yn, en, 0.025, 10), "pgd_linf")
    _in_box(out)
    _in_linf_ball(out - xn, en)
    with torch.no_grad():
        loss_pgd = F.cross_entropy(net(out), yn).item()
        loss_fgsm = F.cross_entropy(net(fgsm(net, xn, yn, en).x_adv), yn).item()
    if loss_pgd < loss_fgsm:
        raise Mismatch("on a small MLP your PGD reaches a lower loss than a single FGSM step.",
                       "ascend the loss (+α·sign(grad)) from the current iterate, recomputing the gradient at every "
                       "step.")
    return "stays in ball ∩ box, starts uniformly in the ball, reaches the exact optimum on a linear model, beats FGSM."


@register("targeted_fgsm", "targeted step (eq. 3)", "04a", _RESHAPE_HINT)
def check_targeted_fgsm(fn: Callable) -> str:
    """``targeted_fgsm(model, x, target, eps) -> clip(x - ε·sign(∇_x CE(h(x), target)), 0, 1)``."""
    g = _gen(9)
    x = _images(8, (1, 3, 3), g)
    model = _linear(9, 4, g)
    target = torch.tensor([1, 2, 3, 0, 2, 1, 0, 3])
    eps = torch.tensor([0.05, 0.1, 0.0, 0.2, 0.03, 0.1, 0.05, 0.3], dtype=x.dtype)
    x0, t0, e0 = x.clone(), target.clone(), eps.clone()
    out = _tensor(fn(model, x, target, eps), "targeted_fgsm")
    _unchanged([x0, t0, e0], [x, target, eps], "x, target or eps")
    _shape(out, x.shape, "x_adv")
    _params_untouched(model)
    _in_box(out)
    _in_linf_ball(out - x, eps, 1e-7)
    grad = _input_grad(model, x, target)
    ref = (x - _col(eps, x) * grad.sign()).clamp(0, 1)
    if _close(out, ref, 1e-7):
        return "x - ε·sign(∇ L(target)) decreases the target's loss; per-sample ε, ε = 0 and the box respected."
    with torch.no_grad():
        before = F.cross_entropy(model(x), target, reduction="none")
        after = F.cross_entropy(model(out), target, reduction="none")
    if bool((after[eps > 0] > before[eps > 0]).any()):
        raise Mismatch("your step increases the cross-entropy of the target class.",
                       "the targeted step must DEcrease the loss of the target (eq. 3 is an argmin): "
                       "x - ε·sign(∇_x L(y_a, h(x))).")
    raise Mismatch("x_adv differs from clip(x - ε·sign(∇_x L(target)), 0, 1).",
                   "take the gradient of the cross-entropy w.r.t. the target labels, move by exactly ε per pixel.")


@register("cw_margin", "CW margin loss", "04a",
          "use logits.gather(1, y[:, None]) for z_y and logits.scatter(1, y[:, None], float('-inf')) for the others.")
def check_cw_margin(fn: Callable) -> str:
    """``cw_margin(logits, y, kappa=0.0) -> (N,) max(z_y - max_{j != y} z_j, -κ)`` (Carlini & Wagner's f)."""
    from advlab.attacks.cw import cw_margin

    g = _gen(10)
    z = torch.randn((8, 5), generator=g) * 3
    y = torch.tensor([0, 4, 2, 2, 1, 3, 0, 4])
    z[1] = -50.0 - torch.rand(5, generator=g)  # all logits negative, the true one largest: masking matters
    z[1, 4] = -40.0
    z[5] = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])  # a tie
    cases = [(z, y, 0.0), (z, y, 2.0), (torch.randn((6, 2), generator=g) * 2, torch.tensor([0, 1, 1, 0, 0, 1]), 0.5)]
    for logits, labels, kappa in cases:
        l0, y0 = logits.clone(), labels.clone()
        out = _tensor(fn(logits, labels, kappa), "cw_margin")
        _unchanged([l0, y0], [logits, labels], "logits or y")
        _shape(out, (len(logits),), "the margin",
               "return one value per sample, shaped (N,): no .mean() or .sum() over the batch.")
        ref = cw_margin(logits, labels, targeted=False, confidence=kappa)
        if _close(out, ref, 1e-5):
            continue
        true = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
        if _close(out, (other - true).clamp_min(-kappa), 1e-5) or _close(out, other - true, 1e-5):
            raise Mismatch("your margin has the wrong sign.",
                           "CW's f is z_y - max_{j≠y} z_j: positive while the model is still right, and the attack "
                           "minimises it.")
        if _close(out, (true - logits.amax(1)).clamp_min(-kappa), 1e-5) or \
                _close(out, (true - (logits * (1 - F.one_hot(labels, logits.shape[1]))).amax(1)).clamp_min(-kappa),
                       1e-5):
            raise Mismatch("the maximum over the other classes still sees the true class (or a 0 in its place).",
                           "mask the true class with -inf before the max: logits.scatter(1, y[:, None], "
                           "float('-inf')).amax(1); multiplying by a one-hot leaves a 0 that wins when all other "
                           "logits are negative.")
        if kappa > 0 and _close(out, true - other, 1e-5):
            raise Mismatch("κ is ignored.", "floor the margin at -κ: (z_y - max_other).clamp_min(-kappa).")
        raise Mismatch(f"the margin differs from max(z_y - max_(j≠y) z_j, -κ) (κ = {kappa}).",
                       "z_y - max over the other classes, then .clamp_min(-kappa); one value per sample.")
    return "matches max(z_y - max_{j≠y} z_j, -κ) incl. all-negative logits, ties, κ > 0 and 2 classes."


class _CWInner:
    """A stand-in for Carlini–Wagner's inner optimiser with a known answer: the ``inner`` the check hands over.

    Sample i succeeds iff ``c >= threshold[i]``; its perturbation, along a fixed unit direction, has an L2 norm that
    wiggles with log c (the real optimiser's does too: a larger c does not always give a larger perturbation). Every
    call is recorded; a call that is not the whole batch with one c per sample raises :class:`Mismatch` at once.
    """

    def __init__(self, x: Tensor, thresholds: list[float], seed: int) -> None:
        g = _gen(seed)
        n = len(x)
        d = torch.randn(x.shape, generator=g, dtype=torch.float64)
        self.x = x.clone()
        self.direction = d / _col(d.flatten(1).norm(dim=1), d)
        self.threshold = torch.tensor(thresholds, dtype=torch.float64)
        self.scale = 0.08 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64)
        self.phase = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        self.calls: list[Tensor] = []  # the c of every call, float64 (N,)
        self.results: list[tuple[Tensor, Tensor]] = []

    def __call__(self, x: Tensor, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        n = len(self.x)
        if not isinstance(x, Tensor) or tuple(x.shape) != tuple(self.x.shape):
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise Mismatch(f"inner was called on x of shape {got}, not on the whole batch {tuple(self.x.shape)}.",
                           "no Python loop over samples: call inner(x, y, c) once per search step, on the whole "
                           "batch, with c of shape (N,) holding every sample's own constant.")
        if not isinstance(c, Tensor) or tuple(c.shape) != (n,):
            got = f"shape {tuple(c.shape)}" if isinstance(c, Tensor) else f"a {type(c).__name__}"
            raise Mismatch(f"inner was called with c as {got}, not one constant per sample (shape ({n},)).",
                           "keep c as a (N,) tensor, torch.full((len(x),), c_init), and update it per sample with "
                           "torch.where: one shared c for the batch cannot be right for every sample.")
        if not torch.equal(x.detach().cpu().double(), self.x):
            raise Mismatch("inner was called on a modified x.",
                           "every search step restarts from the original input: pass x itself to inner.")
        c = c.detach().cpu().double()
        if not bool(torch.isfinite(c).all()) or bool((c <= 0).any()):
            raise Mismatch("inner was called with a c that is not positive and finite (0, inf or NaN).",
                           "while no c has succeeded (upper bound still unbounded), multiply c by 10 instead of "
                           "bisecting with an infinite upper bound; lower starts at 0, c at c_init.")
        self.calls.append(c.clone())
        radius = self.scale * (1 + 0.6 * torch.sin(2.0 * torch.log(c) + self.phase))
        x_adv = self.x + _col(radius, self.x) * self.direction
        success = c >= self.threshold
        self.results.append((x_adv.clone(), success.clone()))
        return x_adv.to(x.dtype), success


def _cw_search_reference(inner: Callable, x: Tensor, y: Tensor, c_init: float, search_steps: int,
                         keep: str = "best") -> Tensor:
    """The per-sample binary search over c (Carlini & Wagner), and ``keep`` = last-success | last | any-min mistakes."""
    c = torch.full((len(x),), float(c_init), dtype=torch.float64)
    lower, upper = torch.zeros_like(c), torch.full_like(c, math.inf)
    best_l2, best = torch.full_like(c, math.inf), x.clone()
    for _ in range(search_steps):
        x_adv, success = inner(x, y, c)
        l2 = (x_adv - x).flatten(1).norm(dim=1)
        take = {"best": success & (l2 < best_l2), "last-success": success,
                "last": torch.ones_like(success), "any-min": l2 < best_l2}[keep]
        best_l2 = torch.where(take, l2, best_l2)
        best = torch.where(_col(take, x), x_adv, best)
        upper = torch.where(success, torch.minimum(upper, c), upper)
        lower = torch.where(success, lower, torch.maximum(lower, c))
        c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
    return best


def _c_mismatch(calls: list[Tensor], want: list[Tensor], inner: _CWInner, c_init: float, steps: int) -> None:
    """Explain the first search step where the learner's c differs from the reference's (or its number of calls)."""
    if len(calls) != steps:
        raise Mismatch(f"inner was called {len(calls)} times for search_steps = {steps}.",
                       "call inner exactly search_steps times, once per search step with all samples at once (use "
                       "the arguments search_steps and c_init you are given), and do not stop early.")
    for k, (got, ref) in enumerate(zip(calls, want)):
        if torch.allclose(got, ref, rtol=1e-6, atol=0.0):
            continue
        if k == 0:
            raise Mismatch(f"the first search step used c = {got.tolist()}, not c_init = {c_init:g} for every "
                           "sample.", "start every sample at c = c_init: torch.full((len(x),), c_init).")
        if bool((got == got[0]).all()) and not bool((ref == ref[0]).all()):
            raise Mismatch(f"search step {k + 1} gave every sample the same c, although their previous steps "
                           "ended differently (some succeeded, some failed).",
                           "the search is per sample: keep lower, upper and c as (N,) tensors and update each with "
                           "torch.where(success, ..., ...); no single c for the whole batch.")
        i = int((~torch.isclose(got, ref, rtol=1e-6, atol=0.0)).nonzero()[0])
        prev = want[k - 1][i].item()
        succeeded = prev >= inner.threshold[i].item()
        if succeeded and got[i].item() > prev:
            raise Mismatch(f"sample {i} succeeded with c = {prev:.4g}, and your next c is larger "
                           f"({got[i].item():.4g}).",
                           "a success means c can be smaller: it sets the UPPER bound (upper = min(upper, c)); a "
                           "failure sets the LOWER bound (lower = max(lower, c)). Are the two updates swapped?")
        if not succeeded and got[i].item() < prev:
            raise Mismatch(f"sample {i} failed with c = {prev:.4g}, and your next c is smaller "
                           f"({got[i].item():.4g}).",
                           "a failure means c must grow: it sets the LOWER bound (lower = max(lower, c)); a success "
                           "sets the UPPER bound. Are the two updates swapped?")
        if not succeeded and not any(want[j][i].item() >= inner.threshold[i].item() for j in range(k)):
            raise Mismatch(f"sample {i} has not succeeded yet (c = {prev:.4g}); your next c is "
                           f"{got[i].item():.4g}, not 10·c.",
                           "with no successful c yet (upper bound still infinite) there is nothing to bisect: "
                           "multiply c by 10.")
        raise Mismatch(f"search step {k + 1}: sample {i} got c = {got[i].item():.4g}, expected "
                       f"{ref[i].item():.4g}.",
                       "after each step: success -> upper = min(upper, c), failure -> lower = max(lower, c); then "
                       "c = (lower + upper) / 2 where upper is finite, else c·10.")


@register("cw_search", "CW binary search over c", "04a",
          "inner(x, y, c) returns (x_adv, success); keep c, lower, upper, best_l2 as (N,) tensors and update them "
          "with torch.where.")
def check_cw_search(fn: Callable) -> str:
    """``cw_search(inner, x, y, c_init=1.0, search_steps=9) -> x_adv``: the per-sample binary search over CW's c."""
    cases = [
        (_images(8, (1, 3, 3), _gen(21), saturate=0.0) * 0.4 + 0.3,
         [0.003, 0.37, 1.0, 2.6, 37.0, 930.0, math.inf, 0.081], 1.0, 9, 22),
        (_images(5, (6,), _gen(23), saturate=0.0) * 0.4 + 0.3, [0.0021, 4.3, math.inf, 0.56, 1300.0], 0.1, 6, 24),
    ]
    for x, thresholds, c_init, steps, seed in cases:
        y = torch.arange(len(x)) % 3
        inner = _CWInner(x, thresholds, seed)
        x0, y0 = x.clone(), y.clone()
        out = _tensor(fn(inner, x, y, c_init=c_init, search_steps=steps), "cw_search")
        _unchanged([x0, y0], [x, y], "x or y")
        _shape(out, x.shape, "x_adv", "return the best perturbed input per sample, shaped like x.")
        ref_inner = _CWInner(x, thresholds, seed)
        ref = _cw_search_reference(ref_inner, x, y, c_init, steps)
        _c_mismatch(inner.calls, ref_inner.calls, ref_inner, c_init, steps)
        if _close(out, ref, 1e-6):
            continue
        for keep, what, hint in [
            ("last-success", "you return the last successful x_adv, not the smallest successful one.",
             "the perturbation does not shrink monotonically with c: keep best_l2 per sample and replace only when "
             "success & (l2 < best_l2)."),
            ("last", "you return the x_adv of the last search step.",
             "keep the best successful x_adv over all search steps (success & (l2 < best_l2))."),
            ("any-min", "you keep the smallest perturbation even when it did not succeed.",
             "only a successful x_adv counts: replace when success & (l2 < best_l2)."),
        ]:
            if _close(out, _cw_search_reference(_CWInner(x, thresholds, seed), x, y, c_init, steps, keep), 1e-6):
                raise Mismatch(what, hint)
        never = torch.isinf(ref_inner.threshold)
        if not _close(out[never], x[never], 1e-9):
            raise Mismatch("a sample that never succeeded was returned perturbed.",
                           "start from best = x.clone() and replace a sample only with a SUCCESSFUL x_adv: a sample "
                           "that never succeeds comes back unchanged.")
        raise Mismatch("x_adv is not the smallest successful perturbation found over the search steps.",
                       "l2 = (x_adv - x).flatten(1).norm(dim=1); better = success & (l2 < best_l2); update best_l2 "
                       "and best with torch.where(better, ...).")
    return ("per-sample bounds (a success lowers the upper bound, a failure raises the lower one, ×10 while "
            "unbounded), the smallest successful perturbation kept, unsuccessful samples unchanged.")


def _deepfool_variant(model: nn.Module, x: Tensor, y: Tensor, overshoot: float, max_iter: int, mode: str) -> Tensor:
    """Short reference DeepFool (L2, all classes) and two classic mistakes: ``mode`` is total | none | last."""
    k = model(x[:1]).shape[1]
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    active = torch.ones(len(x), dtype=torch.bool)
    for _ in range(max_iter):
        xa = x_adv.clone().requires_grad_(True)
        logits = model(xa)
        active = logits.argmax(1) == y
        if not bool(active.any()):
            break
        z_y = logits.gather(1, y[:, None])
        ws, fs = [], []
        for j in range(k):
            (w,) = torch.autograd.grad((logits[:, j] - z_y[:, 0]).sum(), xa, retain_graph=True)
            ws.append(w.flatten(1))
            fs.append((logits[:, j] - z_y[:, 0]).detach())
        w, f = torch.stack(ws, 1), torch.stack(fs, 1)
        wn = w.norm(dim=2).clamp_min(1e-12)
        dist = (f.abs() / wn).scatter(1, y[:, None], math.inf)
        best = dist.argmin(1)
        rows = torch.arange(len(x))
        r_i = (dist[rows, best] + 1e-4)[:, None] * w[rows, best] / wn[rows, best][:, None]
        r_i = torch.where(active[:, None], r_i, torch.zeros_like(r_i)).view_as(x)
        r_tot = r_tot + r_i
        scale = {"total": 1 + overshoot, "none": 1.0, "last": 1.0}[mode]
        extra = overshoot * r_i if mode == "last" else 0.0
        x_adv = (x + scale * r_tot + extra).clamp(0, 1).detach()
    return x_adv


@register("deepfool_l2", "DeepFool (L2)", "04a",
          "one backward per class k ≠ y (retain_graph=True), distances |f_k| / ||w_k||, no loop over samples.")
def check_deepfool_l2(fn: Callable) -> str:
    """``deepfool_l2(model, x, y, overshoot=0.02, max_iter=50) -> x_adv`` (Moosavi-Dezfooli et al., eq. 2)."""
    from advlab.attacks.deepfool import deepfool_trace

    g = _gen(11)
    # (a) linear model: one step lands on the closest boundary; the overshoot scales the total perturbation
    lin = _linear(6, 3, g, scale=2.0)
    x = 0.4 + 0.2 * torch.rand((6, 6), generator=g, dtype=torch.float64)
    y = lin(x).argmax(1).detach()
    y[5] = (y[5] + 1) % 3  # already misclassified: must come back unchanged
    # (b) a curved model: several steps, so where the overshoot goes matters
    net = _mlp(6, 3, _gen(12), width=16, scale=10.0)
    xn = 0.3 + 0.4 * torch.rand((12, 6), generator=_gen(3), dtype=torch.float64)
    yn = net(xn).argmax(1).detach()
    for model, xx, yy, os_ in [(lin, x, y, 0.0), (lin, x, y, 0.5), (net, xn, yn, 0.02), (net, xn, yn, 0.1)]:
        x0, y0 = xx.clone(), yy.clone()
        out = _tensor(fn(model, xx, yy, overshoot=os_, max_iter=50), "deepfool_l2")
        _unchanged([x0, y0], [xx, yy], "x or y")
        _shape(out, xx.shape, "x_adv")
        _params_untouched(model)
        _in_box(out)
        ref = deepfool_trace(model, xx, yy, norm=2, overshoot=os_, max_iter=50, candidates=3).x_adv
        if _close(out, ref, 5e-4):  # loose enough for where exactly the 1e-4 push goes
            continue
        wrong = model(xx).argmax(1) != yy
        if bool(wrong.any()) and not _close(out[wrong], xx[wrong], 1e-9):
            raise Mismatch("a sample that is already misclassified was moved.",
                           "stop (r_i = 0) for samples whose prediction is no longer y, from the first iteration on.")
        if os_ > 0 and _close(out, _deepfool_variant(model, xx, yy, os_, 50, "none"), 1e-6):
            raise Mismatch("the overshoot is missing.",
                           "after every step query x + (1 + overshoot)·r_tot, and return that point.")
        if os_ > 0 and _close(out, _deepfool_variant(model, xx, yy, os_, 50, "last"), 1e-6):
            raise Mismatch("the overshoot is applied to the last step only.",
                           "the overshoot multiplies the TOTAL perturbation: x + (1 + overshoot)·r_tot.")
        raise Mismatch(f"x_adv differs from DeepFool's (overshoot = {os_}).",
                       "r_i = (|f_l| / ||w_l|| + 1e-4)·w_l / ||w_l|| towards the closest linearised boundary l, "
                       "r_tot += r_i, query x + (1 + overshoot)·r_tot; on a linear model one step lands on the "
                       "boundary.")
    return "lands on the linear boundary in one step, overshoot on the total, matches advlab's deepfool on an MLP."
