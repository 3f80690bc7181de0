"""Checks for the tasks of section ⑤ (solutions/05_robustness_vs_generalization): robustness vs generalization.

Tsipras et al.'s exact robust margin of a linear model, Ilyas et al.'s D_det / D_rand relabelling and one step of
the representation inversion behind D_R / D_NR, and Stutz et al.'s on-manifold attack step on the FONTS θ, the
on-manifold adversarial-training step built on it, and the share of a perturbation that lies in the manifold's
tangent space.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from advlab.checks._core import (
    Mismatch,
    _close,
    _col,
    _gen,
    _images,
    _in_box,
    _params_untouched,
    _shape,
    _tensor,
    _unchanged,
    register,
)
from advlab.checks._training import _check_update, _params, _Recorder, _same, _weight_step_inputs

# ------------------------------------------------------------------------------------------------ Tsipras margin


@register("robust_margin", "Tsipras: exact robust margin of a linear model", "05",
          "x is (N, D) and w is (D,): x @ w gives the (N,) scores; eps is a float or a (N,) tensor.")
def check_robust_margin(fn: Callable) -> str:
    """``robust_margin(w, b, x, y, eps) -> (N,) y·(wᵀx + b) − ε·‖w‖₁`` (compare advlab.toy.robust_margin)."""
    from advlab.toy import robust_margin

    g = _gen(50)
    w = torch.randn(7, generator=g, dtype=torch.float64)
    w[2] = 0.0  # a zero weight: it costs the adversary nothing
    x = torch.randn((9, 7), generator=g, dtype=torch.float64)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0], dtype=torch.float64)
    b = torch.tensor(0.7, dtype=torch.float64)
    per_sample = torch.tensor([0.0, 0.1, 0.5, 0.0, 1.0, 0.2, 0.3, 0.05, 2.0], dtype=torch.float64)
    cases = [(w, b, x, y, 0.0), (w, b, x, y, 0.3), (w, b, x, y, per_sample), (w * 3, -b, x[:4], y[:4], 0.25)]
    for ww, bb, xx, yy, eps in cases:
        before = [ww.clone(), xx.clone(), yy.clone()]
        out = _tensor(fn(ww, bb, xx, yy, eps), "robust_margin")
        _unchanged(before, [ww, xx, yy], "w, x or y")
        _shape(out, (len(xx),), "the margin", "one margin per sample, shaped (N,).")
        ref = robust_margin(ww, bb, xx, yy, eps)
        if _close(out, ref, 1e-9):
            continue
        e = torch.as_tensor(eps, dtype=xx.dtype)
        clean = yy * (xx @ ww + bb)
        if not isinstance(eps, Tensor) and eps == 0.0:
            raise Mismatch("with ε = 0 your margin differs from y·(wᵀx + b).",
                           "the clean margin is y * (x @ w + b): the label's sign times the score.")
        if _close(out, clean, 1e-9):
            raise Mismatch("your margin ignores ε: it is the clean margin y·(wᵀx + b).",
                           "the adversary takes δ = −ε·y·sign(w) and lowers the margin by ε·‖w‖₁.")
        if _close(out, clean - e * ww.norm(), 1e-9):
            raise Mismatch("you subtract ε·‖w‖₂: that is the worst case in an L2 ball.",
                           "in the ℓ∞ ball, max over |δ_i| <= ε of wᵀδ is ε·Σ|w_i| = ε·‖w‖₁ (Hölder's dual norm).")
        if _close(out, clean - e * ww.abs().amax(), 1e-9):
            raise Mismatch("you subtract ε·max|w_i| (‖w‖∞); every coordinate may move by ε, not just one.",
                           "the dual norm of ℓ∞ is ℓ1: subtract ε·w.abs().sum().")
        if _close(out, yy * (xx @ ww + bb - e * ww.abs().sum()), 1e-9):
            raise Mismatch("the ε-term changes sign with y: for y = −1 your 'worst case' raises the margin.",
                           "subtract ε·‖w‖₁ outside the product with y: y·(wᵀx + b) − ε·‖w‖₁.")
        if _close(out, clean - e * (ww.abs().sum() + bb.abs()), 1e-9):
            raise Mismatch("you include the bias in ‖w‖₁; the adversary cannot change b.",
                           "only the weights multiply δ: subtract ε·w.abs().sum().")
        raise Mismatch("your margin differs from y·(wᵀx + b) − ε·‖w‖₁.",
                       "one margin per sample; ε may be a (N,) tensor, one radius per sample.")
    return "matches y·(wᵀx + b) − ε·‖w‖₁ (ε = 0, per-sample ε, y = ±1, a bias, a zero weight)."


# ---------------------------------------------------------------------------------------- D_det / D_rand targets


class _CountCalls(TorchFunctionMode):
    """Counts torch function and tensor-method calls (a Python loop over samples makes O(N) of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _targets(fn: Callable, y: Tensor, classes: int, kind: str, seed: int | None, what: str) -> Tensor:
    y0 = y.clone()
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    out = _tensor(fn(y, classes, kind, generator=gen), what)
    _unchanged([y0], [y], "y")
    _shape(out, y.shape, what, "one target per label, shaped (N,).")
    if out.is_floating_point() or out.dtype == torch.bool:
        raise Mismatch(f"{what} has dtype {out.dtype}, not an integer label tensor.",
                       "build the targets with integer ops (torch.randint, %) so they stay int64 like y.")
    if len(out) and (int(out.min()) < 0 or int(out.max()) >= classes):
        raise Mismatch(f"{what} has labels outside [0, {classes - 1}] (from {int(out.min())} to {int(out.max())}).",
                       "wrap around with % classes.")
    return out


@register("feature_targets", "D_det / D_rand relabelling", "05",
          "kind is 'det' or 'rand'; y is a (N,) int64 tensor; use torch.randint(..., generator=generator).")
def check_feature_targets(fn: Callable) -> str:
    """``feature_targets(y, classes, kind, generator=None) -> (N,) t``: ``(y + 1) mod C`` or uniform among t != y."""
    g = _gen(51)
    for classes in (10, 2, 3):
        y = torch.randint(0, classes, (200,), generator=g)
        y[:classes] = torch.arange(classes)  # every class, including the last one (it must wrap to 0)
        det = _targets(fn, y, classes, "det", 0, "the D_det targets")
        ref = (y + 1) % classes
        if not torch.equal(det, ref):
            if torch.equal(det, (y - 1) % classes):
                raise Mismatch("your D_det targets are (y − 1) mod C.", "Ilyas et al. use the next class: (y + 1) % C.")
            raise Mismatch("your D_det targets differ from (y + 1) mod C.",
                           "every label moves to the next class, and the last class wraps to 0: (y + 1) % classes.")
        rand = _targets(fn, y, classes, "rand", 0, "the D_rand targets")
        if bool((rand == y).any()):
            raise Mismatch(f"{int((rand == y).sum())} of {len(y)} D_rand targets equal their true label "
                           f"(C = {classes}).",
                           "draw among the C − 1 *other* classes: t = (y + k) % C with k uniform in {1, …, C − 1}.")
    # uniform among the other classes: the offset (t − y) mod C must cover 1 … C − 1 evenly, for every y
    classes, n = 10, 18000
    y = torch.randint(0, classes, (n,), generator=g)
    rand = _targets(fn, y, classes, "rand", 5, "the D_rand targets")
    offset = (rand - y) % classes
    counts = torch.bincount(offset, minlength=classes)[1:].double()
    expected = n / (classes - 1)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()  # 8 degrees of freedom: > 45 has p < 1e-6
    if chi2 > 45:
        missing = [k for k in range(1, classes) if counts[k - 1] < 0.2 * expected]
        tail = f"; offsets {missing} never or rarely occur" if missing else ""
        raise Mismatch(f"your D_rand targets are not uniform among the other classes (χ² = {chi2:.0f} over the "
                       f"offsets (t − y) mod C = 1 … {classes - 1}{tail}).",
                       "every class other than y must be equally likely: (y + torch.randint(1, C, ...)) % C; "
                       "randint's upper bound is exclusive.")
    per_class = torch.stack([torch.bincount(rand[y == c], minlength=classes).double() for c in range(classes)])
    share = per_class / per_class.sum(1, keepdim=True)
    off_diag = share[~torch.eye(classes, dtype=torch.bool)]
    if float((off_diag - 1 / (classes - 1)).abs().max()) > 0.06:
        raise Mismatch("for some true class y the targets favour some classes over others.",
                       "draw the target independently of everything but y, uniformly among the other C − 1 classes.")
    # the generator decides: the same generator seed gives the same targets whatever the global seed
    torch.manual_seed(1)
    a = _targets(fn, y[:500], classes, "rand", 7, "the D_rand targets")
    torch.manual_seed(2)
    b = _targets(fn, y[:500], classes, "rand", 7, "the D_rand targets")
    if not torch.equal(a, b):
        raise Mismatch("with the same generator your D_rand targets change when the global random seed changes.",
                       "pass generator=generator to torch.randint, so that the data set is reproducible.")
    if torch.equal(a, _targets(fn, y[:500], classes, "rand", 8, "the D_rand targets")):
        raise Mismatch("a different generator seed gives the same D_rand targets.",
                       "draw the random offsets with torch.randint(..., generator=generator).")
    # vectorised: the number of torch calls must not grow with N
    calls = []
    for size in (16, 1024):
        with _CountCalls() as counter:
            _targets(fn, y[:size], classes, "rand", 0, "the D_rand targets")
            _targets(fn, y[:size], classes, "det", 0, "the D_det targets")
        calls.append(counter.calls)
    if calls[1] > calls[0] + 100:
        raise Mismatch(f"your function makes {calls[0]} torch calls for 16 labels and {calls[1]} for 1024: it loops "
                       "over the samples in Python.",
                       "work on the whole (N,) tensor at once: (y + 1) % C and (y + torch.randint(1, C, y.shape, "
                       "generator=generator)) % C.")
    return "D_det = (y + 1) mod C; D_rand uniform among the C − 1 others, reproducible, vectorised (C = 2, 3, 10)."


# -------------------------------------------------------------------------------------- representation inversion


def _representation(g: torch.Generator, d: int, k: int) -> nn.Sequential:
    """A small smooth representation (N, 1, 4, 4) -> (N, k) in eval mode, float64."""
    l1, l2 = nn.Linear(d, 12).double(), nn.Linear(12, k).double()
    with torch.no_grad():
        for lin in (l1, l2):
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=torch.float64)
                             / math.sqrt(lin.weight.shape[1]))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=torch.float64) * 0.1)
    return nn.Sequential(nn.Flatten(), l1, nn.Tanh(), l2).eval()


