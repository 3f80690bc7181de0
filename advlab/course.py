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
executed notebook fit to commit (no widget state, no progress-bar widgets, no timings).

Every task is a function defined around a solution block, checked by the ``check_<name>(fn)`` call of the code cell
that follows (:func:`tasks` finds them). For instructors who grade with nbgrader, ``generate`` also keeps the
solutions annotated (:func:`annotate`): nbgrader metadata (schema 3) on each solution cell (``solution``), each
check cell (``locked``, read-only) and, after each check cell, a graded test cell (``grade``, 1 point) that asserts
the check's verdict. The exercises carry none of it: every exercise cell has empty metadata and the graded test
cells are left out (they would raise on the stubs); nbgrader builds its own student version from ``solutions/``.
``python -m advlab.course grade SUBMISSIONS…`` grades submitted exercise notebooks (see :mod:`advlab.grade`).

To refresh a course notebook's stored outputs::

    jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 notebooks/NB.ipynb
    python -m advlab.course clean notebooks/NB.ipynb
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from advlab.config import VERSION

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


# The release the notebooks are written for: the setup cell installs this tag, never whatever `main` is that day.
# Cutting a release (README, "For instructors"): bump VERSION in advlab/config.py and pyproject.toml, run
# `python -m advlab.course generate` and re-execute the notebooks, then tag the commit v<VERSION>.
RELEASE_TAG = f"v{VERSION}"

SETUP_CELL = f"""# Setup: install advlab where it is missing (Colab); do nothing where it is present (Binder, local).
try:
    import advlab
except ImportError:
    %pip install --quiet "advlab @ git+https://github.com/{REPOSITORY}@{RELEASE_TAG}"
    import advlab
if advlab.__version__ != "{VERSION}":
    print(f"note: these notebooks were written for advlab {VERSION}; this is advlab {{advlab.__version__}}")
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


def python_source(text: str) -> str:
    """Cell source as plain Python: IPython magics (``%pip``, ``!ls``) become ``get_ipython()`` calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: comment the magic lines out
        return "".join(f"# {l}" if l.lstrip().startswith(("%", "!")) else l for l in _lines(text))
    return TransformerManager().transform_cell(text)


@dataclass(frozen=True)
class TaskCell:
    """One task of a solution notebook: the function ``name`` the learner writes and the ``check`` that grades it.

    ``solution_cell`` is the index (in ``nb["cells"]``) of the cell with the solution block, ``check_cell`` that of
    the cell calling the check (the same cell or the next code cell), ``ok`` the variable the check cell assigns
    the verdict to (``ok_noise = check_gaussian_noise(gaussian_noise)``), or None.
    """

    name: str
    check: str
    solution_cell: int
    check_cell: int
    ok: str | None


def _check_call(statements: list[ast.stmt]) -> tuple[str, str, str | None] | None:
    """(check, argument, assigned variable) of the first top-level ``[ok =] check_x(fn)`` statement, if any."""
    for node in statements:
        value = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id.startswith("check_") and value.args and isinstance(value.args[0], ast.Name)):
            continue
        ok = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            ok = node.targets[0].id
        return value.func.id, value.args[0].id, ok
    return None


