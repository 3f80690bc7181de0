"""Box-constrained L-BFGS attack (Szegedy et al., 2013).

For a weight ``c > 0`` it solves

    min_{x'}  c * ||x' - x||_2^2 + L(x')    subject to  x' ∈ [0, 1]^D

with L-BFGS-B, and searches ``c`` per sample: a LARGER c weighs the distance more and gives a
SMALLER perturbation, so the search looks for the largest c whose solution is still adversarial
(bisection in log space between ``c_range``). The smallest successful perturbation seen is kept.

``L`` is the cross-entropy of the target class (targeted, as in the paper) or, untargeted, the
cross-entropy of "any class but y", ``-log(1 - p_y) = logsumexp(Z) - logsumexp_{j≠y}(Z)``: a
smooth loss that is bounded below, unlike ``-CE(y)``, so the problem stays well posed.

Implementation choice: :func:`scipy.optimize.minimize` (``method="L-BFGS-B"``, bounds [0, 1]) solves
the whole batch as ONE concatenated problem whose objective is the sum of the per-sample
objectives. The problem is separable, so its minimiser is the per-sample minimiser; each objective
evaluation is one forward and one backward pass over the batch (no loop over samples). The price:
the samples share L-BFGS's curvature memory and line search, and every evaluation copies the batch
between the device and the CPU (float64) that scipy works on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import Tensor, nn

from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, float64_device, logits_of, on_model_device
from advlab.config import AdvlabError

__all__ = ["lbfgs", "szegedy_loss"]


def szegedy_loss(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """(N,) loss L of the L-BFGS attack: CE of the target, or ``-log(1 - p_y)`` untargeted."""
    lse = logits.logsumexp(1)
    if targeted:
        return lse - logits.gather(1, labels[:, None]).squeeze(1)
    return lse - logits.scatter(1, labels[:, None], -math.inf).logsumexp(1)


def _check_params(c_range: tuple[float, float], search_steps: int, max_iter: int) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in c_range)
    except (TypeError, ValueError) as err:
        raise AdvlabError(f"c_range must be a pair (c_min, c_max) of positive numbers, got {c_range!r}.") from err
    if not (0 < lo < hi < math.inf):
        raise AdvlabError(f"c_range must satisfy 0 < c_min < c_max < inf, got {c_range!r}; e.g. (1e-3, 1e3).")
    for name, value in (("search_steps", search_steps), ("max_iter", max_iter)):
        if int(value) != value or value < 1:
            raise AdvlabError(f"{name} must be a positive integer, got {value!r}.")
    return lo, hi


def _solve(model: nn.Module, x: Tensor, labels: Tensor, targeted: bool, c: Tensor, max_iter: int) -> Tensor:
    """L-BFGS-B on the summed objective Σ_i c_i ||x'_i - x_i||² + L_i(x'_i); returns x' (N, *)."""
    shape, device, dtype = x.shape, x.device, x.dtype

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.from_numpy(z).to(dtype).to(device).view(shape).requires_grad_(True)  # cast on the CPU (mps)
        per_sample = c * (xt - x).flatten(1).pow(2).sum(1) + szegedy_loss(model(xt), labels, targeted)
        total = per_sample.sum()
        (grad,) = torch.autograd.grad(total, xt)
        return float(total.detach()), grad.detach().cpu().double().numpy().ravel()

    z0 = x.detach().cpu().double().numpy().ravel()
    res = minimize(
        objective, z0, jac=True, method="L-BFGS-B", bounds=Bounds(0.0, 1.0), options={"maxiter": int(max_iter)}
    )
    return torch.from_numpy(res.x).to(dtype).to(device).view(shape).clamp(0, 1)


@on_model_device
def lbfgs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    targeted: bool = False,
    c_range: tuple[float, float] = (1e-3, 1e3),
    search_steps: int = 10,
    max_iter: int = 100,
) -> AttackResult:
    """Szegedy et al.'s box-constrained L-BFGS attack with a per-sample search over c.

    Args:
        model: classifier returning (N, K) logits for inputs in [0, 1].
        x: (N, *) inputs in [0, 1].
        y: (N,) labels: the true labels, or the targets when ``targeted``.
        targeted: make the model predict ``y`` (the paper's setting) rather than anything but ``y``.
        c_range: ``(c_min, c_max)``, the interval of the log-space bisection over c; the first try is
            their geometric mean. A success moves the lower end up (try a larger c, a smaller
            perturbation), a failure moves the upper end down.
        search_steps: number of bisection steps (one L-BFGS-B solve each).
        max_iter: L-BFGS-B iterations per solve.

    Returns:
        :class:`AttackResult` with ``norm`` 2; ``success``: the prediction equals ``y`` when targeted,
        differs from it otherwise. Samples never made adversarial are returned unchanged.
    """
    c_lo, c_hi = _check_params(c_range, search_steps, max_iter)
    x, labels = check_inputs(x, y, name_y="target" if targeted else "y")
    view = (-1,) + (1,) * (x.ndim - 1)
    with eval_mode(model):
        check_logits(logits_of(model, x[:1]), labels)
        # the search over c in float64, on the CPU where the device has none (mps)
        log_lo = torch.full((len(x),), math.log(c_lo), dtype=torch.float64, device=float64_device(x.device))
        log_hi = torch.full_like(log_lo, math.log(c_hi))
        best_l2 = torch.full((len(x),), math.inf, dtype=x.dtype, device=x.device)
        best_adv = x.clone()
        for _ in range(int(search_steps)):
            log_c = (log_lo + log_hi) / 2
            x_opt = _solve(model, x, labels, targeted, log_c.exp().to(x.device, x.dtype), max_iter)
            pred = logits_of(model, x_opt).argmax(1)
            ok = pred == labels if targeted else pred != labels
            l2 = (x_opt - x).flatten(1).norm(dim=1)
            better = ok & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best_adv = torch.where(better.view(view), x_opt, best_adv)
            ok = ok.to(log_c.device)
            log_lo = torch.where(ok, log_c, log_lo)  # success: a larger c may still succeed, closer to x
            log_hi = torch.where(ok, log_hi, log_c)  # failure: c too large, the distance term won
        return finish(model, x, best_adv, labels, 2.0, targeted)
