"""Checks for the tasks of section ② (solutions/02_definitions): Lp norms, the neighbourhood B_ε(x) ∩ box, a uniform
sample from a ball, the practical and the consistent adversarial-example tests, and their disagreement.

The adversarial-example tasks run in a small 2-D world whose true hypothesis is known: h* says "inside" (class 1)
in the circle of radius 0.3 around (0.5, 0.5), the model h in the circle of radius 0.3 around (0.55, 0.5) and,
like any model off the data, also below the box (x₂ < 0). Along the line x₂ = 0.5 the two disagree on
(0.2, 0.25) and (0.8, 0.85), so every case of the two definitions can be placed by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from advlab.checks._core import Mismatch, _col, _gen, _shape, _tensor, _unchanged, register

NORMS = (1.0, 2.0, math.inf)
_P = {1.0: "L1", 2.0: "L2", math.inf: "L∞"}
_NORM_HINT = "one norm per sample: flatten every sample first, delta.flatten(1), then reduce over dim=1."
_ZERO_EPS = ("a sample with ε = 0 got a non-zero δ.", "scale by the per-sample ε: δ = ε_i · (unit sample).")
_BALL_HINT = "x̃ must lie in B_ε(x) ∩ [0, 1]^d: use your in_ball(x, x_adv, eps, p) from task 2."


# ------------------------------------------------------------------------------------------------- references
def _norms(delta: Tensor, p: float) -> Tensor:
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


TOL = 1e-6  # in_ball's default tolerance: x + δ - x is not exactly δ in floating point


def _in_ball(x: Tensor, x_adv: Tensor, eps: Tensor, p: float, tol: float = TOL) -> Tensor:
    box = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
    return (_norms(x_adv - x, p) <= eps + tol) & box


def _pred(h: Callable, x: Tensor) -> Tensor:
    with torch.no_grad():
        return h(x).argmax(1)


def _practical(h: Callable, true_h: Callable, x: Tensor, x_adv: Tensor, eps: Tensor, p: float) -> Tensor:
    clean = _pred(h, x)
    return _in_ball(x, x_adv, eps, p) & (clean == true_h(x)) & (_pred(h, x_adv) != clean)


def _consistent(h: Callable, true_h: Callable, x: Tensor, x_adv: Tensor, eps: Tensor, p: float) -> Tensor:
    return _in_ball(x, x_adv, eps, p) & (_pred(h, x) == true_h(x)) & (_pred(h, x_adv) != true_h(x_adv))


def _bools(out, n: int, what: str) -> Tensor:
    out = _tensor(out, what)
    _shape(out, (n,), what, "return one True/False per sample, shaped (N,): no .any() or .all() over the batch.")
    if out.dtype != torch.bool:
        if not bool(((out == 0) | (out == 1)).all()):
            raise Mismatch(f"{what} holds values other than True/False.", "return a bool tensor, e.g. (a <= b) & c.")
        out = out.bool()
    return out


# ------------------------------------------------------------------------------------------------------ task 1
@register("lp_norms", "per-sample Lp norms", "02",
          "torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1) computes all three; p is 1, 2 or math.inf.")
def check_lp_norms(fn: Callable) -> str:
    """``lp_norms(delta, p) -> (N,)``: ``||δ_i||_p`` of every sample of a batch δ (N, *) for p = 1, 2, ∞."""
    g = _gen(20)
    images = torch.randn((6, 1, 3, 4), generator=g, dtype=torch.float64) * 0.3
    images[2] = 0.0  # a zero perturbation has norm 0
    images[4] = -images[4].abs() - 0.01  # all negative: the largest |δ_i| is not the largest δ_i
    points = torch.randn((5, 2), generator=g, dtype=torch.float64)
    points[0] = torch.tensor([-3.0, 4.0], dtype=torch.float64)  # 7, 5 and 4 in L1, L2, L∞
    for delta in (images, points):
        for p in NORMS:
            d0 = delta.clone()
            out = _tensor(fn(delta, p), "lp_norms")
            _unchanged([d0], [delta], "delta")
            _shape(out, (len(delta),), "your result", _NORM_HINT)
            ref = _norms(delta, p)
            if torch.allclose(out.double(), ref, rtol=1e-6, atol=1e-9):
                continue
            flat = delta.flatten(1)
            name = _P[p]
            if p == math.inf and torch.allclose(out.double(), flat.amax(1)):
                raise Mismatch("your L∞ norm is the largest entry, not the largest absolute entry.",
                               "||δ||∞ = max_i |δ_i|: take .abs() before .amax(1).")
            if p == 1.0 and torch.allclose(out.double(), flat.sum(1)):
                raise Mismatch("your L1 norm sums the signed entries.", "||δ||_1 = Σ_i |δ_i|: take .abs() first.")
            if p == 2.0 and torch.allclose(out.double(), flat.square().sum(1)):
                raise Mismatch("your L2 norm is the squared norm.", "||δ||_2 = sqrt(Σ_i δ_i²): take the square root.")
            if p == 2.0 and torch.allclose(out.double(), flat.sum(1).abs().sqrt()):
                raise Mismatch("your L2 norm squares the sum instead of summing the squares.",
                               "||δ||_2 = sqrt(Σ_i δ_i²): square each entry, then sum.")
            raise Mismatch(f"the {name} norms differ from the reference (e.g. sample 0: {out[0].item():.4g} instead "
                           f"of {ref[0].item():.4g}).",
                           "||δ||_p = (Σ_i |δ_i|^p)^(1/p) and ||δ||∞ = max_i |δ_i|, " + _NORM_HINT)
    return "L1, L2 and L∞ norms per sample, for image batches and 2-D points (zero and all-negative rows)."


# ------------------------------------------------------------------------------------------------------ task 2
def _ball_cases(p: float) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """x, x_adv (8, 1, 2, 3) in float64, eps (8,) and the name of each case, for ``in_ball``."""
    g = _gen(21 + int(min(p, 9)))
    x = 0.4 + 0.2 * torch.rand((8, 1, 2, 3), generator=g, dtype=torch.float64)
    eps = torch.tensor([0.1, 0.3125, 0.0, 0.2, 0.05, 0.3125, 0.3, 0.0], dtype=torch.float64)
    direction = torch.randn((8, 1, 2, 3), generator=g, dtype=torch.float64)
    unit = direction / _col(_norms(direction, p), direction)
    ratio = torch.tensor([0.5, 0.0, 0.0, 1.05, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    delta = unit * _col(ratio * eps, unit)
    kinds = ["inside", "on the sphere", "eps = 0, x̃ = x", "just outside", "outside the box", "on the sphere",
             "rounding", "eps = 0, x̃ ≠ x"]
    delta[6] = delta[6] * (1 + 2e-6)  # sample 6: outside by 6e-7 (rounding-sized), inside with the tolerance
    # samples 1 and 5 lie exactly on the sphere ||δ||_p = 0.3125: x = 0.5 and dyadic δ, so that x̃ - x and its
    # norm are exact in floating point
    x[1] = x[5] = 0.5
    sphere = {
        math.inf: ([0.3125, -0.3125, 0.125], [-0.3125, 0.0625, 0.3125]),
        2.0: ([0.1875, 0.25, 0.0], [0.0, -0.25, -0.1875]),  # 3-4-5 triangles of length 0.3125
        1.0: ([0.25, -0.03125, 0.03125], [-0.125, 0.125, -0.0625]),
    }[p]
    delta[1, 0, 0] = torch.tensor(sphere[0], dtype=torch.float64)
    delta[5, 0, 1] = torch.tensor(sphere[1], dtype=torch.float64)
    # sample 4: a small step inside the ball pushes one pixel over 1
    x[4] = 0.5
    x[4, 0, 0, 0] = 0.99
    delta[4, 0, 0, 0] = 0.02
    # sample 7: ε = 0 and a tiny move
    delta[7, 0, 0, 0] = 1e-3
    return x, x + delta, eps, kinds


@register("in_ball", "membership in B_ε(x) ∩ [0, 1]^d", "02",
          "compute the norms of x_adv - x per sample (your lp_norms), compare with eps + tol and check the box.")
def check_in_ball(fn: Callable) -> str:
    """``in_ball(x, x_adv, eps, p, tol=1e-6) -> (N,) bool``: ``||x̃_i − x_i||_p <= ε_i + tol`` and ``0 <= x̃_i <= 1``."""
    for p, tol in ((p, tol) for p in NORMS for tol in (None, 0.0)):
        x, x_adv, eps, kinds = _ball_cases(p)
        ref = _in_ball(x, x_adv, eps, p, TOL if tol is None else tol)
        x0, a0, e0 = x.clone(), x_adv.clone(), eps.clone()
        out = fn(x, x_adv, eps, p) if tol is None else fn(x, x_adv, eps, p, tol=tol)
        out = _bools(out, len(x), "in_ball")
        _unchanged([x0, a0, e0], [x, x_adv, eps], "x, x_adv or eps")
        if torch.equal(out, ref):
            continue
        i = int((out != ref).nonzero()[0])
        name = _P[p]
        if kinds[i] == "rounding":
            if tol is None:
                raise Mismatch(f"a point {_norms((x_adv - x)[i:i + 1], p).item() - eps[i].item():.1g} outside the "
                               f"sphere (a rounding error) was rejected with the default tol = {TOL:g}.",
                               "allow for rounding: compare the norm with eps + tol.")
            raise Mismatch("with tol = 0 a point outside the sphere by a rounding error was accepted.",
                           "compare with eps + tol, using the tol you are given (here 0).")
        if kinds[i] == "on the sphere":
            raise Mismatch(f"a point exactly on the {name} sphere, ||x̃ - x|| = ε, was left out.",
                           "B_ε(x) = {x' : ||x' - x||_p <= ε} is closed: compare with <=, not <.")
        if kinds[i] == "outside the box":
            raise Mismatch("a point with a pixel above 1 was accepted.",
                           "x̃ must also be a valid input: require (x_adv >= 0) & (x_adv <= 1) for every coordinate "
                           "of the sample (.flatten(1).all(1)).")
        for q in NORMS:
            if q != p and torch.equal(out, _in_ball(x, x_adv, eps, q)):
                raise Mismatch(f"your answers for the {name} ball are those of the {_P[q]} ball.",
                               f"use the norm you are given: lp_norms(x_adv - x, p), here the {name} norm.")
        if kinds[i].startswith("eps = 0"):
            raise Mismatch(f"with ε = 0 you answered {bool(out[i])} for x̃ {'=' if ref[i] else '≠'} x.",
                           "B_0(x) = {x}: only x itself is inside.")
        raise Mismatch(f"sample {i} ({kinds[i]}, ε = {eps[i].item():g}, {name} distance "
                       f"{_norms((x_adv - x)[i:i + 1], p).item():.4g}): you answered {bool(out[i])}.",
                       "each sample has its own ε: compare the (N,) norms with the (N,) eps element by element, "
                       "in the norm p you are given.")
    return "correct for L1, L2 and L∞ (per-sample ε, points on the sphere, tol, ε = 0, a pixel outside the box)."


# ------------------------------------------------------------------------------------------------------ task 3
def _same_seed(fn: Callable, x: Tensor, eps: Tensor, p: float) -> Tensor:
    a = _tensor(fn(x, eps, p, torch.Generator().manual_seed(5)), "random_ball")
    b = _tensor(fn(x, eps, p, torch.Generator().manual_seed(5)), "random_ball")
    c = _tensor(fn(x, eps, p, torch.Generator().manual_seed(6)), "random_ball")
    if not torch.equal(a, b):
        raise Mismatch("two calls with generators of the same seed gave different samples.",
                       "draw every random number from the generator you are given: torch.rand(..., generator="
                       "generator) and torch.randn(..., generator=generator).")
    if torch.equal(a, c):
        raise Mismatch("generators with different seeds gave the same sample.", "use the generator's random numbers.")
    return a


def _not_clipped(x: Tensor, delta: Tensor) -> None:
    """Near the box's faces a uniform sample of the ball leaves the box now and then; a clipped one never does."""
    if not bool(((x + delta < 0) | (x + delta > 1)).any()):
        raise Mismatch("no x + δ ever leaves the box [0, 1]: you clipped x + δ to [0, 1].",
                       "the box is ignored here: sample the ball around x, do not clip.")


