"""Static checks of the course notebooks (no execution) and a headless test of the ε/norm explorer.

Executing the notebooks is nbval's job: ``pytest --nbval-lax --nbval-current-env --sanitize-with
.ci/nbval_sanitize.cfg notebooks/``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from advlab import course

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("notebooks", "exercises", "solutions")
NOTEBOOKS = sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SETUP_WITHIN = 3  # the setup cell must be among the first cells


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in paths]


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def test_course_notebooks_exist():
    assert (ROOT / "notebooks" / "01_nonrobustness.ipynb") in NOTEBOOKS, "notebooks/01_nonrobustness.ipynb is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_badges_point_at_the_notebook_itself(path: Path):
    cells = _load(path)["cells"]
    assert cells and cells[0]["cell_type"] == "markdown", "the first cell must be markdown with the badges"
    first = _source(cells[0])
    rel = path.relative_to(ROOT).as_posix()
    assert "colab.research.google.com" in first and "mybinder.org" in first, "Colab and Binder badges missing"
    paths = course.badge_paths(first)
    assert len(paths) == 2, f"expected one Colab and one Binder badge for {course.REPOSITORY}, found {paths}"
    assert set(paths) == {rel}, f"badges point at {paths}, not at {rel}; paste course.badges({rel!r})"
    assert course.badges(rel) in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_setup_cell_comes_first(path: Path):
    code = [_source(c) for c in _load(path)["cells"][:SETUP_WITHIN] if c["cell_type"] == "code"]
    assert course.SETUP_CELL in code, f"advlab.course.SETUP_CELL must be one of the first {SETUP_WITHIN} cells"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_no_widget_state_stored(path: Path):
    nb = _load(path)
    assert "widgets" not in nb.get("metadata", {}), "strip metadata.widgets (saved widget state)"
    for i, cell in enumerate(nb["cells"]):
        assert "widgets" not in cell.get("metadata", {}), f"cell {i} stores widget metadata"
        for out in cell.get("outputs", []):
            # a widget view whose state is not stored renders as "Error displaying widget: model not found"
            assert WIDGET_VIEW not in out.get("data", {}), f"cell {i} stores a widget view without its state"


NOTEBOOKS_WITH_OUTPUTS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]


@pytest.mark.parametrize("path", NOTEBOOKS_WITH_OUTPUTS, ids=_ids(NOTEBOOKS_WITH_OUTPUTS))
def test_course_notebooks_store_outputs(path: Path):
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    assert code, "a course notebook without code cells"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"stored outputs contain errors: {[e.get('ename') for e in errors]}"
    checked = [i for i, c in enumerate(code) if _source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked, "no '# NBVAL_CHECK_OUTPUT' cell: nbval --nbval-lax would compare nothing"
    empty = [i for i in checked if not code[i].get("outputs")]
    assert not empty, f"checked code cells {empty} have no stored output; run the notebook (fast profile) and save it"
    with_output = sum(bool(c.get("outputs")) for c in code)
    assert with_output >= len(code) // 2, f"only {with_output} of {len(code)} code cells have stored outputs"


# --- the ε/norm explorer, headless --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(mnist_test, mnist_cnn):
    """One correctly classified test image (x (1, 28, 28), y int) of the zoo CNN."""
    from advlab import widgets

    x, y = mnist_test
    i = widgets.demo_index(mnist_cnn, x.cpu(), y.cpu())
    return x[i], int(y[i])


def test_explorer_at_zero_eps_keeps_the_prediction(agg, mnist_cnn, demo):
    from advlab import widgets

    x, y = demo
    for norm in widgets.NORMS:
        r = widgets.explore(0.0, norm, model=mnist_cnn, x=x, y=y, plot=False)
        assert r.adv_pred == r.clean_pred == y
        assert r.distance == 0.0 and not r.changed


def test_explorer_large_eps_changes_the_prediction_and_draws(agg, mnist_cnn, demo):
    from advlab import widgets

    x, y = demo
    r = widgets.explore(widgets.NORMS["Linf"][1], "Linf", model=mnist_cnn, x=x, y=y)
    assert r.changed and r.adv_pred != y
    assert r.distance <= widgets.NORMS["Linf"][1] + 1e-5
    assert r.figure is not None and len(r.figure.axes) == 4
    assert r.caption.startswith("plotted eps = 0.5 | norm = Linf | clean: ")
    assert f"adversarial: {r.adv_pred} ({r.adv_conf:.2f})" in r.caption
    agg.close(r.figure)


def test_explorer_norm_switch_is_reported(agg, mnist_cnn, demo):
    from advlab import widgets

    x, y = demo
    seen = {}
    for given, name in (("inf", "Linf"), (2, "L2"), ("L1", "L1")):
        r = widgets.explore(1.0, given, model=mnist_cnn, x=x, y=y, plot=False)
        assert r.norm == name and f"norm = {name}" in r.caption
        seen[name] = r.distance
    assert seen["Linf"] > 0 and seen["L2"] <= 1.0 + 1e-4 and seen["L1"] <= 1.0 + 1e-4
    with pytest.raises(Exception, match="Linf"):
        widgets.explore(0.1, "L3", model=mnist_cnn, x=x, y=y, plot=False)


def test_explorer_widget_has_findable_output(agg, mnist_cnn, demo):
    from advlab import widgets

    x, y = demo
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        box = widgets.explorer(model=mnist_cnn, x=x, y=y)
        (norm_w, eps_w), out = box.children[0].children, box.children[1]
        assert widgets.OUTPUT_CSS_CLASS in out._dom_classes and widgets.CSS_CLASS in box._dom_classes
        norm_w.value = "L2"
    assert eps_w.max == widgets.NORMS["L2"][1] and eps_w.value == widgets.NORMS["L2"][3]
    assert "ε/norm explorer" in repr(box)
    agg.close("all")
