"""The course in a real browser: JupyterLab + ipywidgets in headless Chromium, driven by Playwright.

* Each notebook in :data:`EXPLORERS` is opened, run with Run > Run All Cells (no cell may show an error),
  and its ε/norm explorer is used like a student would: the ε slider is moved with the keyboard, every norm
  button is clicked, ε is set to 0 and to the slider's maximum. After each step the caption that the callback
  prints under the figure (``plotted eps = … | norm = … | clean: … | adversarial: …``) must name the new ε
  and norm, the figure must be redrawn, at ε = 0 the adversarial prediction must equal the clean one and at
  the maximum ε it must differ.
* The exercise notebook with the FGSM task is run, a wrong and then the right solution (taken from the
  matching solutions/ notebook) is typed into the task's cell through the editor, and the check prints
  ``[FAIL]`` and then ``[PASS]``.

Screenshots go to ``test-artifacts/browser/`` (ignored by git; ``$ADVLAB_ARTIFACTS`` overrides the folder).
The tests skip only when no Chromium binary exists (``apt-get install chromium``; ``$ADVLAB_CHROMIUM`` points
elsewhere); with ``ADVLAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead.

Mutation check: ``ADVLAB_BROWSER_BREAK_CALLBACKS=1`` deletes every ``.observe(`` line (the callback wiring)
from the kernel's copy of ``advlab/widgets.py``; the explorer tests must then fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from jupyterlab_driver import (
    CHROMIUM_ARGS,
    NOTEBOOK,
    LabServer,
    assert_no_traceback_on_page,
    assert_ran_without_errors,
    find_chromium,
    norm_key,
    open_notebook,
    output_text,
    read_caption,
    run_all,
    same_eps,
    save,
    source,
    strip_outputs,
    wait_caption,
)
from playwright.sync_api import Page, expect

from advlab import course

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = find_chromium()
ARTIFACTS = Path(os.environ.get("ADVLAB_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
RUN_ALL_TIMEOUT_S = 1200  # a course notebook takes <= 300 CPU-s; the CI machine may be busy

# (notebook, index of its ε/norm explorer among the page's .advlab-explorer widgets). Add a notebook here.
EXPLORERS = [
    ("notebooks/01_nonrobustness.ipynb", 0),
    ("notebooks/02_definitions.ipynb", 0),
]


def _exercise_with(call: str) -> Path:
    found = [p for p in sorted((ROOT / "exercises").glob("*.ipynb")) if call in p.read_text(encoding="utf-8")]
    assert len(found) == 1, f"expected one exercise notebook calling {call}, found {found}"
    return found[0]


EXERCISE = _exercise_with("check_fgsm_step(")
TASK_FUNCTION = "def fgsm_step("
CHECK_CALL = "check_fgsm_step("

if CHROMIUM is None and os.environ.get("ADVLAB_REQUIRE_BROWSER") == "1":
    raise RuntimeError("ADVLAB_REQUIRE_BROWSER=1 but no Chromium binary: apt-get install chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (apt-get install chromium, or set ADVLAB_CHROMIUM); CI installs it"
)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture(autouse=True)
def _patient_expect():
    expect.set_options(timeout=30_000)  # the default 5 s is too short on a busy 2-core machine


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab serving copies of the notebooks under test and of the advlab package."""
    root = tmp_path_factory.mktemp("lab-root")
    for rel in [nb for nb, _ in EXPLORERS] + [EXERCISE.relative_to(ROOT).as_posix()]:
        strip_outputs(ROOT / rel, root / rel)
    shutil.copytree(ROOT / "advlab", root / "advlab", ignore=shutil.ignore_patterns("__pycache__"))
    if os.environ.get("ADVLAB_BROWSER_BREAK_CALLBACKS") == "1":
        widgets_py = root / "advlab" / "widgets.py"
        lines = widgets_py.read_text().splitlines(keepends=True)
        kept = [line for line in lines if ".observe(" not in line]
        assert len(kept) < len(lines), "no .observe( line to remove in advlab/widgets.py"
        widgets_py.write_text("".join(kept))
    with LabServer(root, tmp_path_factory.mktemp("lab-work"), pythonpath=root) as server:
        yield server