@register("random_ball", "uniform sample from an L2 / L∞ ball", "02",
          "draw with torch.rand / torch.randn(shape, generator=generator, dtype=x.dtype); eps is (N,).")
def check_random_ball(fn: Callable) -> str:
    """``random_ball(x, eps, p, generator) -> δ (N, *)``, uniform in ``{||δ||_p <= ε_i}`` (p = 2 or ∞; box ignored)."""
    g = _gen(30)
    # L2 in 2 and in 8 dimensions: (||δ|| / ε)^d must be uniform on [0, 1], the directions isotropic
    for shape in ((4000, 2), (2000, 1, 2, 4)):
        x = torch.rand(shape, generator=g, dtype=torch.float64)
        eps = 0.05 + 0.3 * torch.rand(shape[0], generator=g, dtype=torch.float64)
        eps[:5] = 0.0
        x0, e0 = x.clone(), eps.clone()
        delta = _same_seed(fn, x, eps, 2.0)
        _unchanged([x0, e0], [x, eps], "x or eps")
        _shape(delta, x.shape, "δ", "return δ shaped like x, one perturbation per sample.")
        if not bool(torch.isfinite(delta).all()):
            raise Mismatch("δ contains NaN or inf.", "normalise the Gaussian direction by its norm (clamp_min(1e-12)).")
        if bool(delta[:5].abs().max() > 0):
            raise Mismatch(*_ZERO_EPS)
        _not_clipped(x, delta)
        r = _norms(delta, 2.0)
        over = r > eps * (1 + 1e-9) + 1e-12
        if bool(over.any()):
            i = int(over.nonzero()[0])
            raise Mismatch(f"sample {i} has ||δ||_2 = {r[i].item():.4g} > ε = {eps[i].item():.4g}.",
                           "scale each sample by its own ε (eps.view(-1, 1, ...)); a Gaussian needs normalising first.")
        d = delta[0].numel()
        u = (r[5:] / eps[5:]).pow(d)
        if (u > 1 - 1e-9).float().mean() > 0.9:
            raise Mismatch("all your samples lie on the sphere ||δ||_2 = ε, not inside the ball.",
                           "multiply the unit direction by a random radius ε · U^(1/d), U ~ Uniform(0, 1).")
        if abs(u.mean().item() - 0.5) > 0.04:
            if u.mean().item() < 0.5:
                raise Mismatch(f"too many samples near the centre: (||δ||/ε)^d has mean {u.mean().item():.2f}, "
                               "a uniform sample gives 0.5.",
                               f"the volume inside radius r grows like r^d (d = {d}): draw the radius as "
                               "ε · U^(1/d), not ε · U.")
            if u.mean().item() > 0.8:
                raise Mismatch(f"almost all samples lie next to the sphere: (||δ||/ε)^d has mean "
                               f"{u.mean().item():.2f}, a uniform sample gives 0.5.",
                               f"d is the dimension of ONE sample, x[0].numel() = {d} here, not of the whole batch; "
                               "the radius is ε · U^(1/d).")
            raise Mismatch(f"too many samples near the sphere: (||δ||/ε)^d has mean {u.mean().item():.2f}, a uniform "
                           "sample gives 0.5.",
                           "do not squeeze a cube sample into the ball; use a Gaussian direction normalised to length "
                           "1 times ε · U^(1/d).")
        dirs = delta[5:].flatten(1) / r[5:, None]
        if dirs.mean(0).abs().max().item() > 0.06 or (dirs.abs().mean(0) - dirs.abs().mean()).abs().max() > 0.06:
            raise Mismatch("the directions of δ are not uniform (some directions or corners are preferred).",
                           "a standard Gaussian vector divided by its norm is uniform on the sphere; rand-based "
                           "directions are not.")
    # L∞ in 3 dimensions, next to the box's corner: δ_i / ε uniform on [-1, 1], the box ignored
    x = torch.ones((3000, 3), dtype=torch.float64)
    eps = 0.05 + 0.2 * torch.rand(3000, generator=g, dtype=torch.float64)
    eps[:5] = 0.0
    delta = _same_seed(fn, x, eps, math.inf)
    _shape(delta, x.shape, "δ", "return δ shaped like x, one perturbation per sample.")
    if bool(delta[:5].abs().max() > 0):
        raise Mismatch(*_ZERO_EPS)
    _not_clipped(x, delta)
    v = delta / eps[:, None].clamp_min(1e-30)
    v = v[5:]
    if bool((v.abs() > 1 + 1e-9).any()):
        raise Mismatch("some |δ_i| exceed their sample's ε.",
                       "δ = ε · (2U - 1) with U ~ Uniform(0, 1) per coordinate, ε reshaped per sample.")
    if abs(v.mean().item()) > 0.04:
        raise Mismatch(f"δ is not centred (mean δ/ε = {v.mean().item():.2f}).",
                       "uniform on [-ε, ε]: ε · (2·torch.rand(...) - 1), not ε · torch.rand(...).")
    if abs(v.abs().mean().item() - 0.5) > 0.04 or abs((v.abs() > 0.9).float().mean().item() - 0.1) > 0.03:
        raise Mismatch(f"|δ_i|/ε is not uniform on [0, 1] (mean {v.abs().mean().item():.2f}, share above 0.9: "
                       f"{(v.abs() > 0.9).float().mean().item():.2f}; uniform: 0.50 and 0.10).",
                       "each coordinate independently uniform on [-ε, ε]: not a clamped Gaussian, not ±ε.")
    return "uniform in the L2 ball (d = 2 and 8) and in the L∞ ball, per-sample ε, ε = 0, seeded by the generator."


