"""What every attack returns: :class:`AttackResult`, and :func:`finish`, which re-checks an attack's output."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab.attacks.tensors import logits_of, lp_norm
from advlab.config import AdvlabError


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


def checked_inputs(x_adv: Tensor) -> Tensor:
    """An attack's output ``x_adv`` (N, *) detached and clamped to [0, 1]; :class:`AdvlabError` when it holds a NaN or
    an inf (which a model would classify as class 0, counted as a success)."""
    if not bool(torch.isfinite(x_adv).all()):
        raise AdvlabError("The attack produced non-finite inputs (NaN or inf), so its result cannot be trusted; check "
                          "eps and step_size, and that the model's gradients are finite.")
    return x_adv.detach().clamp(0, 1)


def finish(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, p: float, targeted: bool = False,
           chunk: int | None = None) -> AttackResult:
    """Re-check ``x_adv`` in eval mode and build the :class:`AttackResult`.

    ``y`` is the true label (untargeted) or the target label (targeted). Non-finite inputs are refused: a NaN
    would be classified as class 0 and counted as a success. ``chunk``: samples per forward
    (:func:`advlab.attacks.tensors.chunk_size`).
    """
    x_adv = checked_inputs(x_adv)
    pred = logits_of(model, x_adv, chunk).argmax(1)
    success = pred == y if targeted else pred != y
    return AttackResult(x_adv=x_adv, success=success, norms=lp_norm(x_adv - x, p), pred=pred, norm=p)
