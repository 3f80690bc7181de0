"""Kept so that ``from advlab import smoothing`` (the notebooks' spelling) goes on working: randomized smoothing is a
defense and lives in :mod:`advlab.defenses.smoothing`. This name is that module itself (not a copy of its names), so
monkeypatching and private helpers reach the same objects."""

import sys

from advlab.defenses import smoothing as _module

sys.modules[__name__] = _module