def is_graded_test(cell: dict) -> bool:
    """Whether ``cell`` is an nbgrader autograded test cell (graded, not a solution): only in ``solutions/``."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def tasks(nb: dict) -> list[TaskCell]:
    """The tasks of a solution notebook, in order (raises ValueError for a solution block without its check)."""
    cells = nb["cells"]
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and not is_graded_test(c)]
    found = []
    for k, i in enumerate(code):
        text = python_source(_source(cells[i]))
        marks = [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == BEGIN]
        if not marks:
            continue
        body = ast.parse(text).body
        defs = [node for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and any(node.lineno <= n <= node.end_lineno for n in marks)]
        after = [node for node in body if defs and node.lineno > defs[-1].end_lineno]
        call, where = _check_call(after), i
        if call is None and k + 1 < len(code):
            where = code[k + 1]
            call = _check_call(ast.parse(python_source(_source(cells[where]))).body)
        if call is None or call[1] not in {d.name for d in defs}:
            names = ", ".join(d.name for d in defs) or "no function"
            raise ValueError(f"cell {i} ({names}): the solution block is not followed by a check_*(fn) call of its "
                             "function, in the same cell or the next code cell")
        found.append(TaskCell(call[1], call[0], i, where, call[2]))
    return found


NBGRADER_SCHEMA = 3


def _nbgrader(grade_id: str, *, solution: bool = False, locked: bool = False, points: int | None = None) -> dict:
    meta = {"grade": points is not None, "grade_id": grade_id, "locked": locked, "schema_version": NBGRADER_SCHEMA,
            "solution": solution}
    if points is not None:
        meta["points"] = points
    return meta


_TEST_HEADER = "# Graded test (nbgrader, 1 point): passes when the check above passed.\n"


def graded_test_source(task: TaskCell) -> str:
    """The nbgrader test cell after a check cell: it raises (0 points) unless the check above returned True."""
    return _TEST_HEADER + f'assert {task.ok} is True, "{task.name} does not pass its check yet: see the message above."'


def _is_generated_test(cell: dict) -> bool:
    return is_graded_test(cell) and _source(cell).startswith(_TEST_HEADER)


def annotate(nb: dict) -> dict:
    """``nb`` with the nbgrader metadata of every task (a new dict; ``nb`` is not modified). Idempotent.

    Solution cells get ``solution`` (grade id ``<name>``), separate check cells ``locked`` (``<name>-check``), and
    after each check cell that assigns the verdict (``ok = check_x(x)``) comes a graded test cell
    (``<name>-test``, 1 point) that asserts it; an existing test cell keeps its execution count and outputs.
    Code, outputs and metadata of the other cells, graded test cells written by hand included, stay as they are.
    """
    old_tests = {c.get("id"): c for c in nb["cells"] if _is_generated_test(c)}
    kept = [c for c in nb["cells"] if not _is_generated_test(c)]
    found = tasks({**nb, "cells": kept})
    role: dict[int, dict] = {}
    test_after: dict[int, TaskCell] = {}
    for task in found:
        role.setdefault(task.solution_cell, _nbgrader(task.name, solution=True))
        if task.check_cell != task.solution_cell:
            role[task.check_cell] = _nbgrader(f"{task.name}-check", locked=True)
            if task.ok is not None:
                test_after[task.check_cell] = task
    cells = []
    for i, cell in enumerate(kept):
        new = copy.deepcopy(cell)
        if i in role:
            new.setdefault("metadata", {})["nbgrader"] = role[i]
        cells.append(new)
        if i in test_after:
            task = test_after[i]
            cell_id = f"{task.name}-test"
            old = old_tests.get(cell_id, {})
            cells.append({
                "cell_type": "code",
                "execution_count": old.get("execution_count"),
                "id": cell_id,
                "metadata": {"nbgrader": _nbgrader(cell_id, locked=True, points=1)},
                "outputs": copy.deepcopy(old.get("outputs", [])),
                "source": _lines(graded_test_source(task)),
            })
    return {**copy.deepcopy({k: v for k, v in nb.items() if k != "cells"}), "cells": cells}


def to_exercise(nb: dict, exercise_path: str) -> dict:
    """The exercise version of a solution notebook (a new dict; ``nb`` is not modified).

    Solution blocks become stubs, outputs and execution counts go, every cell's metadata is empty (no nbgrader
    metadata: see :func:`annotate`) and the nbgrader graded test cells are left out.
    """
    cells = []
    for i, cell in enumerate(nb["cells"]):
        if is_graded_test(cell):
            continue
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


_SETUP_PREFIX = "# Setup: install advlab"


def with_setup_cell(nb: dict) -> dict:
    """``nb`` with its setup cell (the first code cell starting ``# Setup: install advlab``) set to :data:`SETUP_CELL`
    (a copy; ``nb`` itself when it is already current or has no setup cell)."""
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and _source(cell).startswith(_SETUP_PREFIX):
            if _source(cell) == SETUP_CELL:
                return nb
            out = copy.deepcopy(nb)
            out["cells"][i]["source"] = _lines(SETUP_CELL)
            return out
    return nb


def sync_setup_cells(folder: Path) -> list[Path]:
    """Rewrite the setup cell of every notebook in ``folder`` that is not :data:`SETUP_CELL`; returns those paths."""
    changed = []
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        new = with_setup_cell(nb)
        if new is not nb:
            path.write_text(dumps(new), encoding="utf-8")
            changed.append(path)
    return changed


def generate(solutions: Path, exercises: Path, badge_dir: str = "exercises", annotate_solutions: bool = True
             ) -> list[Path]:
    """Write an exercise notebook into ``exercises`` for every ``*.ipynb`` in ``solutions``; returns them.

    ``badge_dir`` is the exercises' folder relative to the repository root, for the badges' paths. With
    ``annotate_solutions``, a solution notebook whose nbgrader metadata is missing or stale is rewritten with
    :func:`annotate` first (only metadata and graded test cells change; a file already annotated is not touched).
    """
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(solutions.glob("*.ipynb")):
        nb = json.loads(src.read_text(encoding="utf-8"))
        if annotate_solutions:  # the release's setup cell and the nbgrader metadata, written once if either changed
            fixed = annotate(with_setup_cell(nb))
            if fixed != nb:
                nb = fixed
                src.write_text(dumps(nb), encoding="utf-8")
        dst = exercises / src.name
        dst.write_text(dumps(to_exercise(nb, f"{badge_dir}/{src.name}")), encoding="utf-8")
        written.append(dst)
    return written


def drift(solutions: Path, exercises: Path, badge_dir: str = "exercises") -> list[str]:
    """Differences between the committed ``exercises`` and what ``solutions`` generate (empty: in sync)."""
    problems = []
    for src in sorted(solutions.glob("*.ipynb")):
        nb = json.loads(src.read_text(encoding="utf-8"))
        if annotate(nb) != nb:
            problems.append(f"{src} lacks its nbgrader metadata or graded test cells (generate adds them)")
        if with_setup_cell(nb) is not nb:
            problems.append(f"{src}'s setup cell is not course.SETUP_CELL (generate rewrites it)")
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in generate(solutions, Path(tmp), badge_dir, annotate_solutions=False):
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
    parser.add_argument("command", choices=["generate", "check", "clean", "grade"])
    parser.add_argument("notebooks", nargs="*",
                        help="for clean: executed notebooks to make fit to commit; for grade: submitted notebooks")
    parser.add_argument("--root", default=".", help="repository root (holds solutions/ and exercises/)")
    grading = parser.add_argument_group("grade (see advlab.grade)")
    grading.add_argument("--out", help="write the verdicts to this CSV file (one row per student and task)")
    grading.add_argument("--student-from", metavar="REGEX",
                         help="the student is the first group of REGEX searched in the path (default: file name stem)")
    grading.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                         help="time limit of each notebook's run and of each task's check (default 600)")
    grading.add_argument("--solutions", metavar="DIR", help="solution notebooks that define the tasks "
                         "(default: ROOT/solutions)")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if args.command == "grade":
        from advlab import grade  # the grader needs nbclient; the other commands do not

        return grade.main(args.notebooks, out=args.out, student_from=args.student_from, timeout=args.timeout,
                          solutions=Path(args.solutions) if args.solutions else root / "solutions")
    if args.command == "clean":
        for name in args.notebooks:
            path = Path(name)
            nb = clean_outputs(json.loads(path.read_text(encoding="utf-8")))
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"cleaned {path}")
        return 0
    if args.command == "generate":
        for path in sync_setup_cells(root / "notebooks"):
            print(f"setup cell of {path} set to the release {RELEASE_TAG}")
        before = {p: p.read_text(encoding="utf-8") for p in sorted((root / "solutions").glob("*.ipynb"))}
        for path in generate(root / "solutions", root / "exercises"):
            print(f"wrote {path}")
        for path, text in before.items():
            if path.read_text(encoding="utf-8") != text:
                print(f"annotated {path} (nbgrader metadata, graded test cells)")
        return 0
    problems = drift(root / "solutions", root / "exercises")
    for problem in problems:
        print(problem, file=sys.stderr)
    print("exercises are in sync with solutions" if not problems else f"{len(problems)} exercise file(s) drifted")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(_main())
