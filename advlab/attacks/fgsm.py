"""The fast gradient (sign) method of Goodfellow et al. (2014): one gradient, one step."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab.attacks.core import check_loss, greedy_l1_step, loss_and_grad, per_sample, project
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


@on_model_device
def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    norm: str | float = "inf",
    targeted: bool = False,
    loss: str = "ce",
) -> AttackResult:
    """One step of size ε along the steepest-ascent direction of the loss for the chosen norm.

    The survey writes FGSM as ``x̃ = x + ε ∇_x L(y, h(x))`` (eq. 6), a step along the *raw* gradient. Its length
    then depends on the gradient's magnitude, so it is not in B_ε(x) in general. What Goodfellow et al. use, and
    what this function does, is the best first-order step *inside* the ball: the maximiser of the linearised loss
    ``<∇L, δ>`` subject to ``||δ||_p <= ε``:

    * L∞: ``δ = ε · sign(∇L)`` (every pixel moves by ±ε; the "sign" in the name);
    * L2: ``δ = ε · ∇L / ||∇L||_2`` (the raw gradient of eq. 6, rescaled to length ε);
    * L1: the linear maximiser over the L1 ball is sparse: put the whole budget on the coordinate with the largest
      |∇L|. Because a pixel can only move until it hits 0 or 1, we fill coordinates in order of decreasing |∇L|,
      each up to its room in the box, until ε is used: the exact maximiser over ``B_1(x) ∩ [0, 1]^d``.

    The step is then projected exactly onto the ball ∩ box (for L∞ and L1 this is only a safeguard).

    Args:
        model: returns logits (N, K); attacked in eval mode.
        x: (N, *) inputs in [0, 1]; y: (N,) true labels, or target labels if ``targeted`` (then we step down the
            loss of the target).
        eps: radius (scalar or (N,)) in pixel units of the chosen norm.
        norm: ``"inf"``, ``2`` or ``1``.
        loss: ``"ce"``, ``"margin"`` or ``"dlr"`` (see :func:`advlab.attacks.core.attack_loss`).

    Returns:
        :class:`~advlab.attacks.result.AttackResult`.
    """
    p = parse_norm(norm)
    x, y = check_inputs(x, y)
    eps_t = as_eps(eps, x)
    loss = check_loss(loss)
    with eval_mode(model):
        with torch.no_grad():  # shape, label range and softmax checks on one input: cheap, before any loss
            check_logits(logits_of(model, x[:1]), y)
        _, grad, _ = loss_and_grad(model, x, y, loss, targeted)
        if math.isinf(p):
            step = per_sample(eps_t, x) * grad.sign()
        elif p == 2.0:
            nrm = grad.flatten(1).norm(dim=1).clamp_min(1e-30)
            step = per_sample(eps_t / nrm, x) * grad
        else:
            step = greedy_l1_step(grad, x, eps_t)
        delta = project(step, x, eps_t, p)
        x_adv = torch.where(per_sample(eps_t, x) > 0, (x + delta).clamp(0, 1), x)
        return finish(model, x, x_adv, y, p, targeted)
