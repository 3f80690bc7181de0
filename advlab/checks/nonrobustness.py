"""Checks for the tasks of section ① (solutions/01_nonrobustness): corruptions, the max-softmax OOD score's AUROC,
Goodfellow et al.'s linearity argument (the smallest L∞ ε that flips a linear classifier, without and with the
[0, 1] box), and painting few-pixel perturbations onto a batch of images."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from advlab.checks._core import Mismatch, _close, _gen, _images, _in_box, _shape, _tensor, _unchanged, register

_SHIFT_HINT = "dx and dy are (N,) integer tensors, one shift per image; build the source row/column of every output " \
              "pixel with torch.arange and index the batch once (no loop over samples needed)."


# ----------------------------------------------------------------------------------------------- references
def ref_translate(x: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """(N, C, H, W) images shifted right by dx and down by dy pixels ((N,) ints), zero fill."""
    n, _, h, w = x.shape
    rows = torch.arange(h)[None, :] - dy[:, None].long()  # (N, H): source row of each output row
    cols = torch.arange(w)[None, :] - dx[:, None].long()  # (N, W)
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (N, H, W)
    idx = torch.arange(n)[:, None, None]
    out = x.permute(0, 2, 3, 1)[idx, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return (out * valid[..., None].to(x.dtype)).permute(0, 3, 1, 2)


def ref_auroc(score_in: Tensor, score_out: Tensor) -> float:
    """P(s_in > s_out) + ½·P(s_in = s_out) over all pairs (the Mann-Whitney statistic)."""
    diff = score_in.double()[:, None] - score_out.double()[None, :]
    return ((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean()).item()


def ref_flip_eps(w: Tensor, b: float, x: Tensor) -> Tensor:
    """(N,) smallest L∞ radius that reaches the boundary of sign(wᵀx + b), ignoring the box: |s| / ||w||_1."""
    return (x @ w + b).abs() / w.abs().sum()


def _box_gain(w: Tensor, b: float, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(|s| (N,), |w_i| on the coordinates that can help (N, d), room of each coordinate in the box (N, d))."""
    s = x @ w + b
    direction = -torch.sign(s)[:, None] * torch.sign(w)[None, :]  # moving coordinate i this way lowers |s|
    room = torch.where(direction > 0, 1 - x, torch.where(direction < 0, x, torch.zeros_like(x)))
    return s.abs(), w.abs()[None, :] * (direction != 0), room


def ref_flip_eps_box(w: Tensor, b: float, x: Tensor, steps: int = 100) -> Tensor:
    """(N,) smallest ε such that some x + δ in [0, 1]^d with ||δ||_∞ <= ε reaches wᵀ(x + δ) + b = 0; inf if none.

    At radius ε coordinate i can lower |s| by at most |w_i|·min(ε, room_i), so the reachable change
    f(ε) = Σ_i |w_i| min(ε, room_i) is increasing in ε; bisect f(ε) = |s| on [0, 1].
    """
    target, a, room = _box_gain(w, b, x)

    def f(eps: Tensor) -> Tensor:
        return (a * torch.minimum(eps[:, None], room)).sum(1)

    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = f(mid) >= target
        lo, hi = torch.where(ok, lo, mid), torch.where(ok, mid, hi)
    reachable = f(torch.ones_like(target)) >= target
    return torch.where(target == 0, torch.zeros_like(hi), torch.where(reachable, hi, torch.full_like(hi, math.inf)))


def ref_apply_pixels(x: Tensor, pixels: Tensor) -> Tensor:
    """Paint (N, K, 2 + C) pixels (row, col, v_1..v_C) onto (N, C, H, W) images; coordinates rounded."""
    n, c, h, w = x.shape
    out = x.clone()
    rows = pixels[..., 0].round().long().clamp(0, h - 1)  # (N, K)
    cols = pixels[..., 1].round().long().clamp(0, w - 1)
    idx = torch.arange(n)[:, None].expand_as(rows)
    out[idx, :, rows, cols] = pixels[..., 2:].to(x.dtype)  # (N, K) index dims first, then the channels
    return out


