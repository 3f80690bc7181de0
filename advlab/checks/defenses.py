"""Checks for the defense tasks of section ④ (solutions/04b_defenses).

The adversarial-training batch, the BPDA straight-through estimator, the power iteration for a spectral norm, the
Lipschitz certificate and randomized smoothing's CERTIFY bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from advlab.checks._core import (
    Mismatch,
    _close,
    _gen,
    _images,
    _in_box,
    _in_linf_ball,
    _linear,
    _linf_corner,
    _params_untouched,
    _shape,
    _tensor,
    _unchanged,
    register,
)


@register("pgd_at_batch", "PGD adversarial-training batch", "04b",
          "craft with your pgd_linf (eps as a (N,) tensor), return (x_adv, y).")
def check_pgd_at_batch(fn: Callable) -> str:
    """``pgd_at_batch(model, xb, yb, eps, alpha, steps) -> (x_adv, yb)``: the inner max of eq. 8, eval mode."""
    g = _gen(13)
    model = _linear(8, 2, g, probe=True)
    xb = _images(10, (1, 2, 4), g)
    yb = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    with torch.no_grad():
        yb[:3] = 1 - model(xb[:3]).argmax(1)  # some labels disagree with the prediction
    model.train()
    probe = model[0]
    probe.modes.clear()
    x0, y0 = xb.clone(), yb.clone()
    out = fn(model, xb, yb, 0.2, 0.1, 8)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"pgd_at_batch returned a {type(out).__name__}, not a pair.", "return (x_adv, y).")
    x_adv, labels = out
    if isinstance(x_adv, Tensor) and (x_adv.requires_grad or x_adv.grad_fn is not None):
        raise Mismatch("x_adv is still attached to the attack's autograd graph.",
                       "return x_adv.detach(): the training step must not backpropagate into the attack.")
    x_adv, labels = _tensor(x_adv, "pgd_at_batch"), _tensor(labels, "pgd_at_batch")
    _unchanged([x0, y0], [xb, yb], "xb or yb")
    _shape(x_adv, xb.shape, "x_adv")
    if not torch.equal(labels, yb):
        raise Mismatch("the labels of the training batch changed.",
                       "adversarial training keeps the true labels: return (x_adv, yb).")
    _params_untouched(model)
    if not probe.modes or any(probe.modes):
        raise Mismatch("the model was in train mode while the attack ran.",
                       "craft in eval mode (model.eval(); batch norm and dropout behave as at test time) and put the "
                       "model back in train mode afterwards.")
    if not model.training:
        raise Mismatch("the model is left in eval mode.", "restore the mode you found: model.train(was_training).")
    _in_box(x_adv)
    _in_linf_ball(x_adv - xb, torch.full((len(xb),), 0.2, dtype=xb.dtype))
    eps = torch.full((len(xb),), 0.2, dtype=xb.dtype)
    if not _close(x_adv, _linf_corner(model, xb, yb, eps), 1e-6):
        with torch.no_grad():
            pred = model(xb).argmax(1)
        if _close(x_adv, _linf_corner(model, xb, pred, eps), 1e-6):
            raise Mismatch("you attacked the model's predictions instead of the true labels.",
                           "craft with the true labels yb (the inner max of eq. 8 is over L(y, h(x̃))).")
        raise Mismatch("x_adv is not the maximiser of the loss on a linear model (PGD should reach it).",
                       "run your PGD (random start, `steps` steps of size alpha, projection) on (xb, yb).")
    return "eval mode while crafting, train mode restored, true labels kept, x_adv detached and in the ball ∩ box."


def _quantize(levels: int) -> Callable[[Tensor], Tensor]:
    def quantize(x: Tensor) -> Tensor:
        return torch.round(x * levels) / levels

    return quantize


@register("straight_through", "BPDA straight-through estimator", "04b",
          "return x + (preprocess(x) - x).detach(): the value of preprocess(x), the gradient of the identity.")
def check_straight_through(fn: Callable) -> str:
    """``straight_through(x, preprocess) -> g(x)`` on the forward pass, identity Jacobian on the backward pass."""
    g = _gen(16)
    cases = [(_images(4, (1, 3, 3), g), _quantize(8), "8-level quantisation"),
             (_images(3, (5,), g, torch.float32), _quantize(2), "2-level quantisation"),
             (_images(3, (2, 2), g), lambda t: t.square(), "a smooth g(x) = x²")]
    for x, pre, name in cases:
        x0 = x.clone()
        xg = x.clone().requires_grad_(True)
        out = fn(xg, pre)
        if not isinstance(out, Tensor):
            _tensor(out, "straight_through")  # raises with a hint for None / non-tensors
        _unchanged([x0], [xg.detach()], "x")
        _shape(out.detach().cpu(), x.shape, "the output", "return a tensor shaped like x.")
        want = pre(x0)
        if not _close(out.detach().cpu(), want, 1e-6):
            if _close(out.detach().cpu(), x0, 1e-6):
                raise Mismatch(f"on {name} your forward pass returns x itself, not the preprocessed input.",
                               "BPDA keeps the defended forward pass: the value must be preprocess(x).")
            raise Mismatch(f"on {name} the forward value differs from preprocess(x).",
                           "the value must be exactly preprocess(x); only the backward pass is approximated.")
        if not out.requires_grad:
            raise Mismatch("the output does not depend on x in the autograd graph (no gradient can flow).",
                           "detach only the correction (preprocess(x) - x), not the whole output.")
        weight = torch.randn(x.shape, generator=g, dtype=out.dtype)
        (grad,) = torch.autograd.grad((out * weight).sum(), xg, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad.detach().cpu()
        if _close(grad, weight, 1e-6):
            continue
        if bool((grad == 0).all()):
            raise Mismatch(f"on {name} the gradient through your function is zero.",
                           "rounding has zero derivative: wrap the correction in .detach(), "
                           "x + (preprocess(x) - x).detach(), so the backward pass sees the identity.")
        raise Mismatch(f"on {name} the gradient is not that of the identity (it is the true derivative of g, or "
                       "scaled).", "the straight-through estimator treats preprocess as the identity on the "
                       "backward pass: x + (preprocess(x) - x).detach().")
    return "forward = preprocess(x), backward = identity, on quantisations and a smooth g; x left unchanged."


@register("spectral_norm", "power iteration for the spectral norm", "04b",
          "v must have W.shape[1] entries: iterate v <- Wᵀ(W v) / ||Wᵀ(W v)||.")
def check_spectral_norm(fn: Callable) -> str:
    """``spectral_norm(W, iters=100) -> σ_max(W)`` (float or 0-dim tensor) by power iteration on WᵀW."""
    g = _gen(14)

    def with_singular_values(s: list[float], m: int, n: int, dtype=torch.float64) -> Tensor:
        u, _ = torch.linalg.qr(torch.randn((m, m), generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn((n, n), generator=g, dtype=torch.float64))
        d = torch.zeros((m, n), dtype=torch.float64)
        idx = torch.arange(len(s))
        d[idx, idx] = torch.tensor(s, dtype=torch.float64)
        return (u @ d @ v.T).to(dtype)

    mats = [with_singular_values([7, 4, 2, 1, 0.5, 0.1], 6, 9),
            with_singular_values([3, 1], 5, 2),
            torch.randn((1, 5), generator=g, dtype=torch.float64),
            torch.outer(torch.randn(4, generator=g), torch.randn(6, generator=g)),  # rank 1, float32
            with_singular_values([50, 20, 5], 4, 4, torch.float32)]  # large σ: overflows without normalising
    for w in mats:
        w0 = w.clone()
        out = _tensor(fn(w, iters=100), "spectral_norm").double()
        _unchanged([w0], [w], "W")
        if out.numel() != 1:
            raise Mismatch(f"spectral_norm returned {out.numel()} values.", "return one number, σ_max = ||W v||.")
        sigma = out.reshape(()).item()
        true = torch.linalg.matrix_norm(w.double(), ord=2).item()
        if math.isfinite(sigma) and abs(sigma - true) <= 1e-3 * true:
            continue
        if not math.isfinite(sigma) or sigma > 1.5 * true:
            raise Mismatch(f"your estimate is {sigma:.4g} for a matrix whose σ_max is {true:.4g}.",
                           "normalise v after every step (v = v / v.norm()), and return ||W v|| for a unit v.")
        if abs(sigma - torch.linalg.matrix_norm(w.double()).item()) <= 1e-3 * true:
            raise Mismatch("you return the Frobenius norm ||W||_F, which is >= σ_max.",
                           "the spectral norm is max ||W v|| over unit v: iterate v <- WᵀW v / ||WᵀW v||.")
        raise Mismatch(f"your estimate is {sigma:.4g}, σ_max is {true:.4g}.",
                       "iterate v <- WᵀW v / ||WᵀW v|| `iters` times and return ||W v|| (or sqrt of vᵀWᵀW v).")
    return "agrees with torch.linalg.matrix_norm(W, ord=2) to 1e-3 on 5 matrices (non-square, rank 1, large σ)."


@register("certified_radius", "Lipschitz certificate", "04b",
          "logits.topk(2, dim=1).values gives the top two logits of every sample.")
def check_certified_radius(fn: Callable) -> str:
    """``certified_radius(logits, L) -> (N,) (z_top - z_runner_up) / (√2·L)`` (compare advlab.lipschitz)."""
    from advlab.lipschitz import certified_radius

    g = _gen(15)
    z = torch.randn((7, 5), generator=g) * 2
    z[2] = torch.tensor([1.0, 3.0, 3.0, 0.0, -1.0])  # a tie: radius 0
    cases = [(z, 2.5), (torch.randn((4, 2), generator=g), 0.7), (z[:3], 1.0)]
    for logits, L in cases:
        l0 = logits.clone()
        out = _tensor(fn(logits, L), "certified_radius")
        _unchanged([l0], [logits], "logits")
        _shape(out, (len(logits),), "the radius", "one radius per sample, shaped (N,).")
        ref = certified_radius(logits, L)
        if _close(out, ref, 1e-5):
            continue
        if _close(out, ref * math.sqrt(2), 1e-5):
            raise Mismatch("your radius is √2 too large.",
                           "closing a gap between two logits needs a logit change of gap/√2 in L2: divide by √2·L.")
        if bool((out < -1e-7).any()):
            raise Mismatch("a radius is negative.", "the margin is top logit minus runner-up, which is >= 0.")
        raise Mismatch("your radius differs from (z_top - z_second) / (√2·L).",
                       "use the gap between the two largest logits of each sample (not the true class).")
    return "matches margin / (√2·L) incl. ties and 2 classes."


@register("certify_counts", "randomized-smoothing CERTIFY bound", "04b",
          "scipy.stats.beta.ppf(alpha, n_a, n - n_a + 1) is the one-sided lower bound; scipy.stats.norm.ppf is Φ⁻¹.")
def check_certify_counts(fn: Callable) -> str:
    """``certify_counts(n_a, n, alpha, sigma) -> (p_a, radius)``: one-sided Clopper–Pearson, abstain at p_a <= 1/2."""
    from scipy import stats

    from advlab.smoothing import lower_confidence_bound

    for n, alpha, sigma in [(100, 0.001, 0.25), (1000, 0.05, 0.5)]:
        n_a = torch.tensor([0, 10, 50, 52, 60, 75, 90, 99, n * 99 // 100, n])
        k0 = n_a.clone()
        out = fn(n_a, n, alpha, sigma)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mismatch(f"certify_counts returned a {type(out).__name__}, not a pair.", "return (p_a, radius).")
        p_a = _tensor(out[0], "certify_counts").double()
        rad = _tensor(out[1], "certify_counts").double()
        _unchanged([k0], [n_a], "n_a")
        _shape(p_a, n_a.shape, "p_a", "one lower bound per sample, shaped (N,).")
        _shape(rad, n_a.shape, "radius", "one radius per sample, shaped (N,).")
        ref_p = lower_confidence_bound(n_a, n, alpha).double().cpu()
        if not bool(torch.isfinite(p_a).all()):
            raise Mismatch("p_a contains NaN (at n_a = 0 the Beta quantile is undefined).",
                           "the lower bound is 0 when n_a = 0: torch.where(n_a > 0, bound, 0).")
        if not _close(p_a, ref_p, 1e-7):
            k = n_a.numpy()
            two = torch.as_tensor(np.where(k > 0, stats.beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0))
            if _close(p_a, two, 1e-7):
                raise Mismatch("your lower bound is two-sided (it spends α/2 on each side).",
                               "CERTIFY needs only a lower bound: put the whole α on one side, Beta(α; n_a, n-n_a+1).")
            if _close(p_a, n_a.double() / n, 1e-7):
                raise Mismatch("p_a is the point estimate n_a / n.",
                               "use the Clopper–Pearson lower confidence bound, so the certificate holds w.p. 1 - α.")
            raise Mismatch("p_a differs from the one-sided Clopper–Pearson lower bound.",
                           "p_a = Beta quantile at α with parameters (n_a, n - n_a + 1), 0 when n_a = 0.")
        ok = ref_p > 0.5
        if bool((rad < 0).any()):
            raise Mismatch("a radius is negative.", "abstain (radius 0) when p_a <= 1/2 instead of σ·Φ⁻¹(p_a) < 0.")
        if bool((rad[~ok] != 0).any()):
            raise Mismatch("you certify a sample whose lower bound p_a <= 1/2.", "abstain (radius 0) when p_a <= 1/2.")
        ref_r = torch.where(ok, sigma * torch.as_tensor(stats.norm.ppf(ref_p.clamp(0.5, 1).numpy())),
                            torch.zeros_like(ref_p))
        if bool((rad[ok] == 0).any()):
            raise Mismatch("you abstain although p_a > 1/2.", "abstain only when p_a <= 1/2.")
        if not _close(rad, ref_r, 1e-7 + 1e-6 * sigma):
            raise Mismatch("the radius differs from σ·Φ⁻¹(p_a).", "radius = sigma * scipy.stats.norm.ppf(p_a).")
    return "one-sided Clopper–Pearson bound, radius σ·Φ⁻¹(p_A), abstains exactly when p_A <= 1/2."