# ---------------------------------------------------------------------------------------------- tasks 4, 5, 6
class _ShiftedCircle(nn.Module):
    """The check's model h: class 1 inside the circle of radius 0.3 around (0.55, 0.5), and below the box."""

    def forward(self, x: Tensor) -> Tensor:
        s = torch.maximum(0.3 - torch.linalg.vector_norm(x - x.new_tensor([0.55, 0.5]), dim=1), -x[:, 1])
        return torch.stack([-s, s], dim=1) * 50


def _true_h(x: Tensor) -> Tensor:
    """The check's true hypothesis h*: class 1 inside the circle of radius 0.3 around (0.5, 0.5); (N,) int64."""
    return (torch.linalg.vector_norm(x - x.new_tensor([0.5, 0.5]), dim=1) < 0.3).long()


# (x, x̃, ε, kind): along x₂ = 0.5 every L_p distance is |Δx₁|; one diagonal case separates the norms
_CASES = [
    ((0.30, 0.5), (0.22, 0.5), 0.10, "both"),
    ((0.30, 0.5), (0.15, 0.5), 0.20, "practical only"),
    ((0.70, 0.5), (0.83, 0.5), 0.15, "consistent only"),
    ((0.70, 0.5), (0.90, 0.5), 0.25, "practical only"),
    ((0.50, 0.5), (0.55, 0.52), 0.10, "neither"),
    ((0.82, 0.5), (0.84, 0.5), 0.05, "x misclassified"),
    ((0.82, 0.5), (0.90, 0.5), 0.10, "x misclassified"),
    ((0.30, 0.5), (0.15, 0.5), 0.10, "outside the ball"),
    ((0.50, 0.05), (0.50, -0.02), 0.10, "outside the box"),
    ((0.30, 0.5), (0.24, 0.44), 0.07, "diagonal"),
    ((0.30, 0.5), (0.30, 0.5), 0.00, "eps = 0"),
]