def _scalar(out, what: str) -> float:
    if isinstance(out, Tensor):
        if out.numel() != 1:
            raise Mismatch(f"{what} returned a tensor of shape {tuple(out.shape)}, not one number.",
                           "the AUROC is a single number over all (in, out) pairs: average over both axes.")
        return float(out.detach().cpu().item())
    if isinstance(out, (float, int, np.floating, np.integer)) and not isinstance(out, bool):
        return float(out)
    if out is None:
        raise Mismatch(f"{what} returned None.", "did you forget the `return` statement?")
    raise Mismatch(f"{what} returned a {type(out).__name__}, not a number.", "return a float (tensor.item()).")


# ----------------------------------------------------------------------------------------------------- tasks
@register("gaussian_noise", "Gaussian noise corruption", "01",
          "draw the noise with torch.randn(x.shape, generator=..., dtype=x.dtype) from a torch.Generator seeded "
          "with `seed`.")
def check_gaussian_noise(fn: Callable) -> str:
    """``gaussian_noise(x, sigma, seed) -> clip(x + σ·n, 0, 1)`` with n ~ N(0, I) from a generator seeded by seed."""
    half = torch.full((4, 1, 32, 32), 0.5, dtype=torch.float64)
    state = torch.get_rng_state()
    x0 = half.clone()
    small = _tensor(fn(half, 0.01, 3), "gaussian_noise")
    _unchanged([x0], [half], "x")
    if not torch.equal(state, torch.get_rng_state()):
        raise Mismatch("your function draws from (or reseeds) torch's global random generator.",
                       "use a private generator, g = torch.Generator().manual_seed(seed), and pass generator=g to "
                       "torch.randn; your own random stream must stay untouched.")
    _shape(small, half.shape, "the noisy batch", "return a tensor shaped like x.")
    _in_box(small, "the noisy batch")
    again = _tensor(fn(half, 0.01, 3), "gaussian_noise")
    if not torch.equal(small, again):
        raise Mismatch("two calls with the same seed return different noise.",
                       "seed a torch.Generator with `seed` inside the function, so that the corruption is "
                       "reproducible.")
    other = _tensor(fn(half, 0.01, 4), "gaussian_noise")
    if torch.equal(small, other):
        raise Mismatch("seeds 3 and 4 give the same noise.",
                       "seed the generator with the `seed` argument: torch.Generator().manual_seed(seed).")
    if small.min().item() <= 0.2 or small.max().item() >= 0.8:
        raise Mismatch(f"with x = 0.5 everywhere and σ = 0.01 your values span [{small.min().item():.3g}, "
                       f"{small.max().item():.3g}]; they should stay within 0.5 ± 0.1.",
                       "add σ·n to x and clip with .clamp(0, 1); do not rescale the batch to fill [0, 1].")
    z = ((small - half) / 0.01).flatten()
    if bool((z == 0).all()):
        raise Mismatch("with σ = 0.01 nothing changed.", "add σ times standard normal noise to x.")
    std, mean = z.std().item(), z.mean().item()
    if abs(std - 0.01) < 0.002:
        raise Mismatch(f"the noise has standard deviation σ² (measured {std * 0.01:.2g} for σ = 0.01).",
                       "σ is the standard deviation: multiply standard normal noise by σ, not by σ².")
    if abs(std - 1 / math.sqrt(3)) < 0.05 or abs(std - 1 / math.sqrt(12)) < 0.05 or abs(mean - 0.5) < 0.05:
        raise Mismatch(f"the noise looks uniform, not Gaussian (mean {mean:.2f}σ, std {std:.2f}σ).",
                       "draw standard normal noise with torch.randn (torch.rand is uniform on [0, 1)).")
    if abs(mean) > 0.1 or abs(std - 1) > 0.06:
        raise Mismatch(f"(x̃ - x) / σ has mean {mean:.2f} and standard deviation {std:.2f}, not 0 and 1.",
                       "x̃ = x + σ·n with n ~ N(0, 1) drawn independently for every pixel.")
    tails = (z.abs() > 2).double().mean().item()
    if not 0.03 <= tails <= 0.065:
        raise Mismatch(f"{tails:.1%} of the noise lies beyond 2σ; a Gaussian has 4.6%.",
                       "draw the noise with torch.randn (a standard normal distribution).")
    # same seed and shape, large σ, saturated pixels: the result must be x + σ·n clipped with the same n
    x = _images(4, (1, 32, 32), _gen(11), saturate=0.4)
    x0 = x.clone()
    big = _tensor(fn(x, 0.5, 3), "gaussian_noise")
    _unchanged([x0], [x], "x")
    _shape(big, x.shape, "the noisy batch", "return a tensor shaped like x.")
    if not bool(torch.isfinite(big).all()) or big.min() < 0 or big.max() > 1:
        raise Mismatch(f"your noisy images leave the [0, 1] box (values from {big.min().item():.3g} to "
                       f"{big.max().item():.3g}).", "pixels must stay valid: clip the result with .clamp(0, 1).")
    want = (x + 0.5 * (small - half) / 0.01).clamp(0, 1)
    if not _close(big, want, 1e-6):
        raise Mismatch("with σ = 0.5 the result is not clip(x + σ·n, 0, 1) with the noise n of σ = 0.01.",
                       "draw n independently of x and σ (same seed, same shape: same n), add σ·n, then "
                       ".clamp(0, 1); do not rescale or wrap the values.")
    zero = _tensor(fn(x, 0.0, 5), "gaussian_noise")
    if not _close(zero, x, 0.0):
        raise Mismatch("with σ = 0 the images changed.", "σ = 0 adds no noise: x comes back unchanged.")
    return "reproducible per seed, global RNG untouched, N(0, σ²) per pixel, clipped to [0, 1], σ = 0 is identity."