def _inversion_reference(g: nn.Module, x_r: Tensor, target: Tensor, step_size: float) -> Tensor:
    xr = x_r.detach().clone().requires_grad_(True)
    dist = (g(xr).flatten(1) - target).norm(dim=1)
    (grad,) = torch.autograd.grad(dist.sum(), xr)
    gnorm = _col(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
    return (x_r - step_size * grad / gnorm).clamp(0, 1).detach()


@register("inversion_step", "representation inversion step (D_R)", "05",
          "g(x_r) is (N, K) like target; differentiate the sum of the per-sample distances w.r.t. x_r only.")
def check_inversion_step(fn: Callable) -> str:
    """``inversion_step(g, x_r, target, step_size) -> clip(x_r − α·∇/‖∇‖₂, 0, 1)``, ∇ of Σᵢ ‖g(x_r)ᵢ − targetᵢ‖₂."""
    gen = _gen(52)
    g = _representation(gen, 16, 5)
    x_r = _images(6, (1, 4, 4), gen, saturate=0.3)
    x_t = _images(6, (1, 4, 4), gen, saturate=0.3)
    x_t[3] = x_r[3]  # sample 3 already has the target representation: distance 0, it must not move
    x_r[4] = x_r[4] * 1e-3 + 0.5  # sample 4: a nearly flat image far from its target (a large gradient)
    with torch.no_grad():
        target = g(x_t)
    for alpha in (0.1, 0.5):
        before = [x_r.clone(), target.clone()]
        out = _tensor(fn(g, x_r, target, alpha), "inversion_step")
        _unchanged(before, [x_r, target], "x_r or target")
        _shape(out, x_r.shape, "the new x_r", "return an image batch shaped like x_r.")
        _params_untouched(g)
        if not bool(torch.isfinite(out).all()):
            raise Mismatch("the new x_r contains NaN: a sample already at its target has distance 0, so its "
                           "gradient is 0 (or NaN through a sqrt).",
                           "compute the distance with (g(x_r) - target).norm(dim=1) (its gradient at 0 is 0) and "
                           "divide by the gradient's norm clamped with .clamp_min(1e-12).")
        _in_box(out, "the new x_r")
        ref = _inversion_reference(g, x_r, target, alpha)
        if _close(out, ref, 1e-7):
            continue
        if not _close(out[3], x_r[3], 1e-9):
            raise Mismatch("a sample that already matches its target representation moved.",
                           "at distance 0 the gradient is 0; with the norm clamped (clamp_min(1e-12)) the step is 0.")
        step = (out - x_r).flatten(1)
        xr = x_r.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((g(xr).flatten(1) - target).norm(dim=1).sum(), xr)
        if bool(((step * grad.flatten(1)).sum(1) > 1e-12).any()):
            raise Mismatch("your step increases the representation distance.",
                           "descend: x_r − α·∇/‖∇‖ (the inversion *minimises* ‖g(x_r) − g(x)‖).")
        raw = (x_r - alpha * grad).clamp(0, 1)
        if _close(out, raw, 1e-7):
            raise Mismatch("you step along the raw gradient; its length differs from sample to sample.",
                           "normalise each sample's gradient to unit L2 norm: grad / grad.flatten(1).norm(dim=1) "
                           "(reshaped to broadcast), so that every sample moves by α.")
        whole = (x_r - alpha * grad / grad.norm().clamp_min(1e-12)).clamp(0, 1)
        if _close(out, whole, 1e-7):
            raise Mismatch("you normalise by the norm of the whole batch's gradient, not per sample.",
                           "one norm per sample: grad.flatten(1).norm(dim=1), reshaped with .view(-1, 1, 1, 1).")
        raise Mismatch("your new x_r differs from clip(x_r − α·∇/‖∇‖₂, 0, 1).",
                       "∇ = gradient of Σᵢ ‖g(x_r)ᵢ − targetᵢ‖₂ w.r.t. x_r; normalise per sample, step, clamp to "
                       "[0, 1].")
    return "matches the normalised-gradient step (per-sample norm, clamp to [0, 1], a sample at distance 0 stays)."


# ------------------------------------------------------------------------------------------------ FONTS θ step


@register("theta_step", "on-manifold attack step on the FONTS θ", "05",
          "theta, grad, theta0 are (N, 6); eps is (N,); low and high are the (6,) data range of θ.")
def check_theta_step(fn: Callable) -> str:
    """``theta_step(theta, grad, theta0, eps, alpha, low, high)``: θ + α·sign(grad) projected onto
    [θ0 − ε, θ0 + ε] ∩ [low, high] (compare advlab.manifold.theta_box)."""
    from advlab.data import fonts
    from advlab.manifold import theta_box

    gen = _gen(53)
    low, high = fonts.theta_bounds("hard")
    low, high = low.double(), high.double()
    n = 8
    theta0 = low + torch.rand((n, 6), generator=gen, dtype=torch.float64) * (high - low)
    theta0[1] = high  # at the top of the data range: the box is clipped there
    theta0[2] = low
    eps = torch.tensor([0.3, 0.1, 0.2, 0.0, 0.05, 1.0, 0.3, 0.15], dtype=torch.float64)
    u = torch.rand((n, 6), generator=gen, dtype=torch.float64) * 2 - 1
    lo, hi = theta_box(theta0, eps)
    theta = torch.minimum(torch.maximum(theta0 + _col(eps, theta0) * u, lo), hi)  # an earlier iterate in the box
    grad = torch.randn((n, 6), generator=gen, dtype=torch.float64) * 10
    grad[0, 2] = 0.0  # zero gradient: that coordinate stays
    for alpha in (0.05, 0.5):
        before = [theta.clone(), grad.clone(), theta0.clone(), eps.clone()]
        out = _tensor(fn(theta, grad, theta0, eps, alpha, low, high), "theta_step")
        _unchanged(before, [theta, grad, theta0, eps], "theta, grad, theta0 or eps")
        _shape(out, theta.shape, "the new θ", "return (N, 6), one θ per sample.")
        ref = torch.minimum(torch.maximum(theta + alpha * grad.sign(), lo), hi)
        if _close(out, ref, 1e-9):
            continue
        if bool((out < low - 1e-9).any() or (out > high + 1e-9).any()):
            raise Mismatch("the new θ leaves the data range [low, high]: the decoded image is no longer a sample "
                           "of the data distribution (off the manifold the data covers).",
                           "intersect the ε-box with the data range: lower bound max(θ0 − ε, low), upper bound "
                           "min(θ0 + ε, high).")
        if bool(((out - theta0).abs() > _col(eps, theta0) + 1e-9).any()):
            if _close(out, torch.minimum(torch.maximum(theta + alpha * grad.sign(), torch.maximum(theta - _col(
                    eps, theta), low)), torch.minimum(theta + _col(eps, theta), high)), 1e-9):
                raise Mismatch("you project around the current θ instead of the clean θ0: the iterates can drift "
                               "arbitrarily far from θ0.",
                               "the box is [θ0 − ε, θ0 + ε] around the *clean* θ0, the same at every step.")
            raise Mismatch("the new θ is further than ε from θ0 (ε is per sample; ε = 0 allows no change).",
                           "clamp each coordinate into [θ0 − ε, θ0 + ε] with ε reshaped to (N, 1).")
        if _close(out, torch.minimum(torch.maximum(theta + alpha * grad, lo), hi), 1e-9):
            raise Mismatch("you step along the raw gradient.",
                           "an L∞ attack step on θ moves every coordinate by α·sign(grad) (grad.sign()).")
        if _close(out, torch.minimum(torch.maximum(theta - alpha * grad.sign(), lo), hi), 1e-9):
            raise Mismatch("your step goes down the loss.",
                           "the attack ascends the classifier's loss: θ + α·sign(grad).")
        raise Mismatch("your new θ differs from clip(θ + α·sign(grad), max(θ0 − ε, low), min(θ0 + ε, high)).",
                       "step from the current θ, then clamp into the box around θ0 intersected with the data range.")
    return "θ + α·sign(∇) projected onto [θ0 − ε, θ0 + ε] ∩ the data range (per-sample ε, ε = 0, range borders)."


# -------------------------------------------------------------------------------------------- tangent fraction


@register("tangent_fraction", "share of a perturbation in the manifold's tangent space", "05",
          "J is (N, D, k) and delta (N, D); torch.linalg.qr and torch.linalg.lstsq work on batches.")
def check_tangent_fraction(fn: Callable) -> str:
    """``tangent_fraction(J, delta) -> (N,) ‖P δ‖² / ‖δ‖²`` with P = J (JᵀJ)⁻¹ Jᵀ the projection onto span(J)."""
    gen = _gen(54)
    n, d, k = 7, 20, 3
    J = torch.randn((n, d, k), generator=gen, dtype=torch.float64)
    J[:, :, 1] = J[:, :, 0] + 0.3 * J[:, :, 1]  # correlated, non-normalised columns (like ∂x/∂θ on FONTS)
    J[:, :, 2] *= 5.0
    delta = torch.randn((n, d), generator=gen, dtype=torch.float64)
    delta[1] = J[1] @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)  # inside the tangent space: 1
    a = torch.randn((d, 1), generator=gen, dtype=torch.float64)
    q = torch.linalg.qr(J[2]).Q
    delta[2] = (a - q @ (q.T @ a))[:, 0]  # orthogonal to it: 0
    delta[3] = delta[3] * 1e3  # the fraction does not depend on the size of δ
    before = [J.clone(), delta.clone()]
    out = _tensor(fn(J, delta), "tangent_fraction").double()
    _unchanged(before, [J, delta], "J or delta")
    _shape(out, (n,), "the fraction", "one fraction per sample, shaped (N,).")
    Q = torch.linalg.qr(J).Q
    proj = (Q @ (Q.transpose(1, 2) @ delta[..., None]))[..., 0]
    ref = proj.pow(2).sum(1) / delta.pow(2).sum(1)
    if _close(out, ref, 1e-6):
        return "matches ‖Pδ‖²/‖δ‖² with P = J(JᵀJ)⁻¹Jᵀ (correlated columns, δ in and orthogonal to the span)."
    if bool((out < -1e-9).any() or (out > 1 + 1e-9).any()):
        raise Mismatch(f"a fraction lies outside [0, 1] (range {out.min().item():.3g} … {out.max().item():.3g}).",
                       "‖Pδ‖ <= ‖δ‖ for an orthogonal projection P: orthonormalise J first (torch.linalg.qr(J).Q), "
                       "then Pδ = Q Qᵀ δ.")
    if _close(out, ref.sqrt(), 1e-6):
        raise Mismatch("you return ‖Pδ‖ / ‖δ‖, the ratio of norms.", "the share of energy is squared: ‖Pδ‖² / ‖δ‖².")
    cos2 = ((J.transpose(1, 2) @ delta[..., None])[..., 0] ** 2 / (J.pow(2).sum(1) * delta.pow(2).sum(1, keepdim=True)))
    if _close(out, cos2.sum(1).clamp(max=1.0), 1e-6) or _close(out, cos2.sum(1), 1e-6):
        raise Mismatch("you add up the squared cosines with the columns of J, as if they were orthogonal.",
                       "the columns ∂x/∂θ_j are correlated: orthonormalise them (torch.linalg.qr(J).Q) or solve the "
                       "least-squares problem min_c ‖Jc − δ‖ (torch.linalg.lstsq).")
    raise Mismatch("your fraction differs from ‖Pδ‖² / ‖δ‖² with P = J (JᵀJ)⁻¹ Jᵀ.",
                   "Pδ = Q Qᵀ δ with Q = torch.linalg.qr(J).Q, per sample (batched matmul with .transpose(1, 2)).")


