"""The grader (``python -m advlab.course grade``): full marks, zero marks, and submissions that try to cheat.

Every submission is a copy of solutions/02_definitions.ipynb, the cheapest course notebook to run (about 5 s in a
kernel, against 5.5 to 9 s for the others), edited task by task. Two grading runs cover everything: one through the
command line with a comfortable time limit (a solution, an exercise, a tampered copy), one with small limits (a copy
that raises and loops).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
from pathlib import Path

import pytest

from advlab import course, grade

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "02_definitions.ipynb"
EXERCISE = ROOT / "exercises" / "02_definitions.ipynb"
TASKS = ["lp_norms", "in_ball", "random_ball", "practical_adversarial", "consistent_adversarial", "inconsistency"]


def _code(source: str, cell_id: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": {}, "outputs": [],
            "source": source.splitlines(keepends=True)}


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def submission(**changes: dict) -> dict:
    """solutions/02 without outputs, edited per task: ``body`` replaces the solution block, ``prepend``/``append``
    add code to the function's cell, ``before``/``before_check`` insert cells, ``check`` replaces the check cell
    (None deletes it, and its graded test cell)."""
    nb = json.loads(SOLUTION.read_text(encoding="utf-8"))
    where = {t.name: t for t in course.tasks(nb)}
    cells = []
    for i, cell in enumerate(nb["cells"]):
        cell = dict(cell)
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        for name, change in changes.items():
            task = where[name]
            if i == task.solution_cell:
                cells += [_code(src, f"{name}-before-{k}") for k, src in enumerate(change.get("before", []))]
                text = _source(cell)
                if "body" in change:
                    text = re.sub(rf"    {course.BEGIN}\n.*?    {course.END}\n?", change["body"], text, flags=re.S)
                cell["source"] = change.get("prepend", "") + text + change.get("append", "")
            if i == task.check_cell:
                cells += [_code(src, f"{name}-tamper-{k}") for k, src in enumerate(change.get("before_check", []))]
                if "check" in change:
                    cell["source"] = change["check"]
            if "check" in change and change["check"] is None and (
                    i == task.check_cell or cell.get("id") == f"{name}-test"):
                cell = None
                break
        if cell is not None:
            cells.append(cell)
    return {**nb, "cells": cells}


# Each task of mallory's notebook is wrong or untouched-but-unchecked, and "proven" right in the notebook.
MALLORY = {
    # right, but the check cell is gone and the check function deleted: the notebook never checks it
    "lp_norms": {"check": None, "append": "\n\ndel check_lp_norms\n"},
    # wrong (ignores the box), with a fake [PASS] printed by the cell
    "in_ball": {"body": "    return lp_norms(x_adv - x, p) <= eps + tol\n",
                "append": '\nprint("[PASS] membership in B_ε(x) ∩ [0, 1]^d: correct")\n'},
    # wrong (no noise at all), and the check cell edited to claim success
    "random_ball": {"body": "    return torch.zeros_like(x)\n",
                    "check": "# NBVAL_CHECK_OUTPUT\nok_sample = True\nprint('[PASS] uniform sample')\n"},
    # wrong (forgets ĥ(x) = h*(x)), with advlab.checks monkeypatched in the kernel
    "practical_adversarial": {
        "body": "    return in_ball(x, x_adv, eps, p) & (h(x_adv).argmax(1) != h(x).argmax(1))\n",
        "before_check": ["import advlab.checks\n"
                         "advlab.checks.check_practical_adversarial = lambda fn: True\n"
                         "advlab.checks._core._report = lambda *args, **kwargs: True\n"
                         "check_practical_adversarial = advlab.checks.check_practical_adversarial\n"]},
    # wrong (forgets ĥ(x) = h*(x)), with the check's name rebound to something that always passes
    "consistent_adversarial": {
        "body": "    return in_ball(x, x_adv, eps, p) & (h(x_adv).argmax(1) != true_h(x_adv))\n",
        "before_check": ["check_consistent_adversarial = lambda fn: print('[PASS] consistent: ok') or True\n"]},
    # raises
    "inconsistency": {"body": "    raise RuntimeError('student bug')\n"},
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade alice (the solution), bob (the exercise) and mallory (MALLORY) through the command line."""
    subs = tmp_path_factory.mktemp("subs")
    files = {}
    for student, nb in (("alice", json.loads(SOLUTION.read_text(encoding="utf-8"))),
                        ("bob", json.loads(EXERCISE.read_text(encoding="utf-8"))),
                        ("mallory", submission(**MALLORY))):
        path = subs / student / "02_definitions.ipynb"
        path.parent.mkdir()
        path.write_text(json.dumps(nb), encoding="utf-8")
        files[student] = path
    before = {student: _sha(path) for student, path in files.items()}
    out = subs / "grades.csv"
    return files, before, out, subs


