"""What students do that the authors did not plan: cells run twice or out of order, the full profile offline,
a broken shipped checkpoint. Each either works or stops with a message that says what to do.

Corrupt checkpoints in the cache (truncated, wrong shapes, garbage JSON) are covered by
tests/test_zoo.py::test_corrupt_checkpoints_are_rebuilt; here only the package's shipped folder is damaged.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from advlab import course, data, zoo

ROOT = Path(__file__).resolve().parents[1]
NB01 = ROOT / "notebooks" / "01_nonrobustness.ipynb"
CHECKED = "# NBVAL_CHECK_OUTPUT"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
        else:
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _by_file(folder: str, call: str) -> Path:
    found = [p for p in sorted((ROOT / folder).glob("*.ipynb")) if call in p.read_text(encoding="utf-8")]
    assert len(found) == 1, f"expected one {folder}/ notebook with {call}, found {found}"
    return found[0]


def _run_passes(cells: list, cwd: Path, passes: int = 2, timeout: int = 600) -> list[list[str]]:
    """Run ``cells`` ``passes`` times in ONE kernel; returns each pass's output text per cell. Raises on an error."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.source) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    seen = []
    with client.setup_kernel():
        for _ in range(passes):
            outputs = []
            for i, cell in enumerate(nb.cells):
                client.execute_cell(cell, i)
                outputs.append(_text(cell))
            seen.append(outputs)
    return seen


def _stored(cells: list) -> list[str]:
    return [_text(c) for c in cells]


def test_course_notebook_section_runs_twice_and_out_of_order():
    """Setup, imports, then straight to the ε/norm explorer section (sections 1-7 skipped), twice in one kernel:
    the checked outputs are the stored ones both times."""
    code = _code(_read(NB01))
    explorer = [c for c in code if "widgets.explore" in c.source]
    assert len(explorer) >= 3, "expected the explorer's demo, checked and widget cells"
    cells = code[:2] + explorer
    assert course.SETUP_CELL == cells[0].source
    first, second = _run_passes(cells, NB01.parent)
    checked = [i for i, c in enumerate(cells) if c.source.startswith(CHECKED)]
    assert checked, "no checked cell among the explorer's cells"
    for i in checked:
        assert first[i] == second[i] == _stored(cells)[i], (first[i], second[i])
    widget_cell = next(i for i, c in enumerate(cells) if c.source.strip() == "widgets.explorer()")
    assert "ε/norm explorer" in first[widget_cell] and first[widget_cell] == second[widget_cell]


def test_exercise_notebook_runs_twice_with_its_stubs():
    """The untouched exercise notebook twice in one kernel: every check says [TODO] (and to run the cell
    again) both times, nothing raises."""
    path = _by_file("exercises", "check_fgsm_step(")
    cells = _code(_read(path))
    checks = [i for i, c in enumerate(cells) if re.search(r"^ok_\w+ = check_\w+\(", c.source, re.M)]
    assert len(checks) >= 4
    for outputs in _run_passes(cells, path.parent):
        for i in checks:
            assert outputs[i].startswith("[TODO]") and "run the cell again" in outputs[i], outputs[i]


def test_solutions_pass_twice_in_one_kernel():
    """Each solved task and its check, run twice in one kernel: [PASS] both times with the same summary (the
    checks do not depend on what ran before). The demo cells between the tasks are left out (time)."""
    path = _by_file("solutions", "check_fgsm_step(")
    code = _code(_read(path))
    tasks = [c for c in code if course.BEGIN in c.source or re.search(r"^ok_\w+ = check_\w+\(", c.source, re.M)]
    cells = code[:2] + tasks
    checks = [i for i, c in enumerate(cells) if c.source.startswith(CHECKED)]
    assert len(checks) >= 4
    first, second = _run_passes(cells, path.parent)
    for i in checks:
        assert first[i].startswith("[PASS]") and first[i] == second[i] == _stored(cells)[i], (first[i], second[i])


def test_full_profile_offline_says_how_to_get_the_data(tmp_path, monkeypatch):
    """Notebook 01 in the full profile without network and without data: the first data cell stops with
    advlab's DatasetUnavailable and its instructions, not with a torchvision stack trace."""
    monkeypatch.setenv("ADVLAB_PROFILE", "full")
    monkeypatch.setenv("ADVLAB_OFFLINE", "1")
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    code = _code(_read(NB01))
    first_load = next(i for i, c in enumerate(code) if "data.load(" in c.source)
    with pytest.raises(CellExecutionError) as info:
        _run_passes(code[: first_load + 1], NB01.parent, passes=1)
    err = info.value
    assert err.ename == "DatasetUnavailable", err.ename
    assert "How to get it" in err.evalue and "ADVLAB_DATA" in err.evalue and "internet" in err.evalue
    trace = ANSI.sub("", err.traceback)
    assert "torchvision/" not in trace and "During handling of the above exception" not in trace, trace


def test_full_profile_zoo_offline_says_how_to_get_the_data(tmp_path, monkeypatch):
    """A zoo model in the full profile needs its training data: same clear error, nothing trained or written."""
    monkeypatch.setenv("ADVLAB_OFFLINE", "1")
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("ADVLAB_DATA", raising=False)
    with pytest.raises(data.DatasetUnavailable, match="How to get it") as info:
        zoo.load("mnist-cnn", profile="full", progress=False)
    assert info.value.__suppress_context__ and "ADVLAB_DATA" in str(info.value)
    assert not (tmp_path / "empty-cache" / "zoo").exists()


@pytest.mark.parametrize("damage", ["truncated", "git-lfs-pointer"])
def test_damaged_shipped_checkpoint_is_not_loaded(tmp_path, monkeypatch, damage):
    """A broken checkpoint in the package (a cut-off download, a Git LFS pointer instead of the file) is
    detected by its checksum, reported, and rebuilt into the cache; a later load uses the rebuilt file."""
    name = "mnist-logistic"
    key, _ = zoo.cache_key(name, "fast")
    stem = f"{name}-fast-{key}"
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(zoo.SHIPPED / f"{stem}.json", shipped)
    good = (zoo.SHIPPED / f"{stem}.pt").read_bytes()
    if damage == "truncated":
        (shipped / f"{stem}.pt").write_bytes(good[: len(good) // 2])
    else:
        (shipped / f"{stem}.pt").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    monkeypatch.setattr(zoo, "SHIPPED", shipped)
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "cache"))
    trained = []

    def quick_train(model, name, profile, progress=True):  # stands in for the real 10 s of training
        trained.append(name)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        return {"test_accuracy": 0.0, "train_seconds": 0.0}

    monkeypatch.setattr(zoo, "train_entry", quick_train)
    with pytest.warns(UserWarning, match=rf"{re.escape(stem)}\.pt is unusable \(checksum mismatch"):
        model = zoo.load(name, progress=False)
    assert trained == [name]
    assert all(bool((p == 0.5).all()) for p in model.parameters()), "the damaged weights must not be loaded"
    record = json.loads((tmp_path / "cache" / "zoo" / f"{stem}.json").read_text())
    assert record["sha256"] == zoo._sha256(tmp_path / "cache" / "zoo" / f"{stem}.pt")

    with pytest.warns(UserWarning, match="unusable"):  # the shipped file is still broken: say so, use the cache
        again = zoo.load(name, progress=False)
    assert trained == [name], "the rebuilt checkpoint in the cache must be reused, not trained again"
    assert all(bool((p == 0.5).all()) for p in again.parameters())
