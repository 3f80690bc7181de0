"""A lesson in gradient masking (Athalye, Carlini & Wagner, 2018): a "defense" that only breaks the attack.

:class:`InputQuantization` rounds the input to ``levels + 1`` grey levels before a trained model. ``torch.round``
has zero derivative almost everywhere, so every input gradient is exactly 0 and PGD cannot move from its random
start: PGD reports high "robust accuracy". Yet the classifier underneath is as fragile as before:

* :class:`BPDA` (backward-pass differentiable approximation) keeps the quantised forward pass but treats the
  rounding as the identity on the backward pass (a straight-through estimator); PGD through it breaks the model;
* a transfer attack, PGD on the undefended model, breaks it without using its gradients at all;
* :func:`advlab.eval.sanity_checks` raises red flags (zero gradients, unbounded attack fails, black-box beats
  white-box).

Run ``python -m advlab.defenses.masking`` for the numbers of ``docs/defenses.md``.

The zoo's ``mnist-cnn-defended`` (registered by :mod:`advlab.defenses.recipes`) is the unseen model of the capstone of
``solutions/06_conclusion.ipynb``: :func:`quantized_mnist_net`, a CNN trained for a few epochs behind the rounding,
whose record holds only the robust accuracy a naive evaluation *claims* (:func:`claimed_robustness_record`: FGSM and
PGD, :func:`advlab.eval.pgd_attacks`) and, on purpose, no AutoAttack-grade number.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import Tensor, nn

from advlab import models
from advlab.attacks.pgd import pgd
from advlab.attacks.square import square
from advlab.attacks.tensors import check_inputs
from advlab.config import AdvlabError
from advlab.eval import report_record, robust_accuracy


class InputQuantization(nn.Module):
    """``model(round(x · levels) / levels)``: a wrapper that quantises [0, 1] inputs to ``levels + 1`` values.

    Attributes:
        model: the wrapped classifier (returns logits).
        levels: number of quantisation steps (8 maps pixels to multiples of 1/8).
    """

    def __init__(self, model: nn.Module, levels: int = 8) -> None:
        super().__init__()
        if int(levels) != levels or levels < 1:
            raise AdvlabError(f"levels must be an integer >= 1, got {levels!r}.")
        self.model = model
        self.levels = int(levels)

    def preprocess(self, x: Tensor) -> Tensor:
        """The non-differentiable input transformation (N, *) -> (N, *): zero gradient almost everywhere."""
        return torch.round(x * self.levels) / self.levels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.preprocess(x))

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class BPDA(nn.Module):
    """Straight-through BPDA view of a defended model with a ``preprocess`` step and an inner ``model``.

    Forward: exactly the defended model, ``model(preprocess(x))``. Backward: ``preprocess`` is replaced by the
    identity (``x + (g(x) - x).detach()``), so the gradient is that of the undefended model at the quantised input.
    Attack this module and evaluate on the defended one (predictions are identical).
    """

    def __init__(self, defended: nn.Module) -> None:
        super().__init__()
        if not (hasattr(defended, "preprocess") and hasattr(defended, "model")):
            raise AdvlabError("BPDA needs a defended model with .preprocess(x) and .model (e.g. InputQuantization).")
        self.defended = defended

    def forward(self, x: Tensor) -> Tensor:
        g = self.defended.preprocess(x)
        return self.defended.model(x + (g - x).detach())


def quantized_mnist_net(levels: int = 8, width: float = 1.0) -> InputQuantization:
    """Wong et al.'s MNIST CNN (:func:`advlab.models.mnist_net`) behind :class:`InputQuantization`: the architecture
    of the zoo's ``mnist-cnn-defended``. Trained as it stands, the CNN learns on quantised digits (the rounding sits
    on the input only, so the weights get ordinary gradients); attacked as it stands, every input gradient is 0."""
    return InputQuantization(models.mnist_net(width=width), levels)


CLAIM_NOTE = ("the robust accuracy claimed for this model: what the FGSM/PGD chain of advlab.eval.pgd_attacks "
              "reports; a claim to verify, not an AutoAttack-grade measurement")


def claimed_robustness_record(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str | float = "inf", seed: int = 0
) -> dict[str, Any]:
    """The robust accuracy a naive evaluation *claims* for ``model``: the record of
    :func:`advlab.eval.robustness_record` (chain, eps, norm, n, correct, accuracy, 95 % interval, clean accuracy),
    computed with the FGSM/PGD chain (``robust_accuracy(..., attacks="pgd")``) instead of the AutoAttack-grade
    default, and labelled as a claim (``"claim"``: :data:`CLAIM_NOTE`). The zoo records it for
    ``mnist-cnn-defended``."""
    rep = robust_accuracy(model, x, y, eps, norm, attacks="pgd", seed=seed)
    return {"claim": CLAIM_NOTE, **report_record(rep, eps)}


def masking_report(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float = 0.3,
    levels: int = 8,
    steps: int = 40,
    sanity: bool = True,
    sanity_n: int = 200,
    seed: int = 0,
    queries: int = 1000,
    defended: nn.Module | None = None,
) -> dict[str, Any]:
    """Accuracy of ``InputQuantization(model, levels)`` (or of another ``defended`` model) under PGD (fooled by the
    masking), BPDA-PGD, PGD transferred from the undefended ``model`` and the gradient-free Square Attack
    (``queries`` queries per input); plus :func:`advlab.eval.sanity_checks` of the defended model.

    All accuracies are L∞ at ``eps`` through :func:`advlab.eval.robust_accuracy` (which re-classifies every
    adversarial input with the defended model). Returns a dict with ``clean``, ``pgd``, ``bpda``, ``transfer``,
    ``square``, ``undefended_pgd`` (fractions of the n inputs, unrounded) and (if ``sanity``) ``sanity``: a
    :class:`advlab.eval.SanityReport` on the first ``sanity_n`` inputs, with the undefended model as the transfer
    surrogate.

    ``defended``: any defense with ``.preprocess(x)`` and ``.model`` (the wrapped ``model``), for example
    :class:`advlab.defenses.purification.ManifoldProjection`; ``levels`` is then unused.
    """
    from advlab.eval import robust_accuracy, sanity_checks

    x, y = check_inputs(x, y)
    model.eval()
    if defended is None:
        defended = InputQuantization(model, levels)
    elif getattr(defended, "model", None) is not model:
        raise AdvlabError("masking_report: `defended.model` must be the undefended `model` passed beside it.")
    defended.eval()
    bpda = BPDA(defended).eval()

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def run(target: nn.Module, name: str, attack) -> Any:
        return robust_accuracy(target, x, y, eps, "inf", attacks={name: attack})

    def pgd_from(source: nn.Module | None):  # PGD on `source`'s gradients (the attacked model's when None)
        return lambda m, xa, ya, e, p: pgd(source if source is not None else m, xa, ya, e, norm=p, steps=steps,
                                           generator=gen())

    def square_attack(m, xa, ya, e, p):  # queries the defended model's logits only: no gradient anywhere
        return square(m, xa, ya, e, norm=p, queries=queries, generator=gen())

    out: dict[str, Any] = {}
    rep = run(defended, f"pgd-{steps}", pgd_from(None))
    out["clean"] = rep.clean_accuracy
    out["pgd"] = rep.robust_accuracy
    out["bpda"] = run(defended, f"bpda-pgd-{steps}", pgd_from(bpda)).robust_accuracy
    out["transfer"] = run(defended, f"transfer-pgd-{steps}", pgd_from(model)).robust_accuracy
    out["square"] = run(defended, f"square-{queries}", square_attack).robust_accuracy
    out["undefended_pgd"] = run(model, f"pgd-{steps}", pgd_from(None)).robust_accuracy
    if sanity:
        n = min(int(sanity_n), len(x))
        out["sanity"] = sanity_checks(defended, x[:n], y[:n], eps, "inf", surrogate=model, seed=seed)
    return out


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.defenses.masking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="MNIST test images")
    parser.add_argument("--levels", type=int, default=8)
    parser.add_argument("--eps", type=float, default=0.3)
    args = parser.parse_args(argv)
    from advlab import config, data, zoo

    t0 = time.perf_counter()
    x, y, _ = data.load("mnist", "test", n=args.n)
    x, y = x.to(config.device()), y.to(config.device())
    out = masking_report(zoo.load("mnist-cnn"), x, y, args.eps, args.levels)
    sanity = out.pop("sanity")
    print(out)
    print(sanity)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
