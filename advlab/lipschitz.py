"""Kept so that ``from advlab import lipschitz`` (the notebooks' spelling) goes on working: Lipschitz networks and
their certificates are a defense and live in :mod:`advlab.defenses.lipschitz`. This name is that module itself (not
a copy of its names), so monkeypatching and private helpers reach the same objects."""

import sys

from advlab.defenses import lipschitz as _module

sys.modules[__name__] = _module
