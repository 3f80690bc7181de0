"""Exercises generated from solutions: stubs, determinism, idempotence, drift, badges."""

import json
from pathlib import Path

import pytest

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


def test_setup_cell_installs_only_when_missing():
    src = course.SETUP_CELL
    assert src.index("import advlab") < src.index("%pip install")
    assert "except ImportError" in src and course.REPOSITORY in src


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