# ---------------------------------------------------------------------------------- on-manifold training step
def _toy_decoder(a: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """A small smooth generator in place of fonts.decode: (prototypes (M, 16), θ (M, 6)) -> images (M, 1, 4, 4)."""

    def decode(protos: Tensor, theta: Tensor) -> Tensor:
        return torch.sigmoid(protos.reshape(len(protos), 16) + theta @ a).view(len(theta), 1, 4, 4)

    return decode


def _on_manifold_reference(model: nn.Module, decode: Callable, protos: Tensor, theta0: Tensor, y: Tensor, eps: float,
                           alpha: float, steps: int, low: Tensor, high: Tensor, lr: float, data_range: bool = True,
                           sign: float = 1.0, attacked: int | None = None):
    """Exact reference: θ-PGD from θ0 on the first N // 2 samples, then one SGD step on the mixed batch.

    Returns (weights after the step, weight gradients, training batch, loss)."""
    ref = copy.deepcopy(model)
    k = len(y) // 2 if attacked is None else attacked
    t0 = theta0[:k]
    lo, hi = t0 - eps, t0 + eps
    if data_range:
        lo, hi = torch.maximum(lo, low), torch.minimum(hi, high)
    theta = t0.clone()
    for _ in range(steps):
        tg = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(ref(decode(protos[:k], tg)), y[:k], reduction="sum"), tg)
        theta = torch.minimum(torch.maximum(theta + sign * alpha * grad.sign(), lo), hi)
    with torch.no_grad():
        xb = torch.cat([decode(protos[:k], theta), decode(protos[k:], theta0[k:])])
    params = list(ref.parameters())
    loss = F.cross_entropy(ref(xb), y)
    grads = [g.detach() for g in torch.autograd.grad(loss, params)]
    with torch.no_grad():
        for p, gr in zip(params, grads):
            p -= lr * gr
    return [p.detach().clone() for p in params], grads, xb, loss.item()


