"""Transfer (black-box) attacks: craft on a surrogate model, evaluate on the target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from advlab.attacks.result import AttackResult, finish
from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, logits_of, on_model_device


@on_model_device(model="target")
def transfer(
    attack: Callable[..., AttackResult],
    surrogate: nn.Module,
    target: nn.Module,
    x: Tensor,
    y: Tensor,
    **kw: Any,
) -> AttackResult:
    """Run ``attack(surrogate, x, y, **kw)`` and evaluate its adversarial inputs on ``target``.

    The target's gradients are never used: this is the black-box transfer setting of Papernot et al. (2017).
    ``success`` and ``pred`` in the returned result are w.r.t. the target model (targeted if ``kw["targeted"]``);
    ``norms`` are those of the crafted perturbation.
    """
    x, y = check_inputs(x, y)
    crafted = attack(surrogate, x, y, **kw)
    with eval_mode(target):
        check_logits(logits_of(target, x[:1]), y[:1])
        return finish(target, x, crafted.x_adv, y, crafted.norm, targeted=bool(kw.get("targeted", False)))
