"""Carlini–Wagner L2 attack (Carlini and Wagner, 2017b).

Minimises ``||x' - x||_2^2 + c * f(x')`` over ``x' = (tanh(w) + 1) / 2`` (so x' always lies in
[0, 1]) with Adam, where ``f`` is the logit margin

    untargeted: f(x') = max(Z_y - max_{j≠y} Z_j, -κ)      targeted: f(x') = max(max_{j≠t} Z_j - Z_t, -κ)

and ``c`` is found per sample by a (vectorised) binary search: c grows ×10 until the attack
succeeds, then is bisected between the largest failing and smallest succeeding value. Adam and ``w``
are reset at the start of every search step, and the smallest successful x' over all steps is kept.

The start point is ``w0 = atanh((2x - 1)(1 - 1e-6))``: a pixel at exactly 0 or 1 maps to a finite
``w0`` (about ∓7.25), so it can still move; but Adam moves ``w`` by at most about the learning rate
per step, so such a pixel needs a total travel of ~7 in w to reach mid-grey. The paper's lr 0.01
came with up to 10,000 steps; with 100 steps it leaves the black background of MNIST digits frozen
(the attack then fails on about half of the images). So here the learning rate starts at
``lr = 0.2`` and is cosine-annealed to ``lr / 100`` within each search step: large steps first (the
saturated pixels can travel), small ones last (the iterate settles close to the boundary).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks.core import margin_loss
from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, logits_of, on_model_device
from advlab.config import AdvlabError

__all__ = ["cw_l2", "cw_margin"]

_TANH_SHRINK = 1.0 - 1e-6
_C_UNBOUNDED = 1e10  # "no successful c yet" marker for the upper end of the search


def cw_margin(logits: Tensor, y: Tensor, targeted: bool = False, confidence: float = 0.0) -> Tensor:
    """Carlini–Wagner's f, (N,): how far the sample is from being adversarial, floored at -κ (to be *minimised*).

    It is minus the package's one margin, :func:`advlab.attacks.core.margin_loss` (``max_{j≠y} z_j - z_y``, positive
    when the prediction is not y): untargeted ``f = z_y - max_{j≠y} z_j``; targeted (y = target t)
    ``f = max_{j≠t} z_j - z_t``.

    Args:
        logits: (N, K) logits.
        y: (N,) true labels (untargeted) or target labels (targeted).
        targeted: whether ``y`` holds targets.
        confidence: κ ≥ 0; f bottoms out once the adversarial class wins by κ.
    """
    m = margin_loss(logits, y)
    return (m if targeted else -m).clamp_min(-confidence)


def _is_adversarial(logits: Tensor, y: Tensor, targeted: bool, confidence: float) -> Tensor:
    """(N,) bool: the adversarial class wins by more than κ (for κ = 0: the prediction changed)."""
    m = margin_loss(logits, y)
    return (-m if targeted else m) > confidence


def _check_params(confidence: float, c_init: float, binary_search_steps: int, steps: int, lr: float) -> None:
    if not math.isfinite(confidence) or confidence < 0:
        raise AdvlabError(f"confidence (κ) must be a finite number >= 0, got {confidence!r}.")
    if not math.isfinite(c_init) or c_init <= 0:
        raise AdvlabError(f"c_init must be a positive number, got {c_init!r}; try 1.0.")
    for name, value in (("binary_search_steps", binary_search_steps), ("steps", steps)):
        if int(value) != value or value < 1:
            raise AdvlabError(f"{name} must be a positive integer, got {value!r}.")
    if not math.isfinite(lr) or lr <= 0:
        raise AdvlabError(f"lr must be a positive number, got {lr!r}; try 0.01 to 0.3.")


@on_model_device
def cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    targeted: bool = False,
    confidence: float = 0.0,
    c_init: float = 1.0,
    binary_search_steps: int = 9,
    steps: int = 100,
    lr: float = 0.2,
    abort_early: bool = True,
) -> AttackResult:
    """Carlini–Wagner L2: the smallest-L2 adversarial example found by a per-sample search over c.

    Args:
        model: classifier returning (N, K) logits for inputs in [0, 1].
        x: (N, *) inputs in [0, 1].
        y: (N,) true labels, or target labels when ``targeted``.
        targeted: make the model predict ``y`` instead of anything but ``y``.
        confidence: κ, the logit margin by which the adversarial class must win while optimising.
        c_init: first weight of the margin term (per sample, then searched). 1.0 suits [0, 1] images.
        binary_search_steps: number of outer steps of the search over c.
        steps: Adam steps per search step.
        lr: initial Adam learning rate in tanh (w) space, cosine-annealed to ``lr / 100`` within each
            search step; see the module docstring for why it is larger than the paper's 0.01.
        abort_early: stop a sample's search step once it has been adversarial in that step and its
            loss has not dropped by 0.01% over the last ``steps // 10`` steps (the step ends when
            every sample has stopped). Unlike the paper, a sample not yet adversarial never stops
            early: its loss is flat while a pixel at 0 or 1 is still deep in tanh's saturation.

    Returns:
        :class:`AttackResult` with ``norm`` 2. Samples never made adversarial are returned unchanged.
    """
    _check_params(confidence, c_init, binary_search_steps, steps, lr)
    x, y = check_inputs(x, y, name_y="target" if targeted else "y")
    n = len(x)
    view = (-1,) + (1,) * (x.ndim - 1)
    with eval_mode(model):
        check_logits(logits_of(model, x[:1]), y)
        w0 = torch.atanh((2 * x - 1) * _TANH_SHRINK)
        c = torch.full((n,), float(c_init), dtype=x.dtype, device=x.device)
        lower = torch.zeros_like(c)
        upper = torch.full_like(c, _C_UNBOUNDED)
        best_l2 = torch.full_like(c, math.inf)
        best_adv = x.clone()
        check_every = max(int(steps) // 10, 1)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        # cosine-annealed step size: big early (saturated pixels travel), fine late (precise boundary)
        lr_t = [lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / steps))) for t in range(int(steps))]

        for _ in range(int(binary_search_steps)):
            w = w0.clone()  # reset the variable and Adam's state at every search step
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)  # success within this search step
            running = torch.ones(n, dtype=torch.bool, device=x.device)
            prev = torch.full_like(c, math.inf)
            idx = torch.arange(n, device=x.device)  # the samples still optimising (refreshed at checks)
            for t in range(1, int(steps) + 1):
                wi = w[idx].requires_grad_(True)
                x_adv = (torch.tanh(wi) + 1) / 2
                l2sq = (x_adv - x[idx]).flatten(1).pow(2).sum(1)
                logits = model(x_adv)
                loss = l2sq + c[idx] * cw_margin(logits, y[idx], targeted, confidence)
                (grad,) = torch.autograd.grad(loss.sum(), wi)  # samples are independent: the sum splits
                with torch.no_grad():
                    adv = _is_adversarial(logits, y[idx], targeted, confidence)
                    l2 = l2sq.sqrt()
                    found[idx] |= adv
                    better = adv & (l2 < best_l2[idx])
                    best_l2[idx] = torch.where(better, l2, best_l2[idx])
                    best_adv[idx] = torch.where(better.view(view), x_adv, best_adv[idx])
                    # Adam, element-wise (so per sample), on the samples still optimising
                    m[idx] = beta1 * m[idx] + (1 - beta1) * grad
                    v[idx] = beta2 * v[idx] + (1 - beta2) * grad * grad
                    m_hat, v_hat = m[idx] / (1 - beta1**t), v[idx] / (1 - beta2**t)
                    w[idx] = wi - lr_t[t - 1] * m_hat / (v_hat.sqrt() + adam_eps)
                    if abort_early and t % check_every == 0:
                        # stop samples that were adversarial in this search step and stopped improving;
                        # a flat loss on a sample not yet adversarial may be a saturated pixel waking up
                        running[idx] &= ~(found[idx] & (loss > prev[idx] * 0.9999))
                        prev[idx] = loss
                        idx = running.nonzero().squeeze(1)
                        if idx.numel() == 0:
                            break
            with torch.no_grad():
                # binary search on c, per sample: success -> smaller c, failure -> larger c
                upper = torch.where(found, torch.minimum(upper, c), upper)
                lower = torch.where(found, lower, torch.maximum(lower, c))
                bounded = upper < _C_UNBOUNDED / 10
                c = torch.where(bounded, (lower + upper) / 2, c * 10)

        result = finish(model, x, best_adv, y, 2.0, targeted)
        if not result.success.all():  # a failed sample (or a tie flipped by rounding) is returned as x
            result = finish(model, x, torch.where(result.success.view(view), result.x_adv, x), y, 2.0, targeted)
    return result