@register("on_manifold_step", "on-manifold adversarial training step (θ-PGD in the batch)", "05",
          "decode(protos[:k], theta) renders the first k samples; eps is one number here: theta_step wants it as "
          "torch.full((k,), eps, dtype=theta0.dtype).")
def check_on_manifold_step(fn: Callable) -> str:
    """``on_manifold_step(model, optimizer, decode, protos, theta0, y, eps, alpha, steps, low, high) -> loss``: θ-PGD
    from θ0 on the first N // 2 samples (eval mode), then one weight step on adversarial + clean images."""
    from advlab.data import fonts

    gen = _gen(55)
    low, high = (b.double() for b in fonts.theta_bounds("hard"))
    n, k, eps, alpha, steps, lr = 7, 3, 0.3, 0.1, 4, 0.5
    lin = nn.Linear(16, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn((3, 16), generator=gen, dtype=torch.float64))
        lin.bias.copy_(torch.randn((3,), generator=gen, dtype=torch.float64) * 0.1)
    model = nn.Sequential(_Recorder(), nn.Flatten(), lin).train()
    decode = _toy_decoder(torch.randn((6, 16), generator=gen, dtype=torch.float64) * 2)
    protos = torch.randn((n, 16), generator=gen, dtype=torch.float64)
    theta0 = low + torch.rand((n, 6), generator=gen, dtype=torch.float64) * (high - low)
    theta0[0] = high  # at the border of the data range: the ε-box is clipped there
    theta0[1] = low
    y = torch.randint(0, 3, (n,), generator=gen)
    args = (decode, protos, theta0, y, eps, alpha, steps, low, high)
    initial, before = copy.deepcopy(model), _params(model)
    want, grads, x_ref, loss_ref = _on_manifold_reference(model, *args, lr)
    recorder = model[0]
    recorder.calls.clear()
    kept = [protos.clone(), theta0.clone(), y.clone()]
    out = fn(model, torch.optim.SGD(model.parameters(), lr=lr), *args)
    _unchanged(kept, [protos, theta0, y], "protos, theta0 or y")
    if _same(_params(model), before, 0.0):
        raise Mismatch("the weights did not change.",
                       "after the attack: optimizer.zero_grad(), loss.backward() on the loss of the mixed batch, "
                       "optimizer.step().")
    (x_in,) = _weight_step_inputs(recorder, 1, "the weight step")
    _shape(x_in, x_ref.shape, "the batch of the weight step", "train on all N images: k adversarial, N − k clean.")
    clean = decode(protos, theta0).detach()
    if not _close(x_in[k:], clean[k:], 1e-9):
        everything = _on_manifold_reference(initial, *args, lr, attacked=n)[2]
        if _close(x_in, everything, 1e-9):
            raise Mismatch("you attacked the whole batch.",
                           "Stutz et al. replace only part of each batch: attack the first k = N // 2 samples and keep "
                           "the other N − k clean (decode(protos[k:], theta0[k:])).")
        raise Mismatch("the second half of the training batch is not the clean images decode(protos[k:], theta0[k:]).",
                       "keep the samples from k = N // 2 on clean, and keep the order: adversarial first, then clean.")
    if _close(x_in[:k], clean[:k], 1e-9):
        raise Mismatch("the first half of the training batch is clean: no attack reached the weight step.",
                       "replace the first k = N // 2 images by decode(protos[:k], θ_adv) with θ_adv from θ-PGD.")
    if not _close(x_in[:k], x_ref[:k], 1e-9):
        for what, hint, kwargs in [
            ("your θ leaves the data range [low, high].",
             "project every step onto [θ0 − ε, θ0 + ε] ∩ [low, high] (your theta_step does both).",
             {"data_range": False}),
            ("your θ-PGD descends the loss.", "the attack ascends the classifier's loss: θ + α·sign(∇_θ L).",
             {"sign": -1.0}),
        ]:
            if _close(x_in[:k], _on_manifold_reference(initial, *args, lr, **kwargs)[2][:k], 1e-9):
                raise Mismatch(what, hint)
        raise Mismatch("the adversarial half is not decode(protos[:k], θ_adv) for θ-PGD from the clean θ0.",
                       "attack θ, not the pixels: start at θ0[:k], and `steps` times take the gradient of the loss of "
                       "model(decode(protos[:k], θ)) w.r.t. θ and apply theta_step (ε-box around θ0 ∩ data range).")
    if not model.training:
        raise Mismatch("the model is left in eval mode.",
                       "restore the mode you found (training calls you in train mode): model.train(was_training).")
    _check_update(model, before, want, grads, {})
    value = _tensor(out, "on_manifold_step").double()
    if value.numel() != 1 or abs(value.item() - loss_ref) > 1e-6:
        raise Mismatch("the returned loss is not the mean cross-entropy of the mixed batch (before the step).",
                       "return loss.item() of the weight step.")
    return ("θ-PGD from θ0 in eval mode on the first N // 2 samples (ε-box ∩ data range), clean rest, and an exact "
            "SGD step on the mixed batch with nothing leaking into p.grad.")
