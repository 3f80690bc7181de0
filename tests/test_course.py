"""Exercises generated from solutions: stubs, determinism, idempotence, drift, badges, nbgrader metadata; licence."""

import json
import re
from pathlib import Path

import pytest
import tomllib
import yaml

import advlab
from advlab import course

ROOT = Path(__file__).resolve().parents[1]

SOLUTION_CELL = '''def fgsm_step(x, grad, eps):
    """One FGSM step."""
    ### BEGIN SOLUTION
    x_adv = x + eps * grad.sign()
    return x_adv.clamp(0, 1)
    ### END SOLUTION


check_fgsm(fgsm_step)
'''


def _notebook(path: str) -> dict:
    return {
        "cells": [
            {
                "cell_type": "markdown",
                "id": "a",
                "metadata": {"tags": ["x"]},
                "source": ["# Title\n", course.badges(path)],
            },
            {
                "cell_type": "code",
                "id": "b",
                "metadata": {"collapsed": True},
                "execution_count": 7,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": ["[PASS] ok\n"]}],
                "source": SOLUTION_CELL.splitlines(keepends=True),
            },
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "widgets": {},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def test_strip_solutions_keeps_indentation_and_the_rest():
    out = course.strip_solutions(SOLUTION_CELL)
    assert "x_adv" not in out and "BEGIN SOLUTION" not in out
    assert '    # YOUR CODE HERE\n    raise NotImplementedError("' in out
    assert out.startswith('def fgsm_step(x, grad, eps):\n    """One FGSM step."""\n')
    assert out.endswith("check_fgsm(fgsm_step)\n")
    compile(out, "<exercise>", "exec")


@pytest.mark.parametrize(
    "bad", ["### BEGIN SOLUTION\nx = 1\n", "x = 1\n### END SOLUTION\n", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n"]
)
def test_unbalanced_markers_are_errors(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        course.strip_solutions(bad)


def test_generate_strips_outputs_normalises_metadata_and_rewrites_badges(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_x.ipynb").write_text(json.dumps(_notebook("solutions/01_x.ipynb")))
    (path,) = course.generate(tmp_path / "solutions", tmp_path / "exercises")
    nb = json.loads(path.read_text())
    code = nb["cells"][1]
    assert code["outputs"] == [] and code["execution_count"] is None and code["metadata"] == {}
    assert "widgets" not in nb["metadata"] and nb["metadata"]["kernelspec"]["name"] == "python3"
    assert course.badge_paths("".join(nb["cells"][0]["source"])) == ["exercises/01_x.ipynb"] * 2
    first = path.read_text()
    course.generate(tmp_path / "solutions", tmp_path / "exercises")
    assert path.read_text() == first, "generation must be deterministic and idempotent"


def test_drift_check_catches_edits_and_strays(tmp_path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_x.ipynb").write_text(json.dumps(_notebook("solutions/01_x.ipynb")))
    course.generate(tmp_path / "solutions", tmp_path / "exercises")
    assert course.drift(tmp_path / "solutions", tmp_path / "exercises") == []
    ex = tmp_path / "exercises" / "01_x.ipynb"
    ex.write_text(ex.read_text().replace("YOUR CODE HERE", "my answer"))
    (problem,) = course.drift(tmp_path / "solutions", tmp_path / "exercises")
    assert "differs" in problem and "my answer" in problem
    (tmp_path / "exercises" / "99_stray.ipynb").write_text("{}")
    assert any("no solution" in p for p in course.drift(tmp_path / "solutions", tmp_path / "exercises"))
    ex.unlink()
    assert any("missing" in p for p in course.drift(tmp_path / "solutions", tmp_path / "exercises"))


def test_committed_exercises_are_in_sync_with_solutions():
    assert course.drift(ROOT / "solutions", ROOT / "exercises") == []


def test_badges_point_at_the_repository_and_path():
    md = course.badges("notebooks/01_nonrobustness.ipynb")
    assert course.badge_paths(md) == ["notebooks/01_nonrobustness.ipynb"] * 2
    assert f"github/{course.REPOSITORY}/blob/" in md and f"gh/{course.REPOSITORY}/" in md


def _run_setup_cell(monkeypatch, capsys, installed_version: str | None) -> tuple[list[tuple[str, str]], str]:
    """Run course.SETUP_CELL as IPython runs it, with advlab importable at ``installed_version`` (None: missing until
    %pip installs it, as the release) and a stand-in for %pip; returns the line magics called and the printed text."""
    import sys
    import types

    from IPython.core.inputtransformer2 import TransformerManager

    def fake_advlab(version: str) -> types.ModuleType:
        mod = types.ModuleType("advlab")
        mod.__version__ = version
        mod.device, mod.profile = (lambda: "cpu"), (lambda: "fast")
        return mod

    magics = []

    class Shell:
        def run_line_magic(self, name, line):
            magics.append((name, line))
            sys.modules["advlab"] = fake_advlab(advlab.__version__)  # what the pinned release installs

    monkeypatch.setitem(sys.modules, "advlab", None if installed_version is None else fake_advlab(installed_version))
    code = TransformerManager().transform_cell(course.SETUP_CELL)
    exec(compile(code, "<setup cell>", "exec"), {"get_ipython": Shell})
    return magics, capsys.readouterr().out


def test_setup_cell_installs_only_when_missing(monkeypatch, capsys):
    # present (Binder, local): nothing is installed, the version and device are reported, no warning
    magics, out = _run_setup_cell(monkeypatch, capsys, advlab.__version__)
    assert magics == []
    assert out == f"advlab {advlab.__version__} | device: cpu | profile: fast\n"
    # missing (Colab): one %pip install of this very release (its tag, never the moving main branch), then imported
    magics, out = _run_setup_cell(monkeypatch, capsys, None)
    ((name, line),) = magics
    assert name == "pip" and line.split()[:2] == ["install", "--quiet"]
    assert line.endswith(f'"advlab @ git+https://github.com/{course.REPOSITORY}@v{advlab.__version__}"'), line
    assert out == f"advlab {advlab.__version__} | device: cpu | profile: fast\n"
    # another version already installed: kept, with a note that the notebooks were written for this one
    magics, out = _run_setup_cell(monkeypatch, capsys, "9.9.9")
    assert magics == []
    assert out.startswith(f"note: these notebooks were written for advlab {advlab.__version__}; this is advlab 9.9.9")


def test_clean_outputs_drops_widget_state_progress_bars_and_timings():
    view = "application/vnd.jupyter.widget-view+json"
    nb = {
        "metadata": {"widgets": {"state": {}}},
        "cells": [
            {
                "cell_type": "code",
                "metadata": {"execution": {"iopub.execute_input": "2026"}},
                "outputs": [
                    {
                        "output_type": "display_data",
                        "data": {view: {"model_id": "a"}, "text/plain": [" 40%|####  | 4/10"]},
                    },
                    {
                        "output_type": "display_data",
                        "data": {view: {"model_id": "c"}, "text/plain": ["fit:   0%|     | 0/64 [00:00<?, ?it/s]"]},
                    },
                    {"output_type": "display_data", "data": {view: {"model_id": "b"}, "text/plain": ["VBox(...)"]}},
                    {"output_type": "stream", "name": "stdout", "text": ["[PASS] ok\n"]},
                ],
            }
        ],
    }
    out = course.clean_outputs(nb)
    assert "widgets" not in out["metadata"] and out["cells"][0]["metadata"] == {}
    kinds = [o.get("data", {}).keys() for o in out["cells"][0]["outputs"]]
    assert len(kinds) == 2 and all(view not in k for k in kinds)
    # idempotent: the text fallback of a progress bar (left by an older clean) goes too, other text stays
    out["cells"][0]["outputs"].insert(0, {"output_type": "display_data", "data": {"text/plain": ["b:   0%|  | 0/4"]}})
    again = course.clean_outputs(json.loads(json.dumps(out)))
    assert again == course.clean_outputs(json.loads(json.dumps(again)))
    assert [o.get("data", {}).get("text/plain") for o in again["cells"][0]["outputs"]] == [["VBox(...)"], None]


# --- nbgrader metadata and graded test cells ------------------------------------------------------------------

NBGRADER_KEYS = {"schema_version", "grade", "locked", "solution", "task", "grade_id", "points", "checksum", "cell_type"}
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _two_cell_task() -> dict:
    nb = _notebook("solutions/01_x.ipynb")
    code = nb["cells"][1]
    text = "".join(code["source"])
    code["source"] = text.replace("\n\ncheck_fgsm(fgsm_step)\n", "\n").splitlines(keepends=True)
    check = {"cell_type": "code", "id": "c", "metadata": {}, "execution_count": 8, "outputs": [],
             "source": ["# NBVAL_CHECK_OUTPUT\n", "ok_fgsm = check_fgsm(fgsm_step)"]}
    nb["cells"].append(check)
    return nb


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solutions_carry_valid_nbgrader_metadata(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert course.annotate(nb) == nb, "run python -m advlab.course generate"
    ids = []
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader")
        if meta is None:
            continue
        assert set(meta) <= NBGRADER_KEYS and meta["schema_version"] == 3
        assert re.fullmatch(r"[a-zA-Z0-9_\-]+", meta["grade_id"]) and ("points" in meta) == meta["grade"]
        ids.append(meta["grade_id"])
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    found = course.tasks(nb)
    points = [c for c in nb["cells"] if course.is_graded_test(c)]
    assert len(points) == len(found) >= 4
    for task in found:
        assert nb["cells"][task.solution_cell]["metadata"]["nbgrader"]["solution"] is True
        check = nb["cells"][task.check_cell]["metadata"]["nbgrader"]
        assert check["locked"] is True and check["grade"] is False and check["solution"] is False
        test = nb["cells"][task.check_cell + 1]
        assert test["metadata"]["nbgrader"]["points"] == 1 and course.is_graded_test(test)
        assert "".join(test["source"]) == course.graded_test_source(task)


def test_the_graded_test_cell_raises_exactly_when_the_check_failed():
    (task,) = course.tasks(_two_cell_task())
    src = course.graded_test_source(task)
    exec(compile(src, "<test>", "exec"), {"ok_fgsm": True})
    for failed in (False, None, "[PASS] printed"):
        with pytest.raises(AssertionError, match="fgsm_step does not pass"):
            exec(compile(src, "<test>", "exec"), {"ok_fgsm": failed})
    assert not re.search(r"\bcheck_\w+\(", src), "tests/test_checks.py counts check calls with this pattern"


def test_annotate_is_idempotent_keeps_test_outputs_and_generate_leaves_tests_out(tmp_path):
    nb = _two_cell_task()
    once = course.annotate(nb)
    assert nb["cells"][1]["metadata"] == {"collapsed": True}, "annotate must not modify its argument"
    assert [c["id"] for c in once["cells"]] == ["a", "b", "c", "fgsm_step-test"]
    assert once["cells"][1]["metadata"]["collapsed"] is True, "other metadata stays"
    once["cells"][3].update(execution_count=9, outputs=[{"output_type": "stream", "name": "stdout", "text": "x"}])
    again = course.annotate(once)
    assert again == once
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_x.ipynb").write_text(json.dumps(nb))
    (path,) = course.generate(tmp_path / "solutions", tmp_path / "exercises")
    ex = json.loads(path.read_text())
    assert [c["id"] for c in ex["cells"]] == ["a", "b", "c"] and all(c["metadata"] == {} for c in ex["cells"])
    solution = json.loads((tmp_path / "solutions" / "01_x.ipynb").read_text())
    assert solution == course.annotate(nb), "generate annotates the solutions in place"
    assert course.drift(tmp_path / "solutions", tmp_path / "exercises") == []
    (tmp_path / "solutions" / "01_x.ipynb").write_text(course.dumps(nb))  # the annotation lost
    assert any("nbgrader" in p for p in course.drift(tmp_path / "solutions", tmp_path / "exercises"))


def test_annotate_keeps_graded_tests_written_by_hand_and_exercises_leave_them_out():
    nb = course.annotate(_two_cell_task())
    meta = {"grade": True, "grade_id": "hidden", "locked": True, "points": 2, "schema_version": 3, "solution": False}
    hand = {"cell_type": "code", "id": "hidden", "metadata": {"nbgrader": meta}, "execution_count": None,
            "outputs": [], "source": ["assert fgsm_step is not None"]}
    nb["cells"].append(hand)
    assert course.annotate(nb) == nb
    assert [c["id"] for c in course.to_exercise(nb, "exercises/01_x.ipynb")["cells"]] == ["a", "b", "c"]


def test_a_solution_block_needs_its_check():
    nb = _two_cell_task()
    nb["cells"].pop()
    with pytest.raises(ValueError, match="check_"):
        course.tasks(nb)


# --- licence and citation ------------------------------------------------------------------------------------------


def test_license_is_mit_and_citation_matches_the_package():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the advlab authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "MIT"} and project["version"] == advlab.__version__
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "advlab" and cff["license"] == "MIT"
    assert str(cff["version"]) == advlab.__version__, "CITATION.cff's version must follow advlab.__version__"
    assert cff["repository-code"] == f"https://github.com/{course.REPOSITORY}"
    assert cff["authors"] and cff["message"]


def test_release_version_is_one_number_everywhere():
    """pyproject.toml, advlab.__version__, CITATION.cff and the setup cell's tag name one release."""
    import advlab

    root = Path(course.__file__).resolve().parents[1]
    (version,) = re.findall(r'(?m)^version = "([^"]+)"$', (root / "pyproject.toml").read_text(encoding="utf-8"))
    assert version == advlab.__version__ == course.VERSION
    assert course.RELEASE_TAG == f"v{advlab.__version__}"


def test_generate_moves_every_setup_cell_to_the_release(tmp_path):
    """An old setup cell (installing `main`) is reported by check and rewritten to course.SETUP_CELL by generate."""
    old = course.SETUP_CELL.replace(f"@{course.RELEASE_TAG}", "@main")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# t"]},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": old.splitlines(keepends=True)}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    fixed = course.with_setup_cell(nb)
    assert fixed is not nb and "".join(fixed["cells"][1]["source"]) == course.SETUP_CELL
    assert course.with_setup_cell(fixed) is fixed  # already current: untouched
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "a.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    assert course.sync_setup_cells(tmp_path / "notebooks") == [tmp_path / "notebooks" / "a.ipynb"]
    assert course.sync_setup_cells(tmp_path / "notebooks") == []
