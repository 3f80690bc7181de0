"""Target labels for targeted attacks, all vectorised over the batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, logits_of, on_model_device
from advlab.config import AdvlabError


def _check(y: Tensor, classes: int) -> Tensor:
    if not isinstance(y, Tensor):
        y = torch.as_tensor(y)
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise AdvlabError(f"y must be a (N,) tensor of integer labels, got {y.dtype} of shape {tuple(y.shape)}.")
    if int(classes) != classes or classes < 2:
        raise AdvlabError(f"classes must be an integer >= 2, got {classes!r}.")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise AdvlabError(f"Labels must lie in [0, {classes - 1}] for {classes} classes.")
    return y.long()


def random_targets(y: Tensor, classes: int, generator: torch.Generator | None = None) -> Tensor:
    """(N,) targets drawn uniformly among the ``classes - 1`` labels other than y (never equal to y)."""
    y = _check(y, classes)
    dev = generator.device if generator is not None else y.device
    shift = torch.randint(1, int(classes), y.shape, generator=generator, device=dev).to(y.device)
    return (y + shift) % int(classes)


def next_class(y: Tensor, classes: int) -> Tensor:
    """(N,) targets ``(y + 1) mod classes``: a deterministic target that is never y."""
    y = _check(y, classes)
    return (y + 1) % int(classes)


def by_label(y: Tensor, label: int) -> Tensor:
    """(N,) targets all equal to ``label`` (samples whose true label is already ``label`` count as done)."""
    if not isinstance(y, Tensor):
        y = torch.as_tensor(y)
    if int(label) != label or label < 0:
        raise AdvlabError(f"label must be a non-negative integer class index, got {label!r}.")
    return torch.full_like(y.long(), int(label))


@on_model_device
def least_likely(model: nn.Module, x: Tensor) -> Tensor:
    """(N,) the class with the lowest logit on the clean input (Kurakin et al.'s "least-likely class")."""
    x, _ = check_inputs(x)
    with eval_mode(model):
        logits = logits_of(model, x)
    check_logits(logits)
    return logits.argmin(1)