@register("translate", "translation with zero fill", "01", _SHIFT_HINT)
def check_translate(fn: Callable) -> str:
    """``translate(x, dx, dy)``: (N, C, H, W) shifted right by dx[i], down by dy[i] pixels, zeros shifted in."""
    g = _gen(12)
    cases = [
        (_images(7, (2, 5, 8), g), torch.tensor([0, 1, -2, 3, 8, -1, 2]), torch.tensor([0, 2, 1, -3, 0, 9, -1])),
        (_images(4, (1, 6, 6), g, torch.float32), torch.tensor([2, 0, -1, 1]), torch.tensor([0, 3, -1, 1])),
    ]
    for x, dx, dy in cases:
        x = x.clamp_min(0.01)  # no zero pixels: a filled-in zero is always visible
        before = [x.clone(), dx.clone(), dy.clone()]
        out = _tensor(fn(x, dx, dy), "translate")
        _unchanged(before, [x, dx, dy], "x, dx or dy")
        _shape(out, x.shape, "the shifted batch", "return a batch shaped like x: (N, C, H, W).")
        ref = ref_translate(x, dx, dy)
        if _close(out, ref, 1e-7):
            continue
        n = len(x)
        if _close(out, torch.stack([torch.roll(x[i], (int(dy[i]), int(dx[i])), (1, 2)) for i in range(n)]), 1e-7):
            raise Mismatch("pixels pushed over one edge come back on the other: torch.roll wraps around.",
                           "the pixels shifted in must be 0 (black background): zero-fill instead of rolling, e.g. "
                           "mask the positions whose source row or column falls outside the image.")
        if _close(out, ref_translate(x, dy, dx), 1e-7):
            raise Mismatch("dx moves the rows and dy the columns.",
                           "dx is horizontal (columns, the last axis, positive = right), dy vertical (rows, "
                           "positive = down).")
        if _close(out, ref_translate(x, -dx, -dy), 1e-7):
            raise Mismatch("the images move left/up for positive shifts.",
                           "output pixel (r, c) comes from source pixel (r - dy, c - dx): positive dx moves the "
                           "content right, positive dy moves it down.")
        if _close(out, ref_translate(x, dx[:1].expand(n), dy[:1].expand(n)), 1e-7):
            raise Mismatch("every image is shifted by the first image's (dx, dy).", _SHIFT_HINT)
        far = (dx.abs() >= x.shape[3]) | (dy.abs() >= x.shape[2])
        if far.any() and not _close(out[far], torch.zeros_like(out[far]), 0.0):
            raise Mismatch("an image shifted by more than its size is not all zeros.",
                           "with |dx| >= W or |dy| >= H every source pixel lies outside the image.")
        raise Mismatch("the shifted batch differs from the reference.",
                       "out[n, :, r, c] = x[n, :, r - dy[n], c - dx[n]] where that source pixel exists, else 0.")
    return "matches per-image integer shifts with zero fill (H ≠ W, zero shifts, shifts larger than the image)."


