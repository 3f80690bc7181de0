"""What every attack returns, and the checks every attack runs on its inputs."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab.config import AdvlabError

NORMS = {"inf": math.inf, "linf": math.inf, "2": 2.0, "l2": 2.0, "1": 1.0, "l1": 1.0}


@dataclass(frozen=True)
class AttackResult:
    """The outcome of an attack on a batch of N inputs.

    Attributes:
        x_adv: (N, *) adversarial inputs in [0, 1].
        success: (N,) bool; untargeted: the prediction differs from y; targeted: it equals the target.
        norms: (N,) float; ``||x_adv - x||_p`` in the attack's norm, in pixel units.
        pred: (N,) int64; the model's prediction on ``x_adv`` (in eval mode).
        norm: p of the norm the perturbation was measured in (``math.inf``, 2.0 or 1.0).

    Unpacks as ``x_adv, success, norms = result`` so a notebook can use it in one line.
    """

    x_adv: Tensor
    success: Tensor
    norms: Tensor
    pred: Tensor
    norm: float

    def __iter__(self) -> Iterator[Tensor]:
        yield from (self.x_adv, self.success, self.norms)

    @property
    def success_rate(self) -> float:
        """Fraction of the batch on which the attack succeeded."""
        return self.success.float().mean().item() if self.success.numel() else 0.0

    def __repr__(self) -> str:  # short, for notebooks
        p = "inf" if math.isinf(self.norm) else f"{self.norm:g}"
        med = self.norms[self.success].median().item() if self.success.any() else float("nan")
        return (
            f"AttackResult(n={len(self.success)}, success_rate={self.success_rate:.3f}, "
            f"median L{p} norm of successes={med:.4f})"
        )


def parse_norm(norm: str | float | int) -> float:
    """Canonical p for a norm name: ``"inf"``/``"linf"``/``inf`` -> inf, ``2``/``"l2"`` -> 2., ``1`` -> 1."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if float(norm) in (1.0, 2.0, math.inf):
            return float(norm)
    elif isinstance(norm, str) and norm.strip().lower() in NORMS:
        return NORMS[norm.strip().lower()]
    raise AdvlabError(f"Unknown norm {norm!r}; use 'inf', 2 or 1.")


def lp_norm(delta: Tensor, p: float) -> Tensor:
    """Per-sample ``||delta||_p`` of a (N, *) tensor; returns (N,)."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def as_eps(eps: float | Tensor, x: Tensor) -> Tensor:
    """ε as a (N,) float tensor on x's device (a scalar is broadcast); rejects ε < 0 or NaN."""
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.ndim == 0:
        eps_t = eps_t.expand(len(x))
    eps_t = eps_t.flatten()
    if eps_t.numel() != len(x):
        raise AdvlabError(f"eps has {eps_t.numel()} values for a batch of {len(x)}; pass one per sample or a scalar.")
    if torch.isnan(eps_t).any() or (eps_t < 0).any():
        raise AdvlabError(f"eps must be >= 0 (got min {eps_t.min().item():g}); it is a radius in pixel units.")
    return eps_t.clone()


def check_inputs(x: Tensor, y: Tensor | None = None, *, name_y: str = "y") -> tuple[Tensor, Tensor | None]:
    """Validate a batch: x is (N, *) floating in [0, 1], y is (N,) integer labels.

    Returns ``(x.detach(), y)``; raises :class:`AdvlabError` with a hint on bad input.
    """
    if not isinstance(x, Tensor):
        raise AdvlabError(f"x must be a torch.Tensor, got {type(x).__name__}; use torch.as_tensor(x).")
    if x.ndim < 2:
        raise AdvlabError(
            f"x must be a batch shaped (N, C, H, W) or (N, D), got shape {tuple(x.shape)}; "
            "add a batch dimension with x[None]."
        )
    if len(x) == 0:
        raise AdvlabError("The batch is empty (N = 0); pass at least one input.")
    if not x.is_floating_point():
        raise AdvlabError(f"x must be floating point in [0, 1], got {x.dtype}; for uint8 images use x.float() / 255.")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1 or math.isnan(lo):
        raise AdvlabError(
            f"x must lie in [0, 1] pixel space (got min {lo:.3g}, max {hi:.3g}); "
            "undo any normalization and put it inside the model (advlab.models.Normalize)."
        )
    if y is not None:
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if y.ndim != 1 or len(y) != len(x):
            raise AdvlabError(
                f"{name_y} must be shaped (N,) = ({len(x)},), got {tuple(y.shape)}; one integer label per input."
            )
        if y.is_floating_point() or y.dtype == torch.bool:
            raise AdvlabError(f"{name_y} must hold integer class labels, got {y.dtype}; use {name_y}.long().")
        y = y.to(x.device, torch.long)
    return x.detach(), y


def check_logits(logits: Tensor, y: Tensor | None = None) -> None:
    """Check a model's output on a batch: (N, K) logits, labels < K; warn if it looks like probabilities."""
    if logits.ndim != 2:
        raise AdvlabError(f"The model must return logits shaped (N, K), got {tuple(logits.shape)}.")
    if y is not None and len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise AdvlabError(f"Labels must lie in [0, {logits.shape[1] - 1}] for a model with {logits.shape[1]} outputs.")
    rows = logits.detach().float()
    if (rows >= 0).all() and torch.allclose(rows.sum(1), torch.ones(len(rows), device=rows.device), atol=1e-4):
        warnings.warn(
            "The model's outputs are non-negative and sum to 1: it looks like it returns probabilities. "
            "Attacks need logits; remove the final softmax, or the gradients will vanish.",
            stacklevel=3,
        )


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run an attack on ``model`` in eval mode, restoring train mode (with a warning) afterwards.

    Parameters are also frozen (``requires_grad=False``) during the attack so that gradients are
    taken with respect to the input only; their flags are restored on exit.
    """
    was_training = model.training
    if was_training:
        warnings.warn(
            "The model was in train mode; advlab attacks it in eval mode (dropout off, batch-norm "
            "running statistics) and puts it back in train mode afterwards. Call model.eval() first "
            "to silence this.",
            stacklevel=3,
        )
    flags = [p.requires_grad for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]  # each submodule's own flag (a wrapper may hold an eval model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits (N, K) of ``model`` on ``x``, computed in batches without gradients."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def finish(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, p: float, targeted: bool = False) -> AttackResult:
    """Re-check ``x_adv`` in eval mode and build the :class:`AttackResult`.

    ``y`` is the true label (untargeted) or the target label (targeted).
    """
    x_adv = x_adv.detach().clamp(0, 1)
    pred = predict(model, x_adv).argmax(1)
    success = pred == y if targeted else pred != y
    return AttackResult(x_adv=x_adv, success=success, norms=lp_norm(x_adv - x, p), pred=pred, norm=p)
