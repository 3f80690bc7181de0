"""Adversarial attacks on image classifiers; every attack returns an :class:`AttackResult`.

Inputs are (N, C, H, W) images in [0, 1]; ``eps`` is in pixel units of the chosen norm (``"inf"``, 2 or 1)::

    from advlab import attacks
    adv = attacks.pgd(model, x, y, eps=0.3)              # L∞ PGD, 40 steps, random start
    adv = attacks.pgd(model, x, y, eps=2.0, norm=2)      # L2
    adv = attacks.apgd(model, x, y, eps=0.3)             # Auto-PGD (Croce & Hein); n_target_classes=9: APGD-T
    adv = attacks.square(model, x, y, eps=0.3)           # Square Attack: logits only, no gradients
    x_adv, success, norms = attacks.fgsm(model, x, y, eps=0.1)

Every attack runs on the model's device and returns its tensors on the device of ``x``: a CPU batch from
``data.load`` can attack a model on ``cuda`` (see :func:`advlab.attacks.tensors.on_model_device`).
"""

from advlab.attacks.apgd import apgd
from advlab.attacks.core import attack_loss, project, random_ball, random_start, steepest_direction
from advlab.attacks.cw import cw_l2
from advlab.attacks.deepfool import deepfool
from advlab.attacks.fgsm import fgsm
from advlab.attacks.lbfgs import lbfgs
from advlab.attacks.one_pixel import greedy_pixels, one_pixel
from advlab.attacks.pgd import bim, pgd
from advlab.attacks.result import AttackResult
from advlab.attacks.square import square
from advlab.attacks.targets import by_label, least_likely, next_class, random_targets
from advlab.attacks.tensors import as_eps, chunk_size, eval_mode, logits_of, lp_norm, parse_norm
from advlab.attacks.transfer import transfer
from advlab.attacks.vat import vat, vat_direction

__all__ = [
    "AttackResult",
    "apgd",
    "as_eps",
    "attack_loss",
    "bim",
    "by_label",
    "chunk_size",
    "cw_l2",
    "deepfool",
    "eval_mode",
    "fgsm",
    "greedy_pixels",
    "lbfgs",
    "least_likely",
    "lp_norm",
    "next_class",
    "one_pixel",
    "parse_norm",
    "pgd",
    "logits_of",
    "project",
    "random_ball",
    "random_start",
    "random_targets",
    "square",
    "steepest_direction",
    "transfer",
    "vat",
    "vat_direction",
]