@register("auroc", "AUROC of an OOD score", "01",
          "compare every in-distribution score with every out-of-distribution score: "
          "score_in[:, None] - score_out[None, :] is an (N_in, N_out) matrix.")
def check_auroc(fn: Callable) -> str:
    """``auroc(score_in, score_out) -> P(s_in > s_out) + ½·P(s_in = s_out)``, a float."""
    g = _gen(13)
    cont_in, cont_out = torch.rand(50, generator=g, dtype=torch.float64) + 0.3, torch.rand(37, generator=g,
                                                                                        dtype=torch.float64)
    ties_in = torch.randint(0, 4, (40,), generator=g).double() + (torch.rand(40, generator=g) < 0.3).double()
    ties_out = torch.randint(0, 4, (29,), generator=g).double()
    cases = [
        ("continuous scores", cont_in, cont_out),
        ("many ties", ties_in, ties_out),
        ("all scores equal", torch.full((6,), 0.7, dtype=torch.float64), torch.full((9,), 0.7, dtype=torch.float64)),
        ("perfect separation", cont_in + 2, cont_out),
        ("reversed separation", cont_out, cont_in + 2),
        ("float32 softmax scores", cont_in.float().clamp(max=1), cont_out.float()),
    ]
    for label, s_in, s_out in cases:
        before = [s_in.clone(), s_out.clone()]
        got = _scalar(fn(s_in, s_out), "auroc")
        _unchanged(before, [s_in, s_out], "score_in or score_out")
        want = ref_auroc(s_in, s_out)
        if math.isfinite(got) and abs(got - want) <= 1e-6:
            continue
        diff = s_in.double()[:, None] - s_out.double()[None, :]
        gt, eq = (diff > 0).double().mean().item(), (diff == 0).double().mean().item()
        if eq > 0 and (abs(got - gt) <= 1e-6 or abs(got - (gt + eq)) <= 1e-6):
            raise Mismatch(f"on {label} you count a tie as {'0' if abs(got - gt) <= 1e-6 else '1'} "
                           f"(AUROC {got:.4f}, expected {want:.4f}).",
                           "ties must count 1/2: AUROC = P(s_in > s_out) + 0.5·P(s_in = s_out).")
        if abs(got - (1 - want)) <= 1e-6:
            raise Mismatch(f"on {label} you return 1 - AUROC ({got:.4f}, expected {want:.4f}).",
                           "in-distribution inputs should score higher: count pairs with score_in > score_out.")
        raise Mismatch(f"on {label} your AUROC is {got:.4f}, expected {want:.4f}.",
                       "average over all N_in·N_out pairs (not over matched positions): "
                       "(s_in[:, None] > s_out[None, :]) plus half the ties.")
    return "P(s_in > s_out) + ½·P(tie) over all pairs: continuous, tied, equal, separated and reversed scores."


def _linear_case(g: torch.Generator) -> tuple[Tensor, float, Tensor]:
    x = _images(9, (12,), g, saturate=0.4)
    w = torch.randn(12, generator=g, dtype=torch.float64)
    w[[2, 7]] = 0.0  # dead pixels: moving them does nothing
    b = -float(x[0] @ w)  # sample 0 sits exactly on the boundary: ε = 0
    return x, b, w


@register("flip_eps", "flip radius of a linear classifier", "01",
          "w is (d,), x is (N, d) and b a float: the score of every sample is x @ w + b, shape (N,).")
def check_flip_eps(fn: Callable) -> str:
    """``flip_eps(w, b, x) -> |wᵀx + b| / ||w||_1`` per sample (N,), the box ignored."""
    g = _gen(14)
    x, b, w = _linear_case(g)
    x2 = torch.rand(5, 30, generator=g, dtype=torch.float64)
    w2 = torch.randn(30, generator=g, dtype=torch.float64) * 0.2
    for xx, ww, bb in [(x, w, b), (x2, w2, 1.5), (x2, -w2, -0.5)]:
        before = [xx.clone(), ww.clone()]
        out = _tensor(fn(ww, bb, xx), "flip_eps")
        _unchanged(before, [xx, ww], "x or w")
        _shape(out, (len(xx),), "ε", "return one radius per sample, shape (N,).")
        ref = ref_flip_eps(ww, bb, xx)
        if _close(out, ref, 1e-9):
            continue
        s = xx @ ww + bb
        if bool((out < -1e-12).any()):
            raise Mismatch("some radii are negative.",
                           "a radius is a distance: use the absolute value of the score, |wᵀx + b|.")
        if _close(out, s.abs() / ww.norm(), 1e-9):
            raise Mismatch("you divide by ||w||_2: that is the L2 distance to the boundary.",
                           "the L∞ step ε·sign(w) changes the score by ε·||w||_1 (Goodfellow et al.): divide by "
                           "w.abs().sum().")
        if _close(out, (xx @ ww).abs() / ww.abs().sum(), 1e-9):
            raise Mismatch("the bias b is missing.", "the score is wᵀx + b.")
        raise Mismatch("your radii differ from |wᵀx + b| / ||w||_1.",
                       "per sample: (x @ w + b).abs() / w.abs().sum().")
    return "|wᵀx + b| / ||w||_1 per sample, including a sample on the boundary, dead weights and both signs."


