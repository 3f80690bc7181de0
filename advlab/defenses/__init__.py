"""Empirical defenses: adversarial training (:mod:`.adversarial`) and a lesson in gradient masking (:mod:`.masking`).

Certified / Lipschitz defenses live in :mod:`advlab.lipschitz` and randomized smoothing in :mod:`advlab.smoothing`.

    from advlab.defenses import adversarial
    metrics = adversarial.pgd_at(model, x, y, eps=0.3, steps=10, epochs=15)   # Madry et al.'s PGD-AT
"""

import importlib

_MASKING = {"BPDA", "InputQuantization", "masking_report"}

__all__ = [
    "BPDA",
    "FGSMPerturb",
    "InputQuantization",
    "OneStepPerturb",
    "PGDPerturb",
    "RobustnessMonitor",
    "detect_catastrophic_overfitting",
    "fgsm_rs_at",
    "free_at",
    "label_leaking_eval",
    "masking_report",
    "one_step_at",
    "pgd_accuracy",
    "pgd_at",
    "trades",
    "trades_loss",
    "vat_loss",
    "vat_train",
]


def __getattr__(name: str):
    # Lazy, so that ``python -m advlab.defenses.adversarial`` does not import the module twice.
    if name in __all__:
        module = importlib.import_module(f"advlab.defenses.{'masking' if name in _MASKING else 'adversarial'}")
        return getattr(module, name)
    if name in ("adversarial", "masking"):
        return importlib.import_module(f"advlab.defenses.{name}")
    raise AttributeError(f"module 'advlab.defenses' has no attribute {name!r}")
