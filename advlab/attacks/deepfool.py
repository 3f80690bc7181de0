"""DeepFool (Moosavi-Dezfooli et al., 2016): the closest adversarial example, survey eq. (2).

DeepFool linearises the classifier around the current point and steps to the nearest linearised
decision boundary among a few candidate classes, until the prediction changes. For the L2 norm the
step towards class k is ``|f_k| / ||w_k||_2^2 * w_k``; for L∞ it is the ℓ1-dual step
``|f_k| / ||w_k||_1 * sign(w_k)``, where ``f_k = Z_k - Z_y`` and ``w_k = ∇f_k``.

As in the reference implementation, the overshoot multiplies the *total* perturbation,
``x_adv = clip(x + (1 + overshoot) * r_tot, 0, 1)``, and the iterate the model is queried at is that
overshot point. Everything is batched: each iteration runs one forward pass over the still-correct
samples and one backward pass per candidate class (never a loop over samples).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, logits_of, on_model_device, parse_norm
from advlab.config import AdvlabError

__all__ = ["DeepFoolTrace", "deepfool", "deepfool_trace"]

_STEP_EPS = 1e-4  # the reference code steps (pert + 1e-4) to land just past the linearised boundary


class DeepFoolTrace(NamedTuple):
    """The raw output of the DeepFool iterations, before the result is re-checked.

    Attributes:
        r_tot: (N, *) accumulated perturbation *before* the overshoot is applied (pixel units).
        x_adv: (N, *) ``clip(x + (1 + overshoot) * r_tot, 0, 1)``.
        iterations: (N,) int64, number of linearisation steps each sample took (0 if already wrong).
        fooled: (N,) bool, whether the sample was misclassified when it stopped.
    """

    r_tot: Tensor
    x_adv: Tensor
    iterations: Tensor
    fooled: Tensor


def _check_params(overshoot: float, max_iter: int, candidates: int) -> None:
    if not math.isfinite(overshoot) or overshoot < 0:
        raise AdvlabError(f"overshoot must be a finite number >= 0 (got {overshoot!r}); the reference value is 0.02.")
    if int(max_iter) != max_iter or max_iter < 1:
        raise AdvlabError(f"max_iter must be a positive integer (got {max_iter!r}).")
    if int(candidates) != candidates or candidates < 2:
        raise AdvlabError(
            f"candidates must be an integer >= 2 (got {candidates!r}): it counts the true class plus "
            "at least one other class to move towards."
        )


def _candidate_classes(logits: Tensor, y: Tensor, candidates: int) -> Tensor:
    """(N, m) indices of the m = candidates - 1 highest-scoring classes other than y (clean logits)."""
    k = min(int(candidates), logits.shape[1]) - 1
    masked = logits.detach().scatter(1, y[:, None], -math.inf)
    return masked.topk(k, dim=1).indices


def _run(
    model: nn.Module, x: Tensor, y: Tensor, p: float, overshoot: float, max_iter: int, candidates: int
) -> DeepFoolTrace:
    """The DeepFool iterations on validated inputs, with the model already in eval mode."""
    n = len(x)
    logits0 = logits_of(model, x)
    check_logits(logits0, y)
    if logits0.shape[1] < 2:
        raise AdvlabError("deepfool needs a model with at least 2 classes.")
    cand = _candidate_classes(logits0, y, candidates)  # (N, m), fixed at the clean input as in the paper
    scale = 1.0 + overshoot
    dual = 1.0 if math.isinf(p) else 2.0  # the dual norm of the attack norm

    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    active = logits0.argmax(1) == y  # already-misclassified samples need no perturbation
    for _ in range(int(max_iter)):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa = x_adv[idx].clone().requires_grad_(True)
        logits = model(xa)
        z_true = logits.gather(1, y[idx, None])  # (n, 1)
        z_cand = logits.gather(1, cand[idx])  # (n, m)
        still = logits.detach().argmax(1) == y[idx]  # (n,) not yet fooled at the current query
        f = (z_cand - z_true).detach()  # (n, m), negative while the sample is still correct
        grads = []
        for j in range(cand.shape[1]):  # one backward per candidate class, all samples at once
            (g,) = torch.autograd.grad((z_cand[:, j] - z_true[:, 0]).sum(), xa, retain_graph=j + 1 < cand.shape[1])
            grads.append(g.flatten(1))
        w = torch.stack(grads, dim=1)  # (n, m, D)
        w_norm = torch.linalg.vector_norm(w, ord=dual, dim=2).clamp_min(1e-12)  # (n, m)
        dist = f.abs() / w_norm  # distance to each linearised boundary, in the attack norm
        best = dist.argmin(1, keepdim=True)  # (n, 1)
        d_best = dist.gather(1, best)  # (n, 1)
        w_best = w.gather(1, best[:, :, None].expand(-1, 1, w.shape[2])).squeeze(1)  # (n, D)
        if math.isinf(p):
            r_i = (d_best + _STEP_EPS) * w_best.sign()
        else:
            r_i = (d_best + _STEP_EPS) * w_best / w_norm.gather(1, best)
        r_i = torch.where(still[:, None], r_i, torch.zeros_like(r_i))  # fooled samples stop here
        r_tot[idx] = r_tot[idx] + r_i.view_as(xa)
        x_adv[idx] = (x[idx] + scale * r_tot[idx]).clamp(0, 1)
        iterations[idx[still]] += 1
        active[idx[~still]] = False
    fooled = logits_of(model, x_adv).argmax(1) != y
    return DeepFoolTrace(r_tot=r_tot, x_adv=x_adv, iterations=iterations, fooled=fooled)


def _validate(
    x: Tensor, y: Tensor, norm: str | float, overshoot: float, max_iter: int, candidates: int
) -> tuple[Tensor, Tensor, float]:
    p = parse_norm(norm)
    if p == 1.0:
        raise AdvlabError("deepfool supports norm=2 and norm='inf'; for L1 use another attack.")
    _check_params(overshoot, max_iter, candidates)
    if y is None:
        raise AdvlabError("deepfool needs the true labels y (one integer per input).")
    x, y = check_inputs(x, y)
    return x, y, p


@on_model_device
def deepfool_trace(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str | float = 2,
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
) -> DeepFoolTrace:
    """Run DeepFool and return its raw trace: ``r_tot`` before the overshoot, iterations, x_adv.

    Same arguments as :func:`deepfool`. ``deepfool(...).x_adv`` equals
    ``(x + (1 + overshoot) * trace.r_tot).clamp(0, 1)``.
    """
    x, y, p = _validate(x, y, norm, overshoot, max_iter, candidates)
    with eval_mode(model):
        return _run(model, x, y, p, overshoot, max_iter, candidates)


@on_model_device
def deepfool(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str | float = 2,
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
) -> AttackResult:
    """DeepFool: an approximately minimal untargeted perturbation in L2 or L∞.

    Args:
        model: classifier returning (N, K) logits for inputs in [0, 1].
        x: (N, *) inputs in [0, 1].
        y: (N,) true labels; samples already misclassified are returned unchanged.
        norm: ``2`` or ``"inf"``.
        overshoot: the total perturbation is scaled by ``1 + overshoot`` to cross the boundary.
        max_iter: most linearisation steps per sample; samples stop as soon as they are misclassified.
        candidates: number of classes considered, the true one included: the ``candidates - 1``
            classes with the highest clean logits (all classes when ``candidates >= K``).

    Returns:
        :class:`AttackResult` with ``norm`` 2 or inf. Samples that are still correct after
        ``max_iter`` steps keep their last iterate (``success`` False).
    """
    x, y, p = _validate(x, y, norm, overshoot, max_iter, candidates)
    with eval_mode(model):
        trace = _run(model, x, y, p, overshoot, max_iter, candidates)
        return finish(model, x, trace.x_adv, y, p)
