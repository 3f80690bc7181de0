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
    offline,
    profile,
    seed_everything,
    set_profile,
)

__version__ = "0.1.0"

__all__ = [
    "AdvlabError",
    "__version__",
    "cache_dir",
    "device",
    "offline",
    "profile",
    "seed_everything",
    "set_profile",
]
