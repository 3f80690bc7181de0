"""Helpers of the checks whose task trains: a layer that records every forward pass, and the diagnosis of a weight step.

A training task (one epoch of PGD adversarial training, one on-manifold training step) has two phases that the checks
tell apart by recording each forward pass of the model: the attack runs in eval mode (its input requires a gradient),
the weight step runs in train mode, once per batch, on the (detached) adversarial batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.checks._core import Mismatch


class _Recorder(nn.Module):
    """Identity layer that records ``(self.training, a copy of the input)`` at every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((self.training, x.detach().clone()))
        return x


def _weight_step_inputs(recorder: _Recorder, steps: int, what: str) -> list[Tensor]:
    """The inputs of the ``steps`` forward passes made in train mode (one per weight step), or a Mismatch."""
    train = [x for training, x in recorder.calls if training]
    if len(train) > steps:
        raise Mismatch(f"the model was in train mode during the attack ({len(train)} forward passes in train mode "
                       f"for {steps} weight step{'s' if steps > 1 else ''}).",
                       "craft in eval mode (model.eval(): batch norm and dropout as at test time), then switch back "
                       "with model.train() for the weight step only.")
    if len(train) < steps:
        raise Mismatch(f"{what} ran in eval mode ({len(train)} of {steps} weight steps saw the model in train mode).",
                       "after crafting in eval mode, put the model back in train mode (model.train()) before the "
                       "forward pass whose loss you backpropagate into the weights.")
    return train


def _params(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[Tensor], b: list[Tensor], atol: float) -> bool:
    return all(x.shape == y.shape and bool(torch.isfinite(x).all()) and bool(((x - y).abs() <= atol).all())
               for x, y in zip(a, b))


def _leaked(model: nn.Module, last_grads: list[Tensor], atol: float) -> bool:
    """Whether ``p.grad`` (if kept) differs from the gradient of the last weight step's loss alone."""
    grads = [p.grad for p in model.parameters()]
    if any(g is None for g in grads):
        return False  # zeroed with set_to_none after the step: nothing to compare
    return not _same([g.detach() for g in grads], last_grads, atol)


def _check_update(model: nn.Module, before: list[Tensor], want: list[Tensor], last_grads: list[Tensor],
                  alternatives: dict[str, tuple[list[Tensor], str, str]], atol: float = 1e-8) -> None:
    """Compare the weights after the learner's training with the reference; explain the usual ways to differ."""
    after = _params(model)
    if _same(after, want, atol):
        return
    if _same(after, before, 0.0):
        raise Mismatch("the weights did not change.",
                       "after the attack: optimizer.zero_grad(), loss.backward() on the loss at x_adv, then "
                       "optimizer.step().")
    for params, what, hint in alternatives.values():
        if _same(after, params, atol):
            raise Mismatch(what, hint)
    if _leaked(model, last_grads, atol):
        raise Mismatch("the gradient that optimizer.step() used is not (only) the gradient of the loss at the "
                       "adversarial batch: the attack's backward passes leaked into p.grad.",
                       "take the attack's gradients with torch.autograd.grad(loss, x) (w.r.t. the input or θ only), "
                       "or call optimizer.zero_grad() after the attack, right before loss.backward(). By Danskin's "
                       "theorem the weight gradient is that of the loss at the adversarial batch alone.")
    raise Mismatch("the weights after your training differ from SGD on the mean cross-entropy at the adversarial "
                   "batch.",
                   "per step: optimizer.zero_grad(), loss = F.cross_entropy(model(x_adv), y) (the mean), "
                   "loss.backward(), optimizer.step(); nothing else may touch the weights.")
