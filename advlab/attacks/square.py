"""The Square Attack (Andriushchenko et al., ECCV 2020): a score-based random search that never uses a gradient.

Each query changes the current perturbation on one random square window (per sample: its own window and signs)
and keeps the change if the true class's lead ``z_y - max_{j≠y} z_j`` (minus the margin loss) went down. The
window's side follows the paper's schedule: a fraction ``p`` of the pixels, ``p_init`` at first, halved at fixed
fractions of the query budget.

* L∞ starts from vertical stripes of ±ε and sets a window of each channel to a fresh random ±ε (relative to x).
* L2 starts from a grid of "meta-Gaussian" blocks and moves the mass of one window, reshaped into a new
  ±meta-Gaussian block, into another window, keeping ``||δ||_2 = ε`` (before clipping to the box).

It only reads logits, so it is the member of the AutoAttack ensemble that gradient masking (quantisation,
non-differentiable preprocessing, shattered gradients) cannot fool: a model it breaks while gradient attacks
fail is masking its gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks.core import margin_loss, per_sample
from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import (
    as_eps,
    check_inputs,
    check_logits,
    eval_mode,
    logits_of,
    on_model_device,
    parse_norm,
)
from advlab.config import AdvlabError

P_INIT = {math.inf: 0.8, 2.0: 0.8}  # AutoAttack's fraction of pixels in the first window


def p_schedule(p_init: float, query: int, queries: int) -> float:
    """The fraction of pixels changed at ``query`` (0-based) of ``queries``: the paper's piecewise halving.

    The breakpoints are those for 10,000 queries, rescaled to the budget (as AutoAttack does).
    """
    it = int(query / queries * 10_000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _window(n: int, h: int, w: int, side: Tensor, gen: torch.Generator | None, device: torch.device) -> Tensor:
    """(N, 1, H, W) boolean masks of one square window of side ``side`` (N,) per sample, at a uniform position."""
    top = (torch.rand(n, generator=gen) * (h - side.cpu() + 1)).long().clamp(max=h - 1).to(device)
    left = (torch.rand(n, generator=gen) * (w - side.cpu() + 1)).long().clamp(max=w - 1).to(device)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_r = (rows >= top[:, None]) & (rows < (top + side)[:, None])
    in_c = (cols >= left[:, None]) & (cols < (left + side)[:, None])
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _signs(shape: tuple[int, ...], gen: torch.Generator | None, like: Tensor) -> Tensor:
    return (torch.rand(shape, generator=gen) < 0.5).to(like.dtype).mul_(2).sub_(1).to(like.device)


def _meta_gaussian(s: int) -> Tensor:
    """The paper's (s, s) block for L2: two halves of opposite sign, each a sum of nested rectangles ∝ 1/r²."""

    def rectangles(a: int, b: int) -> Tensor:
        block = torch.zeros(a, b)
        ca, cb = a // 2, b // 2
        for r in range(max(ca, cb) + 1):
            block[max(ca - r, 0):min(ca + r + 1, a), max(cb - r, 0):min(cb + r + 1, b)] += 1.0 / (r + 1) ** 2
        return block / block.norm().clamp_min(1e-12)

    block = torch.cat([rectangles(s // 2, s), -rectangles(s - s // 2, s)], 0) if s > 1 else torch.ones(1, 1)
    return block / block.norm().clamp_min(1e-12)


def _lead(model: nn.Module, x: Tensor, y: Tensor, chunk: int | None) -> Tensor:
    """The true class's lead ``z_y - max_{j≠y} z_j`` (N,), minus :func:`~advlab.attacks.core.margin_loss`: positive
    while the prediction is y."""
    with torch.no_grad():
        return -margin_loss(logits_of(model, x, chunk), y)


@on_model_device
def square(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    queries: int = 5000,
    p_init: float | None = None,
    generator: torch.Generator | None = None,
    chunk: int | None = None,
) -> AttackResult:
    """Square Attack: random search on the margin loss with square windows; logits only, no gradients.

    Args:
        model: returns logits (N, K); only its outputs are read (it is never differentiated).
        x: (N, C, H, W) images in [0, 1]; y: (N,) true labels.
        eps: radius (scalar or (N,)) in pixel units.
        norm: ``"inf"`` or ``2``.
        queries: model evaluations per sample at most (the initial point counts as one); a sample stops at its
            first success.
        p_init: fraction of pixels in the first window (default 0.8, as AutoAttack).
        generator: a CPU ``torch.Generator`` for the windows and signs (reproducibility).
        chunk: samples per forward pass (``None``: the device's default, see
            :func:`advlab.attacks.tensors.chunk_size`; ``0``: the whole batch); the speed changes, not the result.

    Returns:
        :class:`~advlab.attacks.result.AttackResult` (success: the prediction is not y), re-checked in eval mode.
    """
    p = parse_norm(norm)
    if p == 1.0:
        raise AdvlabError("square supports norm='inf' and 2.")
    x, y = check_inputs(x, y)
    if x.ndim != 4:
        raise AdvlabError(f"square attacks images shaped (N, C, H, W); got shape {tuple(x.shape)}.")
    if isinstance(queries, bool) or int(queries) != queries or queries < 1:
        raise AdvlabError(f"queries must be a positive integer (a budget of model evaluations), got {queries!r}.")
    p_init = P_INIT[p] if p_init is None else float(p_init)
    if not 0 < p_init <= 1:
        raise AdvlabError(f"p_init must lie in (0, 1], got {p_init!r}.")
    if generator is not None and generator.device.type != "cpu":
        raise AdvlabError("square draws its windows on the CPU: pass a CPU torch.Generator.")
    eps_t = as_eps(eps, x)
    n, c, h, w = x.shape
    with eval_mode(model):
        with torch.no_grad():
            check_logits(logits_of(model, x[:1]), y)
        e = per_sample(eps_t, x)
        if math.isinf(p):
            delta = e * _signs((n, c, 1, w), generator, x).expand(n, c, h, w)
        else:
            delta = _l2_init(x, eps_t, generator)
        best = (x + delta).clamp(0, 1)
        lead = _lead(model, best, y, chunk)
        rows = (lead > 0).nonzero().squeeze(1)
        # the survivors' data, gathered once and compacted only when a survivor falls (not at every query)
        xr, br, er, yr, lr, epr = x[rows], best[rows], e[rows], y[rows], lead[rows], eps_t[rows]
        # L∞: a window's new value is one of the ball's two corners, clipped to the box; every other pixel keeps its
        # (feasible) value, so the candidate needs no projection (L2 proposals project themselves)
        corners = [(xr + er).clamp(0, 1), (xr - er).clamp(0, 1)] if math.isinf(p) else []
        for q in range(1, int(queries)):
            if rows.numel() == 0:
                break
            frac = p_schedule(p_init, q, int(queries))
            if math.isinf(p):
                side = max(int(round(math.sqrt(frac * h * w))), 1)
                side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
                mask = _window(len(rows), h, w, torch.full((len(rows),), side), generator, x.device)
                plus = _signs((len(rows), c, 1, 1), generator, x) > 0
                cand = torch.where(mask, torch.where(plus, *corners), br)
            else:
                cand = _l2_step(xr, br, epr, frac, generator)
            l_new = _lead(model, cand, yr, chunk)
            take = l_new < lr
            if bool(take.any()):  # late in the search few samples improve: copy their rows only
                br[take], lr[take] = cand[take], l_new[take]
            alive = lr > 0
            if not bool(alive.all()):  # write the fallen back, then keep the survivors only
                best[rows], lead[rows] = br, lr
                rows, xr, br, er, yr, lr, epr = (t[alive] for t in (rows, xr, br, er, yr, lr, epr))
                corners = [t[alive] for t in corners]
        best[rows], lead[rows] = br, lr
        return finish(model, x, best, y, p, chunk=chunk)


def _l2_init(x: Tensor, eps: Tensor, gen: torch.Generator | None) -> Tensor:
    """The L2 start: a grid of ±meta-Gaussian blocks (side H // 5), scaled to ``||δ||_2 = ε``."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    block = _meta_gaussian(s).to(x.device, x.dtype)
    delta = torch.zeros_like(x)
    off_h, off_w = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
    for i in range(h // s):
        for j in range(w // s):
            sign = _signs((n, c, 1, 1), gen, x)
            r, q = off_h + i * s, off_w + j * s
            delta[:, :, r:r + s, q:q + s] += block * sign
    nrm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * per_sample(eps / nrm, x)


def _l2_step(x: Tensor, best: Tensor, eps: Tensor, frac: float, gen: torch.Generator | None) -> Tensor:
    """One L2 proposal: replace window 1's content by a ±meta-Gaussian block that also takes window 2's mass."""
    n, c, h, w = x.shape
    side = max(int(round(math.sqrt(frac * h * w))), 3)
    side += side % 2 == 0
    side = min(side, h, w)
    delta = best - x
    m1 = _window(n, h, w, torch.full((n,), side), gen, x.device).to(x.dtype)
    m2 = _window(n, h, w, torch.full((n,), side), gen, x.device).to(x.dtype)
    both = torch.maximum(m1, m2)
    d2 = delta.flatten(1).pow(2).sum(1)
    mass_windows = (delta * both).pow(2).flatten(2).sum(2)  # (N, C): per channel, inside the two windows
    # the new block per channel: the old window-1 content (normalised) plus a fresh ±meta-Gaussian
    old = delta * m1
    old_n = old.pow(2).flatten(2).sum(2).sqrt().clamp_min(1e-12)
    block = _meta_gaussian(side).to(x.device, x.dtype)
    fresh = torch.zeros_like(x)
    # place the block at window 1 of every sample: gather the window's coordinates
    idx = m1[:, 0].flatten(1).nonzero()  # (N·side², 2): (sample, flat pixel), row-major inside the window
    fresh_flat = fresh.view(n, c, h * w)
    signs = _signs((n, c, 1), gen, x)
    vals = block.flatten()[None, None, :] * signs  # (N, C, side²)
    pix = idx[:, 1].view(n, side * side)
    fresh_flat.scatter_(2, pix[:, None, :].expand(n, c, side * side), vals)
    new = old / old_n[:, :, None, None] + fresh
    new_n = (new * m1).pow(2).flatten(2).sum(2).sqrt().clamp_min(1e-12)
    budget = ((eps.pow(2) - d2).clamp_min(0)[:, None] / c + mass_windows).sqrt()  # (N, C)
    new = new * m1 * (budget / new_n)[:, :, None, None]
    cand_delta = delta * (1 - both) + new
    nrm = cand_delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    cand_delta = cand_delta * per_sample(eps / nrm, x)
    return (x + cand_delta).clamp(0, 1)