@pytest.fixture(scope="module")
def rows(graded):
    files, _, out, subs = graded
    rc = course._main(["grade", str(subs), "--out", str(out), "--student-from", r"/([^/]+)/02_definitions\.ipynb$",
                       "--timeout", "300", "--solutions", str(ROOT / "solutions")])
    assert rc == 0
    with open(out, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    return {(r["student"], r["task"]): r for r in table}, table


def _verdicts(rows: dict, student: str) -> list[str]:
    return [rows[student, task]["verdict"] for task in TASKS]


def test_the_solution_scores_full_marks(rows):
    by, _ = rows
    assert _verdicts(by, "alice") == ["PASS"] * 6


def test_the_generated_exercise_scores_zero_with_todo(rows):
    by, _ = rows
    assert _verdicts(by, "bob") == ["TODO"] * 6
    assert all("not implemented yet" in by["bob", task]["detail"] for task in TASKS)


def test_tampering_earns_nothing(rows):
    by, _ = rows
    assert _verdicts(by, "mallory") == ["PASS", "FAIL", "FAIL", "FAIL", "FAIL", "FAIL"]
    for task in TASKS[1:5]:
        assert "Hint:" in by["mallory", task]["detail"], by["mallory", task]  # the check's own message
    assert "RuntimeError: student bug" in by["mallory", "inconsistency"]["detail"]


def test_csv_has_one_row_per_student_and_task_and_the_summary(rows, graded, capsys):
    _, table = rows
    files, before, *_ = graded
    assert list(table[0]) == list(grade.CSV_FIELDS)
    assert len(table) == 18 and {r["student"] for r in table} == {"alice", "bob", "mallory"}
    assert {r["notebook"] for r in table} == {"02_definitions"}
    assert {student: _sha(path) for student, path in files.items()} == before, "a submission was modified"
    text = grade.summary([grade.Verdict(**r) for r in table])
    assert re.search(r"02_definitions: lp_norms\s+2/3", text) and re.search(r"mallory\s+1/6", text)
    assert re.search(r"alice\s+6/6", text) and re.search(r"bob\s+0/6", text)


def test_errors_and_both_kinds_of_timeout(tmp_path):
    eve = submission(
        lp_norms={"prepend": "raise RuntimeError('boom')\n"},  # the cell raises before defining the function
        in_ball={"body": "    while True:\n        pass\n", "check": None},  # the check never returns
        practical_adversarial={"before": ["while True:\n    pass\n"]},  # the notebook never gets further
    )
    path = tmp_path / "eve.ipynb"
    path.write_text(json.dumps(eve), encoding="utf-8")
    rows = grade.grade([path], ROOT / "solutions", timeout=15, check_timeout=3)
    got = {r.task: (r.verdict, r.detail) for r in rows}
    assert [got[t][0] for t in TASKS] == ["ERROR", "TIMEOUT", "PASS", "TIMEOUT", "TIMEOUT", "TIMEOUT"], got
    assert got["lp_norms"][1] == "RuntimeError: boom"
    assert "did not finish within 3 s" in got["in_ball"][1]  # killed, and a new process checked random_ball
    assert "ran out of its 15 s" in got["practical_adversarial"][1]
    assert {r.student for r in rows} == {"eve"}


# --- without a kernel -------------------------------------------------------------------------------------------


def test_tasks_are_the_solution_functions_and_their_checks():
    found = course.tasks(json.loads(SOLUTION.read_text(encoding="utf-8")))
    assert [t.name for t in found] == TASKS
    assert [t.check for t in found] == [f"check_{name}" for name in TASKS]


def test_only_imports_and_definitions_reach_the_checks():
    code = grade.read_code({"cells": [_code(
        "%matplotlib inline\nimport torch\ntry:\n    import advlab\nexcept ImportError:\n    %pip install advlab\n"
        "def f(x):\n    return x\n\nclass C:\n    pass\n\nok = check_f(f)\ncheck_f = lambda fn: True\n"
        "print('[PASS] f')\nwhile True:\n    pass\n", "a"),
        _code("def g(:\n", "b"), {"cell_type": "markdown", "id": "c", "metadata": {}, "source": "def h(): pass"}]})
    ((index, source),) = code.cells
    assert index == 0
    kept = grade.kept_statements(ast.parse(source))
    assert [type(node).__name__ for node in kept] == ["Import", "Import", "FunctionDef", "ClassDef"]
    assert code.defined_in == {"f": 0, "C": 0}
    assert list(code.unparsable) == [1] and code.unparsable[1][1].startswith("SyntaxError")


def test_student_and_notebook_come_from_the_path(tmp_path):
    path = Path("/x/alice_smith/02_definitions.ipynb")
    assert grade.student_of(path) == "02_definitions"
    assert grade.student_of(path, r"/x/([^/]+)/") == "alice_smith"
    sets = {"01_nonrobustness": [], "02_definitions": course.tasks(json.loads(SOLUTION.read_text()))}
    ids = {"01_nonrobustness": set(), "02_definitions": set()}
    assert grade.notebook_of(path, None, sets, ids) == "02_definitions"
    unnamed = tmp_path / "homework.ipynb"
    assert grade.notebook_of(unnamed, json.loads(EXERCISE.read_text()), sets, ids) == "02_definitions"
    assert grade.notebook_of(unnamed, {"cells": []}, sets, ids) is None
    rows = grade.grade([_write(unnamed, {"cells": []})], ROOT / "solutions")  # no kernel runs for it
    assert [(r.student, r.verdict) for r in rows] == [("homework", "ERROR")]


def _write(path: Path, nb: dict) -> Path:
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def test_grading_stops_when_advlab_changes_on_disk(tmp_path, monkeypatch):
    # the digest is taken of a copy of advlab's source (a test never edits the package's own files)
    src, copy = Path(grade.__file__).resolve().parent, tmp_path / "advlab"
    for path in src.rglob("*.py"):
        (copy / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        (copy / path.relative_to(src)).write_bytes(path.read_bytes())
    monkeypatch.setattr(grade, "__file__", str(copy / "grade.py"))
    before = grade.source_digest()
    assert grade.source_digest() == before, "nothing changed: the same digest"
    checks_core = copy / "checks" / "_core.py"
    original = checks_core.read_bytes()
    checks_core.write_bytes(original + b"\n_report = lambda *args, **kwargs: True\n")  # a check rigged to pass
    rigged = grade.source_digest()
    assert rigged != before
    with pytest.raises(grade.GradingError, match="changed on disk"):
        grade.run_checks(grade.Code(), [("f", "check_f")], timeout=1, digest=before)
    checks_core.write_bytes(original)
    assert grade.source_digest() == before
    (copy / "checks" / "extra.py").write_text("")  # a new module counts too
    assert grade.source_digest() not in (before, rigged)