@register("flip_eps_box", "flip radius in the [0, 1] box", "01",
          "w is (d,), x is (N, d) and b a float; work on all samples at once with (N, d) tensors.")
def check_flip_eps_box(fn: Callable) -> str:
    """``flip_eps_box(w, b, x)``: smallest ε with x + δ ∈ [0, 1]^d, ||δ||_∞ <= ε on the boundary; inf if none."""
    g = _gen(15)
    x, b, w = _linear_case(g)
    hard = torch.rand(6, 20, generator=g, dtype=torch.float64)
    hard[:, :10] = (hard[:, :10] > 0.5).double()  # half the pixels saturated
    w_hard = torch.randn(20, generator=g, dtype=torch.float64)
    # the hyperplane misses the box when b exceeds -min over the box of wᵀx = Σ_{w_i < 0} |w_i|: no flip at all
    far = float(w.clamp(max=0).abs().sum()) + 0.25
    cases = [(x, w, b), (hard, w_hard, 0.4), (x[1:], w, far), (x[1:], -w, -far)]
    for xx, ww, bb in cases:
        before = [xx.clone(), ww.clone()]
        out = _tensor(fn(ww, bb, xx), "flip_eps_box")
        _unchanged(before, [xx, ww], "x or w")
        _shape(out, (len(xx),), "ε", "return one radius per sample, shape (N,).")
        ref = ref_flip_eps_box(ww, bb, xx)
        inf = torch.isinf(ref)
        ok = torch.isinf(out) == inf
        ok &= torch.where(inf, True, (out - ref).abs() <= 1e-7 * (1 + ref.abs().where(~inf, 0)))
        if bool(ok.all()):
            continue
        if bool(torch.isnan(out).any()):
            raise Mismatch("some radii are NaN.", "look for 0/0: a sample on the boundary has ε = 0.")
        if bool((inf & ~torch.isinf(out)).any()):
            i = int((inf & ~torch.isinf(out)).nonzero()[0])
            raise Mismatch(f"sample {i} cannot reach the boundary inside the box, but you return "
                           f"ε = {out[i].item():.4g}.",
                           "if even ε = 1 (the whole box) leaves the score on the same side, return float('inf').")
        if bool((~inf & torch.isinf(out)).any()):
            raise Mismatch("you return inf for a sample that can reach the boundary.",
                           "the box allows coordinate i to move by up to min(ε, room_i); sum |w_i|·min(ε, room_i).")
        finite = ~inf & ~torch.isinf(out)
        free = ref_flip_eps(ww, bb, xx)
        if _close(out[finite], free[finite], 1e-9):
            raise Mismatch("your radii ignore the box: |s| / ||w||_1 is too small when pixels are saturated.",
                           "pixels at 0 cannot get darker and pixels at 1 no brighter: coordinate i lowers |s| by at "
                           "most |w_i|·min(ε, room_i), with room_i = x_i or 1 - x_i depending on the direction.")
        if bool((out[finite] < ref[finite] - 1e-7).any()):
            raise Mismatch("some radii are smaller than the true flip radius in the box.",
                           "a coordinate with room_i < ε contributes only |w_i|·room_i, not |w_i|·ε; and the "
                           "direction of each coordinate is -sign(s)·sign(w_i).")
        raise Mismatch("some radii are larger than the smallest ε that reaches the boundary in the box.",
                       "find the smallest ε with Σ_i |w_i|·min(ε, room_i) >= |s| (bisect on [0, 1] long enough, "
                       "e.g. 60 halvings, or solve the piecewise-linear equation exactly).")
    return "exact in the box (saturated pixels, dead weights, ε = 0 on the boundary, inf when unreachable)."


