"""Course plumbing: badges, the setup cell, and exercises generated from the solutions.

``solutions/`` is the single source of every exercise notebook. Solution code sits between
nbgrader-style markers inside code cells::

    def fgsm_step(...):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

``python -m advlab.course generate`` writes ``exercises/`` from it: each marked block becomes
``# YOUR CODE HERE`` plus ``raise NotImplementedError(...)`` (at the block's indentation), outputs and
execution counts are stripped, metadata is normalised and the badges point at the exercise's own path.
The output is deterministic and idempotent; ``python -m advlab.course check`` fails when the committed
``exercises/`` drift from what the solutions generate, and ``python -m advlab.course clean NB…`` makes an
executed notebook fit to commit (no widget state, no progress-bar widgets, no timings). To refresh a
course notebook's stored outputs::

    jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 notebooks/NB.ipynb
    python -m advlab.course clean notebooks/NB.ipynb
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import tempfile
from pathlib import Path

# The one place that names the repository; badges, setup cells and tests read it from here.
REPOSITORY = "advlab-course/advlab"
BRANCH = "main"

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB_MESSAGE = "Replace this line with your solution, then run the check below."
_BADGE_RE = re.compile(r"<!-- badges -->.*?<!-- /badges -->", re.S)


def badges(path: str) -> str:
    """Markdown for the Colab and Binder badges of the notebook at repo-relative ``path``."""
    path = path.replace("\\", "/")
    colab = f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{path}"
    binder = f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=lab/tree/{path}"
    return (
        "<!-- badges -->\n"
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})\n"
        "<!-- /badges -->"
    )


def badge_paths(markdown: str) -> list[str]:
    """The notebook paths that the Colab and Binder badges in ``markdown`` point at."""
    colab = re.findall(rf"colab\.research\.google\.com/github/{re.escape(REPOSITORY)}/blob/[^/]+/([^)\s]+)", markdown)
    binder = re.findall(rf"mybinder\.org/v2/gh/{re.escape(REPOSITORY)}/[^?]+\?urlpath=lab/tree/([^)\s]+)", markdown)
    return colab + binder


SETUP_CELL = f"""# Setup: install advlab where it is missing (Colab); do nothing where it is present (Binder, local).
try:
    import advlab
except ImportError:
    %pip install --quiet "advlab @ git+https://github.com/{REPOSITORY}@{BRANCH}"
    import advlab
print(f"advlab {{advlab.__version__}} | device: {{advlab.device()}} | profile: {{advlab.profile()}}")"""


def _stub(block_lines: list[str]) -> list[str]:
    indent = min((len(l) - len(l.lstrip()) for l in block_lines if l.strip()), default=0)
    pad = " " * indent
    return [f"{pad}# YOUR CODE HERE\n", f'{pad}raise NotImplementedError("{STUB_MESSAGE}")\n']


def strip_solutions(source: str) -> str:
    """Replace every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block in cell source by a stub."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    block: list[str] | None = None
    for line in lines:
        if line.strip() == BEGIN:
            if block is not None:
                raise ValueError(f"nested {BEGIN!r}")
            block = [line]
        elif line.strip() == END:
            if block is None:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            out += _stub(block)
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    text = "".join(out)
    return text if source.endswith("\n") or not text.endswith("\n") else text[:-1]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def to_exercise(nb: dict, exercise_path: str) -> dict:
    """The exercise version of a solution notebook (a new dict; ``nb`` is not modified)."""
    cells = []
    for i, cell in enumerate(nb["cells"]):
        kind = cell["cell_type"]
        text = _source(cell)
        if kind == "code":
            text = strip_solutions(text)
        elif kind == "markdown":
            text = _BADGE_RE.sub(badges(exercise_path), text)
        new = {"cell_type": kind, "id": cell.get("id") or f"cell-{i}", "metadata": {}, "source": _lines(text)}
        if kind == "code":
            new.update(execution_count=None, outputs=[])
        cells.append(new)
    metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def dumps(nb: dict) -> str:
    """Deterministic notebook JSON (one-space indent, sorted keys, trailing newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def generate(solutions: Path, exercises: Path, badge_dir: str = "exercises") -> list[Path]:
    """Write an exercise notebook into ``exercises`` for every ``*.ipynb`` in ``solutions``; returns them.

    ``badge_dir`` is the exercises' folder relative to the repository root, for the badges' paths.
    """
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(solutions.glob("*.ipynb")):
        nb = json.loads(src.read_text(encoding="utf-8"))
        dst = exercises / src.name
        dst.write_text(dumps(to_exercise(nb, f"{badge_dir}/{src.name}")), encoding="utf-8")
        written.append(dst)
    return written


def drift(solutions: Path, exercises: Path, badge_dir: str = "exercises") -> list[str]:
    """Differences between the committed ``exercises`` and what ``solutions`` generate (empty: in sync)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in generate(solutions, Path(tmp), badge_dir):
            committed = exercises / fresh.name
            want = fresh.read_text(encoding="utf-8")
            if not committed.exists():
                problems.append(f"{committed} is missing")
                continue
            have = committed.read_text(encoding="utf-8")
            if have != want:
                diff = difflib.unified_diff(
                    have.splitlines(), want.splitlines(), "committed", "generated", lineterm="", n=1
                )
                problems.append(f"{committed} differs from its solution:\n" + "\n".join(list(diff)[:40]))
    extra = {p.name for p in exercises.glob("*.ipynb")} - {p.name for p in solutions.glob("*.ipynb")}
    problems += [f"{exercises / name} has no solution notebook" for name in sorted(extra)]
    return problems


_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_TQDM_RE = re.compile(r"^[^|\n]*?\d+%\|")  # "desc:  40%|####  | 4/10", with or without a desc


def clean_outputs(nb: dict) -> dict:
    """Make an executed notebook fit to commit (in place; returns it).

    Drops the saved widget state and per-cell execution timings, removes progress-bar widget outputs
    (transient, and their state is not stored), and keeps only the plain-text fallback of other widget
    views, so that no widget state lives in the file and JupyterLab shows no "model not found".
    Cleaning a cleaned notebook changes nothing.
    """
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = "".join(data.get("text/plain", ""))
            if _WIDGET_VIEW in data:
                if not text or _TQDM_RE.match(text):
                    continue
                out["data"] = {"text/plain": data["text/plain"]}
            elif set(data) == {"text/plain"} and _TQDM_RE.match(text):
                continue  # the text fallback of a progress bar whose widget view an earlier clean removed
            kept.append(out)
        cell["outputs"] = kept
    return nb


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.course", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["generate", "check", "clean"])
    parser.add_argument("notebooks", nargs="*", help="for clean: executed notebooks to make fit to commit")
    parser.add_argument("--root", default=".", help="repository root (holds solutions/ and exercises/)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.command == "clean":
        for name in args.notebooks:
            path = Path(name)
            nb = clean_outputs(json.loads(path.read_text(encoding="utf-8")))
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"cleaned {path}")
        return 0
    if args.command == "generate":
        for path in generate(root / "solutions", root / "exercises"):
            print(f"wrote {path}")
        return 0
    problems = drift(root / "solutions", root / "exercises")
    for problem in problems:
        print(problem, file=sys.stderr)
    print("exercises are in sync with solutions" if not problems else f"{len(problems)} exercise file(s) drifted")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(_main())