@pytest.fixture
def lab_page(page: Page, lab: LabServer):
    """The browser page; afterwards the test's kernels are shut down."""
    yield page
    page.close()
    lab.shutdown_kernels()


@pytest.fixture
def shots(request):
    """``shot(locator, name)`` saves a screenshot of ``locator`` under test-artifacts/browser/<test>/."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = [0]

    def shot(locator, name: str) -> None:
        count[0] += 1
        locator.scroll_into_view_if_needed()
        locator.screenshot(path=str(folder / f"{count[0]:02d}_{name}.png"))

    return shot


def _image_src(output) -> str:
    img = output.locator("img")
    expect(img).to_have_count(1)
    return img.get_attribute("src") or ""


def _drag_to_end(page: Page, explorer, right: bool) -> None:
    """Drag the ε handle past the end of its track (right: to the maximum, else to 0), as a student would.

    Not the Home/End keys: noUiSlider's keyboard handler keeps the range the slider was created with, so after a
    norm switch End jumps to the old norm's maximum (seen with ipywidgets 8.1.9).
    """
    handle = explorer.locator(".advlab-explorer-eps [role=slider]").bounding_box()
    track = explorer.locator(".advlab-explorer-eps .noUi-target").bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] + 50 if right else track["x"] - 50, y, steps=8)
    page.mouse.up()


@pytest.mark.parametrize(("notebook", "index"), EXPLORERS, ids=[Path(nb).stem for nb, _ in EXPLORERS])
def test_explorer_follows_the_slider_and_the_norm(lab_page: Page, lab: LabServer, shots, notebook: str, index: int):
    page = lab_page
    open_notebook(page, lab, notebook)
    run_all(page, RUN_ALL_TIMEOUT_S)
    assert_ran_without_errors(save(page, lab, notebook), notebook)

    explorer = page.locator(f"{NOTEBOOK} .advlab-explorer").nth(index)
    output = explorer.locator(".advlab-explorer-output")
    handle = explorer.locator(".advlab-explorer-eps [role=slider]")
    readout = explorer.locator(".advlab-explorer-eps .widget-readout")
    buttons = explorer.locator(".advlab-explorer-norm button")

    def slider_value() -> float:
        return float(readout.inner_text())

    first = wait_caption(output, lambda c: same_eps(c.eps, slider_value()), "the caption of the initial ε")
    src = _image_src(output)
    shots(explorer, "initial")

    # Move the slider one step with the keyboard: the callback redraws at the new ε.
    handle.focus()
    handle.press("ArrowRight")
    moved = wait_caption(output, lambda c: c.eps > first.eps, "a larger ε after ArrowRight")
    assert same_eps(moved.eps, slider_value()) and moved.norm == first.norm, moved
    assert _image_src(output) != src, "the figure was not redrawn for the new ε"
    src = _image_src(output)
    shots(explorer, "moved")

    # Every norm: switching reports the new norm; ε = 0 keeps the prediction; the maximum ε changes it.
    labels = [b.inner_text().strip() for b in buttons.all()]
    assert len(labels) >= 2, f"expected several norm buttons, found {labels}"
    start = labels.index(next(lab_ for lab_ in labels if norm_key(lab_) == norm_key(first.norm)))
    seen = []
    for label in labels[start + 1 :] + labels[: start + 1]:
        previous = read_caption(output)
        buttons.filter(has_text=re.compile(rf"^{re.escape(label)}$")).click()
        switched = wait_caption(output, lambda c, label=label: norm_key(c.norm) == norm_key(label), f"norm {label}")
        assert norm_key(switched.norm) != norm_key(previous.norm), (previous, switched)
        seen.append(switched.norm)

        _drag_to_end(page, explorer, right=False)
        zero = wait_caption(output, lambda c, label=label: c.eps == 0 and norm_key(c.norm) == norm_key(label), "ε = 0")
        assert slider_value() == 0
        assert zero.adv_class == zero.clean_class, f"at ε = 0 the prediction changed: {zero.text}"
        assert _image_src(output) != src, "the figure was not redrawn"
        src = _image_src(output)
        shots(explorer, f"{norm_key(label)}_eps0")

        _drag_to_end(page, explorer, right=True)
        top = wait_caption(output, lambda c: c.eps > 0, f"the maximum ε of {label}")
        top_value = float(handle.get_attribute("aria-valuemax"))
        assert same_eps(top.eps, slider_value()) and same_eps(top.eps, top_value), (top, slider_value(), top_value)
        assert top.adv_class != top.clean_class, f"at the maximum ε the prediction did not change: {top.text}"
        assert _image_src(output) != src, "the figure was not redrawn"
        src = _image_src(output)
        shots(explorer, f"{norm_key(label)}_max")

    assert len(set(seen)) == len(labels), f"the caption did not report every norm: {seen}"
    assert_no_traceback_on_page(page)


def _solution_body() -> str:
    """The solution block of the task (between the BEGIN/END SOLUTION markers) in the matching solutions/ file."""
    nb = json.loads((ROOT / "solutions" / EXERCISE.name).read_text(encoding="utf-8"))
    cell = next(source(c) for c in nb["cells"] if c["cell_type"] == "code" and TASK_FUNCTION in source(c))
    block = cell.split(course.BEGIN, 1)[1].split(course.END, 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    return "\n".join(line[indent:] for line in lines)


def _type_into_task(page: Page, task_cell, code: str) -> None:
    """Replace the task's stub line (or a previous answer) by ``code`` through the cell's editor."""
    stub = task_cell.locator(".cm-line").filter(has_text=re.compile(r"raise NotImplementedError|return "))
    stub.last.click()
    page.keyboard.press("Home")  # CodeMirror: to the end of the indentation
    page.keyboard.press("Shift+End")
    if "\n" in code:  # several lines: paste-like input, so the editor's auto-indent does not add to ours
        page.keyboard.insert_text(code)
    else:
        page.keyboard.type(code, delay=5)


def test_exercise_typed_in_the_browser_passes_its_check(lab_page: Page, lab: LabServer, shots):
    page = lab_page
    rel = EXERCISE.relative_to(ROOT).as_posix()
    solution = _solution_body()
    assert ".clamp(0, 1)" in solution, "this test's wrong answer drops the clip to [0, 1]"
    wrong = solution.replace(".clamp(0, 1)", "")

    open_notebook(page, lab, rel)
    run_all(page, RUN_ALL_TIMEOUT_S)
    nb = save(page, lab, rel)
    assert_ran_without_errors(nb, rel)
    check_src = next(source(c) for c in nb["cells"] if CHECK_CALL in source(c))
    assert "[TODO]" in next(output_text(c) for c in nb["cells"] if source(c) == check_src)

    cells = page.locator(f"{NOTEBOOK} .jp-CodeCell")
    task_cell = cells.filter(has_text=TASK_FUNCTION)
    check_cell = cells.filter(has_text=CHECK_CALL)
    expect(task_cell).to_have_count(1)
    expect(check_cell).to_have_count(1)
    check_output = check_cell.locator(".jp-OutputArea-output")

    for answer, verdict in ((wrong, "[FAIL]"), (solution, "[PASS]")):
        _type_into_task(page, task_cell, answer)
        page.keyboard.press("Shift+Enter")  # run the task's cell; the check cell is selected next
        page.keyboard.press("Shift+Enter")  # run the check
        expect(check_output).to_contain_text(verdict, timeout=120_000)
        shots(task_cell, verdict.strip("[]").lower() + "_answer")
        shots(check_cell, verdict.strip("[]").lower())

    nb = save(page, lab, rel)
    assert_ran_without_errors(nb, rel)
    task = next(source(c) for c in nb["cells"] if TASK_FUNCTION in source(c))
    assert solution in task and "NotImplementedError" not in task, task
    assert "[PASS]" in next(output_text(c) for c in nb["cells"] if CHECK_CALL in source(c))
    assert_no_traceback_on_page(page)
