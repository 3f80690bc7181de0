"""Defenses, one module per idea.

* :mod:`.adversarial`: adversarial training (the trainers and their per-batch hooks);
* :mod:`.masking`: a lesson in gradient masking (input quantisation, BPDA);
* :mod:`.purification`: Defense-GAN-style purification through a VAE;
* :mod:`.lipschitz`: Lipschitz bounds, a 1-Lipschitz network and its certificates (also ``advlab.lipschitz``);
* :mod:`.smoothing`: randomized smoothing, certified by Gaussian noise (also ``advlab.smoothing``);
* :mod:`.experiments`: the experiments of ``docs/defenses.md`` (``python -m advlab.defenses.adversarial``, :mod:`.cli`);
* :mod:`.recipes`: the defended models of the zoo, registered with it (registration from above).

    from advlab.defenses import adversarial
    metrics = adversarial.pgd_at(model, x, y, eps=0.3, steps=10, epochs=15)   # Madry et al.'s PGD-AT
"""

import importlib

_MASKING = {"BPDA", "InputQuantization", "masking_report"}
_EVAL = {"pgd_accuracy"}  # an evaluation metric, moved to advlab.eval; still importable from here
_SUBMODULES = ("adversarial", "cli", "experiments", "lipschitz", "masking", "purification", "recipes", "smoothing")

__all__ = [
    "BPDA",
    "FGSMPerturb",
    "FreePerturb",
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
    # Lazy, so that importing one defense does not import the others (nor torch's attacks for the certified ones).
    if name in __all__:
        module = "masking" if name in _MASKING else "adversarial"
        where = "advlab.eval" if name in _EVAL else f"advlab.defenses.{module}"
        return getattr(importlib.import_module(where), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.defenses.{name}")
    raise AttributeError(f"module 'advlab.defenses' has no attribute {name!r}")