def _world(p: float, seed: int) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """The hand-placed cases plus 60 random pairs (x, x̃ = x + δ, ε), shuffled; float64."""
    g = _gen(seed)
    x = torch.tensor([c[0] for c in _CASES], dtype=torch.float64)
    xa = torch.tensor([c[1] for c in _CASES], dtype=torch.float64)
    eps = torch.tensor([c[2] for c in _CASES], dtype=torch.float64)
    kinds = [c[3] for c in _CASES]
    xr = 0.1 + 0.8 * torch.rand((60, 2), generator=g, dtype=torch.float64)
    er = 0.02 + 0.15 * torch.rand(60, generator=g, dtype=torch.float64)
    dr = (2 * torch.rand((60, 2), generator=g, dtype=torch.float64) - 1) * er[:, None] * 1.2
    x, xa, eps = torch.cat([x, xr]), torch.cat([xa, (xr + dr).clamp(0, 1)]), torch.cat([eps, er])
    kinds = kinds + ["random"] * 60
    order = torch.randperm(len(x), generator=g)
    return x[order], xa[order], eps[order], [kinds[i] for i in order.tolist()]


_HINTS = {
    ("practical", "practical only"): (
        "the model's prediction changed but x̃ is not called adversarial.",
        "the practical definition compares ĥ(x̃) with ĥ(x), the prediction on the reference; it does not look at "
        "the true label of x̃."),
    ("practical", "consistent only"): (
        "x̃ keeps the model's prediction but is called adversarial.",
        "practical: ĥ(x̃) ≠ ĥ(x). Whether ĥ(x̃) agrees with h*(x̃) is the consistent definition's question."),
    ("practical", "x misclassified"): (
        "x̃ is called adversarial although the reference x is misclassified.",
        "both definitions start from an input with a correct prediction: require ĥ(x) == true_h(x)."),
    ("consistent", "practical only"): (
        "x̃ is called adversarial although the model is right on it (ĥ(x̃) = h*(x̃)).",
        "compare ĥ(x̃) with the TRUE label of x̃, true_h(x_adv), not with the label of x."),
    ("consistent", "consistent only"): (
        "the model is wrong on x̃ (ĥ(x̃) ≠ h*(x̃)) but x̃ is not called adversarial.",
        "the consistent definition asks for a misprediction ĥ(x̃) ≠ h*(x̃), whether or not ĥ(x̃) = ĥ(x)."),
    ("consistent", "x misclassified"): (
        "x̃ is called adversarial although the reference x is misclassified.",
        "both definitions start from an input with a correct prediction: require ĥ(x) == true_h(x)."),
}


