"""advlab: a small PyTorch library for a course on adversarial robustness and generalization.

The course notebooks import it like this::

    import advlab
    from advlab import data, models, zoo, attacks

    x, y, classes = data.load("mnist", "test", n=100)
    model = zoo.load("mnist-cnn")
    adv = attacks.pgd(model, x, y, eps=0.3)

Inputs are images in [0, 1] pixel space, shaped (N, C, H, W); models return logits and hold their
own normalization.
"""

from advlab import config as _config
from advlab.config import (
    AdvlabError,
    cache_dir,
    device,
    generator,
    offline,
    profile,
    seed,
    seed_everything,
    set_profile,
)

__version__ = _config.VERSION

# Submodules load on first use (``advlab.attacks.pgd(...)`` works after a bare ``import advlab``),
# which keeps ``import advlab`` as cheap as importing torch.
_SUBMODULES = (
    "attacks",
    "checks",
    "config",
    "course",
    "data",
    "defenses",
    "eval",
    "features",
    "lipschitz",
    "manifold",
    "models",
    "properties",
    "results",
    "smoothing",
    "toy",
    "train",
    "vae",
    "viz",
    "widgets",
    "zoo",
)


def _register_upper_layers() -> None:
    """Registration from above: import the modules that register recipes, trainers, architectures, metrics and cached
    results with the zoo, which sits below them and does not import them.

    The zoo runs this (through :func:`advlab.config.complete_registrations`) before it first looks a name up, so that
    ``zoo.load("mnist-cnn-pgd")`` works after only ``from advlab import zoo``. A new module that registers with the
    zoo is added here.
    """
    import advlab.defenses.recipes  # noqa: F401 - the defended models: adversarial training, Lipschitz, noise
    import advlab.eval  # noqa: F401 - the AutoAttack-grade metric every classifier entry records
    import advlab.results  # noqa: F401 - the cached experiment results (zoo.result)
    import advlab.vae  # noqa: F401 - the VAE entry, its trainer and its metric


_config.defer_registration(_register_upper_layers)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"advlab.{name}")
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")


__all__ = [
    "AdvlabError",
    "__version__",
    "cache_dir",
    "device",
    "generator",
    "offline",
    "profile",
    "seed",
    "seed_everything",
    "set_profile",
]
