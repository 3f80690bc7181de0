"""The package is a one-way flow: a module never imports a higher layer, not even through an import string.

config → data → models → train/zoo → attacks → eval → defenses/experiments → cached results →
viz/widgets/checks/course.
Imports are read from the source (``import``/``from`` statements anywhere in a module, and every string literal
or f-string head that names an advlab module, as ``importlib`` uses them), so a lazy import inside a function counts
too. A lower layer that needs something of a higher one has it registered from above (see advlab/zoo.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "advlab"

LAYERS = {
    "config": 0,
    "data": 1,
    "models": 2,
    "train": 3,
    "zoo": 3,
    "attacks": 4,
    "eval": 5,
    "defenses": 6,
    "lipschitz": 6,
    "smoothing": 6,
    "features": 6,
    "manifold": 6,
    "vae": 6,
    "toy": 6,
    "properties": 6,
    "results": 7,
    "viz": 8,
    "widgets": 8,
    "checks": 8,
    "course": 8,
    "grade": 8,
}

# Upward imports that exist today (none: the zoo's upper layers register with it from above, see advlab/zoo.py). The
# test fails when one is added and when one listed here is gone (then delete it here).
KNOWN_UPWARD: set[tuple[str, str]] = set()

_MODULE_STRING = re.compile(r"^advlab(?:\.(\w+))?(?:[.:]\w+)*$")


def _layer_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return rel.parts[0]


def _imported(path: Path) -> set[str]:
    """Top-level advlab units (``config``, ``attacks``, ... or ``advlab`` for the package itself) a file uses."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from advlab import eval" uses advlab.eval; "from advlab import AdvlabError" the top level
            mods = [f"advlab.{a.name}" if a.name in LAYERS else "advlab" for a in node.names] \
                if node.module == "advlab" else [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            mods = [node.value] if node.value.startswith(("advlab.", "advlab:")) else []
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            # f"advlab.defenses.{name}": the constant head names the module it reaches into
            head = str(node.values[0].value).rstrip(".:")
            mods = [head] if head.startswith("advlab.") else []
        else:
            continue
        for mod in mods:
            m = _MODULE_STRING.match(mod)
            if not m or not mod.startswith("advlab"):
                continue
            names.add(m.group(1) or "advlab")
    return names


def _upward() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == ROOT:
            continue  # the package's top level sits above every layer
        unit = _layer_of(path)
        for used in _imported(path):
            if used == unit:
                continue
            rank = LAYERS.get(used, 99)  # "advlab" (the top level) ranks above everything
            if rank > LAYERS[unit]:
                found.add((unit, used))
    return found


def test_every_module_is_assigned_a_layer():
    units = {_layer_of(p) for p in ROOT.rglob("*.py") if not (p.name == "__init__.py" and p.parent == ROOT)}
    units.discard("checkpoints")
    assert units <= set(LAYERS), f"give {sorted(units - set(LAYERS))} a layer in tests/test_layers.py"


def test_no_module_imports_a_higher_layer():
    found = _upward()
    new = found - KNOWN_UPWARD
    assert not new, f"lower layers import higher ones: {sorted(new)}; register from above instead"
    gone = KNOWN_UPWARD - found
    assert not gone, f"{sorted(gone)} no longer import upward: remove them from KNOWN_UPWARD"


def test_the_checker_sees_lazy_and_string_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('def f():\n    import advlab.viz\n\nSPEC = "advlab.widgets:explorer"\nfrom advlab import eval\n'
                     'MOD = importlib.import_module(f"advlab.course.{name}")\n')
    assert _imported(probe) == {"viz", "widgets", "eval", "course"}