def _check_definition(fn: Callable, which: str, reference: Callable) -> None:
    h = _ShiftedCircle()
    for k, p in enumerate(NORMS):
        x, xa, eps, kinds = _world(p, 40 + k)
        ref = reference(h, _true_h, x, xa, eps, p)
        x0, a0, e0 = x.clone(), xa.clone(), eps.clone()
        out = _bools(fn(h, _true_h, x, xa, eps, p), len(x), which)
        _unchanged([x0, a0, e0], [x, xa, eps], "x, x_adv or eps")
        if torch.equal(out, ref):
            continue
        bad = (out != ref).nonzero().flatten().tolist()
        placed = [i for i in bad if kinds[i] != "random"]
        i = placed[0] if placed else bad[0]
        kind = kinds[i]
        case = f"x = ({x[i, 0].item():.2f}, {x[i, 1].item():.2f}), x̃ = ({xa[i, 0].item():.2f}, {xa[i, 1].item():.2f})"
        if (which, kind) in _HINTS:
            what, hint = _HINTS[(which, kind)]
            raise Mismatch(f"{case}: {what}", hint)
        if kind in ("outside the ball", "outside the box", "diagonal", "eps = 0"):
            raise Mismatch(f"{case}, ε = {eps[i].item():g}, {_P[p]}: x̃ is not in B_ε(x) ∩ [0, 1]² but you answered "
                           f"{bool(out[i])}.", _BALL_HINT)
        if kind == "both":
            raise Mismatch(f"{case}: ĥ(x̃) differs from ĥ(x) and from h*(x̃), yet you answered False.",
                           "both definitions call this x̃ adversarial: x is correct, x̃ is in the ball, and the model "
                           "changes its prediction to a wrong one.")
        raise Mismatch(f"{case}, ε = {eps[i].item():.3g}, {_P[p]}: you answered {bool(out[i])}, the definition says "
                       f"{bool(ref[i])}.",
                       "x̃ in B_ε(x) ∩ box, ĥ(x) == h*(x), and then " +
                       ("ĥ(x̃) ≠ ĥ(x)." if which == "practical" else "ĥ(x̃) ≠ h*(x̃)."))


