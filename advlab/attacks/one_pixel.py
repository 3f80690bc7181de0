"""Few-pixel (L0) attacks: the one-pixel attack by differential evolution (Su, Vargas and Sakurai, 2017), which
reads only the model's outputs, and a greedy gradient attack (:func:`greedy_pixels`, in the spirit of Papernot et
al.'s saliency-map attack) that follows the input gradient.

A candidate is ``pixels`` tuples ``(row, col, v_1, ..., v_C)``: overwrite the pixel at (row, col)
with the values v in [0, 1]. Differential evolution DE/rand/1 with F = 0.5 evolves a population per
image: the child of member i is ``x_r1 + F (x_r2 - x_r3)`` (r1, r2, r3 distinct, drawn at random),
and it replaces member i when its fitness is no worse. The paper uses no crossover
(``crossover=1.0`` here); a binomial crossover rate < 1 is available. Fitness is the probability of
the true class (untargeted, minimised) or minus the probability of the target class (targeted).
Initial positions are uniform over the image and values are N(0.5, 0.5) clipped to [0, 1] (the
paper's N(128, 127) on a 0–255 scale). It needs only the model's outputs (a black-box attack).

The children of every image in the batch are evaluated in one forward pass per generation, shaped
(N_active · P, C, H, W), split into chunks only beyond ``max_batch`` inputs. An image stops evolving
as soon as one of its candidates fools the model, and that candidate is returned.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from advlab.attacks.core import loss_and_grad
from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, logits_of, on_model_device
from advlab.config import AdvlabError

__all__ = ["changed_pixels", "greedy_pixels", "one_pixel"]

_ELEMENT_BUDGET = 2**26  # default cap on elements per forward pass (about 256 MB of float32 input)


def changed_pixels(x: Tensor, x_adv: Tensor) -> Tensor:
    """(N,) number of pixel locations (H, W) where any channel differs: the L0 norm used here."""
    return (x_adv != x).any(dim=1).flatten(1).sum(1).to(x.dtype)


@on_model_device
def greedy_pixels(model: nn.Module, x: Tensor, y: Tensor, pixels: int) -> AttackResult:
    """Gradient-based L0 attack: ``pixels`` times, set to 0 or 1 the not yet changed pixel whose first-order gain in
    the cross-entropy is largest (all of a pixel's channels together), for every image of the batch at once.

    The first-order gain of setting pixel j to 1 is ``g_j (1 - x_j)`` and to 0 is ``-g_j x_j``, for ``g`` the
    gradient of the loss w.r.t. the input (summed over channels). One forward and one backward per changed pixel.

    Args:
        model: returns logits (N, K) for inputs in [0, 1]; attacked in eval mode.
        x: (N, C, H, W) images in [0, 1]; y: (N,) true labels.
        pixels: pixel locations to change (the L0 budget, :func:`changed_pixels`).

    Returns:
        :class:`~advlab.attacks.result.AttackResult` with L0 norms (changed pixel locations).
    """
    x, y = check_inputs(x, y)
    if x.ndim != 4:
        raise AdvlabError(f"greedy_pixels attacks images shaped (N, C, H, W); got shape {tuple(x.shape)}.")
    if isinstance(pixels, bool) or int(pixels) != pixels or pixels < 1:
        raise AdvlabError(f"pixels must be a positive integer, got {pixels!r}.")
    n, c, h, w = x.shape
    x_adv = x.clone()
    changed = torch.zeros(n, h * w, dtype=torch.bool, device=x.device)
    rows = torch.arange(n, device=x.device)
    with eval_mode(model):
        check_logits(logits_of(model, x[:1]), y)
        for _ in range(min(int(pixels), h * w)):
            _, grad, _ = loss_and_grad(model, x_adv, y)
            g, flat = grad.view(n, c, h * w), x_adv.view(n, c, h * w)
            gain = (g * (1 - flat)).clamp_min(0) + (-g * flat).clamp_min(0)  # per channel: the better of 1 and 0
            j = gain.sum(1).masked_fill(changed, -float("inf")).argmax(1)  # (N,) the pixel location to change
            flat = flat.clone()
            flat[rows, :, j] = (g[rows, :, j] > 0).to(x.dtype)
            changed[rows, j] = True
            x_adv = flat.view_as(x)
        result = finish(model, x, x_adv, y, 2.0)
    return dataclasses.replace(result, norms=changed_pixels(x, result.x_adv), norm=0.0)


def _apply(x: Tensor, cand: Tensor) -> Tensor:
    """Paint candidates onto images.

    Args:
        x: (n, C, H, W) images.
        cand: (n, P, pixels, 2 + C) candidates, coordinates continuous (rounded here).

    Returns:
        (n * P, C, H, W): image i painted with each of its P candidates.
    """
    n, c, h, w = x.shape
    p = cand.shape[1]
    out = x[:, None].expand(n, p, c, h, w).clone()
    rows = cand[..., 0].round().clamp(0, h - 1).long()  # (n, P, pixels)
    cols = cand[..., 1].round().clamp(0, w - 1).long()
    ni = torch.arange(n, device=x.device)[:, None].expand(n, p)
    pi = torch.arange(p, device=x.device)[None, :].expand(n, p)
    for k in range(cand.shape[2]):  # a loop over the few painted pixels, not over samples
        # advanced indexing puts the (n, P) index dims first, then the channel dim
        out[ni, pi, :, rows[..., k], cols[..., k]] = cand[..., k, 2:].to(x.dtype)
    return out.view(n * p, c, h, w)


def _fitness(model: nn.Module, imgs: Tensor, labels: Tensor, targeted: bool, max_batch: int) -> tuple[Tensor, Tensor]:
    """Fitness (lower is better) and success of (n * P, C, H, W) images; ``labels`` is (n * P,)."""
    logits = logits_of(model, imgs, max_batch)
    prob = logits.softmax(1).gather(1, labels[:, None]).squeeze(1)
    pred = logits.argmax(1)
    return (-prob, pred == labels) if targeted else (prob, pred != labels)


def _check_params(pixels: int, population: int, generations: int, f: float, crossover: float, x: Tensor) -> None:
    if x.ndim != 4:
        raise AdvlabError(f"one_pixel needs images shaped (N, C, H, W), got shape {tuple(x.shape)}.")
    for name, value, least in (("pixels", pixels, 1), ("population", population, 4), ("generations", generations, 0)):
        if int(value) != value or value < least:
            raise AdvlabError(f"{name} must be an integer >= {least}, got {value!r}.")
    if pixels > x.shape[2] * x.shape[3]:
        raise AdvlabError(f"pixels={pixels} exceeds the {x.shape[2] * x.shape[3]} pixels of an image.")
    if not (0 < f <= 2) or not (0 < crossover <= 1):
        raise AdvlabError(f"Need 0 < F <= 2 and 0 < crossover <= 1, got F={f!r}, crossover={crossover!r}.")


@on_model_device
def one_pixel(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    pixels: int = 1,
    population: int = 400,
    generations: int = 100,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    f: float = 0.5,
    crossover: float = 1.0,
    max_batch: int | None = None,
) -> AttackResult:
    """Su et al.'s few-pixel attack: differential evolution over the positions and values of pixels.

    Args:
        model: classifier returning (N, K) logits for images in [0, 1]; only its outputs are used.
        x: (N, C, H, W) images in [0, 1].
        y: (N,) true labels, or target labels when ``targeted``.
        pixels: number of pixels each candidate may change.
        population: candidates per image (P; the paper uses 400).
        generations: most DE generations (the paper uses 100); images stop once fooled.
        targeted: make the model predict ``y`` rather than anything but ``y``.
        generator: a CPU ``torch.Generator`` for the population and the mutations (reproducibility: the same result
            on any device); ``None`` draws from torch's global stream, like the other attacks.
        f: DE scale factor F (0.5 in the paper).
        crossover: binomial crossover rate; 1.0 (default, as in the paper) takes the whole mutant.
        max_batch: most images per forward pass; default about 2**26 input elements per pass.

    Returns:
        :class:`AttackResult` with ``norm`` 0.0 and ``norms`` the number of changed pixel locations.
        Failed images, and images the model already gets wrong (right, if targeted), come back
        unchanged (norm 0).
    """
    x, y = check_inputs(x, y, name_y="target" if targeted else "y")
    _check_params(pixels, population, generations, f, crossover, x)
    n, c, h, w = x.shape
    pop_n, dims = int(population), 2 + c
    if max_batch is None:
        max_batch = max(1, _ELEMENT_BUDGET // (c * h * w))
    if generator is not None and generator.device.type != "cpu":
        raise AdvlabError("one_pixel draws its candidates on the CPU: pass a CPU torch.Generator.")
    low = torch.tensor([0.0, 0.0] + [0.0] * c)
    high = torch.tensor([h - 1.0, w - 1.0] + [1.0] * c)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator).to(x.device)

    with eval_mode(model):
        clean_logits = logits_of(model, x)
        check_logits(clean_logits, y)
        clean = clean_logits.argmax(1)
        already = clean == y if targeted else clean != y  # nothing to do: returned unchanged
        pos = torch.rand(n, pop_n, pixels, 2, generator=generator) * torch.tensor([h, w]) - 0.5
        val = (0.5 + 0.5 * torch.randn(n, pop_n, pixels, c, generator=generator)).clamp(0, 1)
        cand = torch.cat([pos, val], dim=3).to(x.device, x.dtype)  # (N, P, pixels, 2 + C)
        low, high = low.to(x.device, x.dtype), high.to(x.device, x.dtype)
        labels_rep = y.repeat_interleave(pop_n)

        fit, ok = _fitness(model, _apply(x, cand), labels_rep, targeted, max_batch)
        fit, ok = fit.view(n, pop_n), ok.view(n, pop_n)
        found = ok.any(1) | already
        best = cand[torch.arange(n, device=x.device), ok.float().argmax(1)]  # (N, pixels, 2 + C)

        for _ in range(int(generations)):
            idx = (~found).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            m = idx.numel()
            # r1, r2, r3 distinct per (image, member): draw r1, shift r2 past it, skip both for r3
            r1 = torch.randint(pop_n, (m, pop_n), generator=generator)
            r2 = (r1 + torch.randint(1, pop_n, (m, pop_n), generator=generator)) % pop_n
            a, b = torch.minimum(r1, r2), torch.maximum(r1, r2)
            r3 = torch.randint(pop_n - 2, (m, pop_n), generator=generator)
            r3 = r3 + (r3 >= a).long()
            r3 = r3 + (r3 >= b).long()
            sub = cand[idx]  # (m, P, pixels, dims)

            def pick(r: Tensor, sub: Tensor = sub) -> Tensor:
                return sub.gather(1, r.to(x.device)[:, :, None, None].expand(-1, -1, pixels, dims))

            child = (pick(r1) + f * (pick(r2) - pick(r3))).clamp(low, high)
            if crossover < 1:
                take = rand(m, pop_n, pixels, dims) < crossover
                forced = torch.randint(dims, (m, pop_n, pixels, 1), generator=generator).to(x.device)
                take |= torch.zeros_like(take).scatter_(3, forced, True)
                child = torch.where(take, child, sub)
            c_fit, c_ok = _fitness(model, _apply(x[idx], child), y[idx].repeat_interleave(pop_n), targeted, max_batch)
            c_fit, c_ok = c_fit.view(m, pop_n), c_ok.view(m, pop_n)
            keep = c_fit <= fit[idx]
            cand[idx] = torch.where(keep[:, :, None, None], child, sub)
            fit[idx] = torch.where(keep, c_fit, fit[idx])
            hit = c_ok.any(1)
            best[idx[hit]] = child[hit, c_ok[hit].float().argmax(1)]
            found[idx[hit]] = True

        x_adv = _apply(x, best[:, None]).view_as(x)
        x_adv = torch.where((found & ~already).view(-1, 1, 1, 1), x_adv, x)  # failures come back unchanged
        result = finish(model, x, x_adv, y, 0.0, targeted)
    return dataclasses.replace(result, norms=changed_pixels(x, result.x_adv), norm=0.0)
