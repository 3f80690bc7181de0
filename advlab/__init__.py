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

__version__ = "0.1.0"

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
    "smoothing",
    "toy",
    "train",
    "vae",
    "viz",
    "widgets",
    "zoo",
)


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