@register("practical_adversarial", "practical adversarial example (definition 1)", "02",
          "predictions are h(x).argmax(1); labels are true_h(x); combine (N,) bool tensors with & and ~.")
def check_practical_adversarial(fn: Callable) -> str:
    """``practical_adversarial(h, true_h, x, x_adv, eps, p) -> (N,) bool``: in ball ∩ box, ĥ(x) = h*(x), ĥ(x̃) ≠ ĥ(x)."""
    _check_definition(fn, "practical", _practical)
    return "agrees with definition 1 on hand-placed and random 2-D cases in L1, L2 and L∞."


@register("consistent_adversarial", "consistent adversarial example (definition 2)", "02",
          "predictions are h(x).argmax(1); true labels are true_h(x) and true_h(x_adv); combine with & and ~.")
def check_consistent_adversarial(fn: Callable) -> str:
    """``consistent_adversarial(h, true_h, x, x_adv, eps, p) -> (N,) bool``: in ball ∩ box, ĥ(x) = h*(x),
    ĥ(x̃) ≠ h*(x̃)."""
    _check_definition(fn, "consistent", _consistent)
    return "agrees with definition 2 on hand-placed and random 2-D cases in L1, L2 and L∞."


def _count(v) -> int:
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise Mismatch(f"a count is a tensor of shape {tuple(v.shape)}, not a number.",
                           "sum the (N,) bool tensor: int((a & ~b).sum()).")
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise Mismatch(f"a count is a {type(v).__name__}, not an integer.", "return two ints: int((a & ~b).sum()).")
    return v


