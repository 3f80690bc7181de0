"""Exercise checks: run a learner's function against a reference and print ``[PASS]``, ``[FAIL]`` or ``[TODO]``.

Every exercise notebook ends each task with one line such as ``check_fgsm_step(fgsm_step)``. A check

* calls the learner's function on small, freshly seeded CPU tensors (a few cases per task: per-sample ε,
  ε = 0, pixels at exactly 0 and 1, inputs already feasible, ...), never touching the learner's random state;
* compares the result with advlab's own implementation or a short reference kept here, within a tolerance;
* prints one line ``[PASS] <task>: ...`` or ``[FAIL] <task>: <what went wrong>`` followed by a specific hint,
  and returns True / False. A stub that still raises ``NotImplementedError`` prints ``[TODO] <task>: not
  implemented yet ...``; any other exception prints ``[FAIL]`` with its type and message. No traceback is
  ever printed.

Adding a task: write ``def check_<name>(fn)`` whose body raises :class:`Mismatch` (what, hint) on the first problem
and returns a one-line summary on success, and decorate it with :func:`register`. :data:`TASKS` is the registry
(name -> :class:`Task`); :func:`check` looks a check up by name.
"""


from __future__ import annotations

import importlib

from advlab.checks._claims import claims
from advlab.checks._core import TASKS, Mismatch, Task, check, register

# One module per course section; each registers its tasks on import. A module adds tasks by decorating
# ``check_<name>`` bodies with :func:`register`; they are re-exported here, so a notebook writes
# ``from advlab.checks import check_fgsm_step``.
SECTIONS = {
    "01": "nonrobustness",
    "02": "definitions",
    "03": "properties",
    "04a": "attacks",
    "04b": "defenses",
    "05": "generalization",
    "06": "conclusion",
}
for _module in SECTIONS.values():
    importlib.import_module(f"advlab.checks.{_module}")
globals().update({task.check.__name__: task.check for task in TASKS.values()})

__all__ = ["SECTIONS", "TASKS", "Mismatch", "Task", "check", "claims", "register"]
__all__ += sorted(task.check.__name__ for task in TASKS.values())