@register("apply_pixels", "painting one-pixel perturbations", "01",
          "pixels is (N, K, 2 + C): rows pixels[..., 0], columns pixels[..., 1], values pixels[..., 2:]; index "
          "with long tensors after .round().")
def check_apply_pixels(fn: Callable) -> str:
    """``apply_pixels(x, pixels)``: overwrite K pixels per image at rounded (row, col) with values (C,)."""
    g = _gen(16)
    cases = []
    for n, c, h, w, k in [(5, 1, 6, 6, 3), (4, 3, 5, 7, 2)]:
        x = _images(n, (c, h, w), g, torch.float32)
        flat = torch.stack([torch.randperm(h * w, generator=g)[:k] for _ in range(n)])  # distinct per image
        jitter = (torch.rand(n, k, 2, generator=g) - 0.5) * 0.8  # within ±0.4 of the pixel centre
        coords = torch.stack([flat // w, flat % w], -1).float() + jitter
        coords[..., 0] = coords[..., 0].clamp(0, h - 1)
        coords[..., 1] = coords[..., 1].clamp(0, w - 1)
        values = torch.rand(n, k, c, generator=g)
        values[0, 0] = 1.0 - x[0, :, int(flat[0, 0]) // w, int(flat[0, 0]) % w]  # certainly a change
        cases.append((x, torch.cat([coords, values], -1)))
    for x, pixels in cases:
        before = [x.clone(), pixels.clone()]
        out = _tensor(fn(x, pixels), "apply_pixels")
        _unchanged(before, [x, pixels], "x or pixels")
        _shape(out, x.shape, "the painted batch", "return a batch shaped like x: (N, C, H, W).")
        ref = ref_apply_pixels(x, pixels)
        if _close(out, ref, 1e-7):
            continue
        _in_box(out, "the painted batch")
        if _close(out, ref_apply_pixels(x, torch.cat([pixels[..., :2].floor(), pixels[..., 2:]], -1)), 1e-7):
            raise Mismatch("coordinates are truncated (2.7 -> 2) instead of rounded (2.7 -> 3).",
                           "round the continuous coordinates first: pixels[..., 0].round().long().")
        swapped = torch.cat([pixels[..., 1:2], pixels[..., 0:1], pixels[..., 2:]], -1)
        if x.shape[2] == x.shape[3] and _close(out, ref_apply_pixels(x, swapped), 1e-7):
            raise Mismatch("rows and columns are swapped.", "pixels[..., 0] is the row (H axis), pixels[..., 1] "
                           "the column (W axis).")
        changed, where = (out != x).any(1), (ref != x).any(1)
        if bool((changed & ~where).any()):
            raise Mismatch("pixels outside the K given locations changed.",
                           "only overwrite x[n, :, row, col] for the K (row, col) of image n.")
        if _close(out, ref_apply_pixels(x, pixels[:, :1]), 1e-7):
            raise Mismatch("only the first of the K pixels of each image is painted.",
                           "paint all K pixels: index with (N, K) row and column tensors at once (or loop over K, "
                           "not over samples).")
        painted = ref_apply_pixels(torch.zeros_like(x), pixels)
        mask = ref_apply_pixels(torch.zeros_like(x), torch.cat([pixels[..., :2], torch.ones_like(pixels[..., 2:])], -1))
        added = torch.where(mask > 0, x + painted, x)
        if _close(out, added, 1e-6) or _close(out, added.clamp(0, 1), 1e-6):
            raise Mismatch("you add the values to the pixels instead of overwriting them.",
                           "a one-pixel perturbation sets the pixel: out[n, :, row, col] = value.")
        if x.shape[1] > 1 and _close(out[:, 1:], x[:, 1:], 0.0):
            raise Mismatch("only the first channel is painted.",
                           "a pixel has C values: pixels[..., 2:] holds all C of them; set every channel.")
        raise Mismatch("the painted batch differs from the reference.",
                       "overwrite (do not add): out[n, :, row, col] = value, for all C channels of that pixel, on a "
                       "copy of x.")
    return "overwrites K rounded (row, col) pixels per image with their C values, on a copy, H ≠ W and C = 3 too."
