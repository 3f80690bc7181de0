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