@register("inconsistency", "where the two definitions disagree", "02",
          "call your practical_adversarial and consistent_adversarial once each and count with & and ~.")
def check_inconsistency(fn: Callable) -> str:
    """``inconsistency(h, true_h, x, x_adv, eps, p) -> (n_practical_only, n_consistent_only)``."""
    h = _ShiftedCircle()
    for k, p in enumerate(NORMS):
        x, xa, eps, _ = _world(p, 51 + k)  # seeds with unequal, non-zero counts of both kinds
        prac, cons = _practical(h, _true_h, x, xa, eps, p), _consistent(h, _true_h, x, xa, eps, p)
        ref = (int((prac & ~cons).sum()), int((cons & ~prac).sum()))
        out = fn(h, _true_h, x, xa, eps, p)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mismatch(f"inconsistency returned a {type(out).__name__}, not a pair of counts.",
                           "return (n_practical_only, n_consistent_only).")
        got = (_count(out[0]), _count(out[1]))
        if got == ref:
            continue
        if got == ref[::-1]:
            raise Mismatch(f"the two counts are swapped ({got} instead of {ref}).",
                           "first the number of practical-but-not-consistent examples, then consistent-but-not-"
                           "practical.")
        if got == (int(prac.sum()), int(cons.sum())):
            raise Mismatch(f"you counted all practical and all consistent examples {got}, not the disagreements "
                           f"{ref}.", "count where exactly one definition says yes: (prac & ~cons) and (cons & ~prac).")
        if got[0] == got[1] == ref[0] + ref[1]:
            raise Mismatch("both counts are the total number of disagreements.",
                           "split them: practical only = prac & ~cons, consistent only = cons & ~prac.")
        raise Mismatch(f"your counts {got} differ from {ref} ({_P[p]}).",
                       "n_practical_only = (prac & ~cons).sum(), n_consistent_only = (cons & ~prac).sum(), with prac "
                       "and cons from your two functions on the same inputs.")
    return "counts both kinds of disagreement correctly in L1, L2 and L∞."
