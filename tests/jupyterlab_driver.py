"""Drive a real JupyterLab in headless Chromium (Playwright) for tests/test_browser.py.

:class:`LabServer` starts ``jupyter lab`` on 127.0.0.1 (a free port, no token, private config/runtime/data
folders) against a temporary root that holds copies of the notebooks under test (outputs and execution counts
stripped, so that a test can tell that every cell really ran) and of the ``advlab`` package (first on the
kernels' ``PYTHONPATH``, so a test can edit the copy without touching the repository). The page helpers
below wrap the JupyterLab 4 / ipywidgets 8 selectors that were verified to work
(/work/shared/recipes/jupyterlab-browser-test.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KERNEL_IDLE = re.compile(r"^(?!No Kernel).+ \| Idle$")
CAPTION = re.compile(
    r"plotted eps = (?P<eps>\S+) \| norm = (?P<norm>\S+) \| clean: (?P<clean>.+?) \| adversarial: (?P<adv>.+)"
)
TRACEBACK = "Traceback (most recent call last)"
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook in the current tab


def find_chromium() -> str | None:
    """The Chromium binary to drive: ``$ADVLAB_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    given = os.environ.get("ADVLAB_CHROMIUM")
    if given:
        return given if Path(given).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_outputs(src: Path, dst: Path) -> None:
    """Copy notebook ``src`` to ``dst`` without outputs, execution counts or widget state."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


class LabServer:
    """``jupyter lab`` serving ``root`` on 127.0.0.1; ``url(path)`` opens a file. Use as a context manager."""

    def __init__(self, root: Path, work: Path, pythonpath: Path, timeout: float = 120.0):
        self.root, self.work, self.timeout = root, work, timeout
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "jupyterlab.log"
        self.env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "JUPYTER_DATA_DIR": str(work / "data"),
            "IPYTHONDIR": str(work / "ipython"),
            "PYTHONPATH": os.pathsep.join([str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        self.proc: subprocess.Popen | None = None

    def _write_settings(self) -> None:
        settings = self.work / "settings"
        files = {
            # no news toast over the page
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
            # every cell stays in the DOM (no virtual scrolling), so the tests can see all of them
            "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        }
        for rel, value in files.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))

    def __enter__(self) -> LabServer:
        self._write_settings()
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={self.root}", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.user_settings_dir={self.work / 'settings'}",
            f"--LabApp.workspaces_dir={self.work / 'workspaces'}",
        ]  # fmt: skip
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.base}/api/status", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(f"JupyterLab did not answer within {self.timeout:.0f} s; its log:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # shuts the kernels down too
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def url(self, rel: str) -> str:
        """The address that opens ``rel`` alone, in a workspace of its own (no tabs of earlier tests)."""
        self._workspaces = getattr(self, "_workspaces", 0) + 1
        return f"{self.base}/lab/workspaces/test{self._workspaces}/tree/{rel}"

    def shutdown_kernels(self) -> None:
        """Shut down every kernel session (the next test starts from a quiet machine)."""
        with urllib.request.urlopen(f"{self.base}/api/sessions", timeout=10) as r:
            sessions = json.loads(r.read())
        for session in sessions:
            req = urllib.request.Request(f"{self.base}/api/sessions/{session['id']}", method="DELETE")
            urllib.request.urlopen(req, timeout=30).close()


# --- page helpers -------------------------------------------------------------------------------------------


def open_notebook(page: Page, lab: LabServer, rel: str) -> None:
    """Open ``rel`` in JupyterLab and wait until its kernel is started and idle."""
    page.goto(lab.url(rel))
    expect(page.locator(".jp-StatusBar-TextItem").filter(has_text=KERNEL_IDLE)).to_be_visible(timeout=120_000)


def run_all(page: Page, timeout_s: float) -> None:
    """Run > Run All Cells, then wait until every code cell shows an execution count (none queued: ``[*]``)."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(
        """NOTEBOOK => {
            const p = [...document.querySelectorAll(NOTEBOOK + ' .jp-CodeCell .jp-InputArea-prompt')];
            return p.length > 0 && p.every(e => /^\\[\\d+\\]:$/.test(e.textContent.trim()));
        }""",
        arg=NOTEBOOK,
        timeout=timeout_s * 1000,
        polling=500,
    )
    expect(page.locator(".jp-StatusBar-TextItem").filter(has_text=KERNEL_IDLE)).to_be_visible()


def save(page: Page, lab: LabServer, rel: str) -> dict:
    """Save the open notebook (Ctrl+S) and return it as written to disk by JupyterLab."""
    path = lab.root / rel
    before = path.stat().st_mtime_ns
    page.locator(NOTEBOOK).click(position={"x": 5, "y": 5})  # focus the notebook, command mode
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"JupyterLab did not save {rel} within 30 s")
        time.sleep(0.2)
    time.sleep(0.5)  # the contents API writes atomically, but be sure the write has finished
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        text = out.get("text", "") or out.get("data", {}).get("text/plain", "")
        parts.append("".join(text) if isinstance(text, list) else text)
    return "".join(parts)


def assert_ran_without_errors(nb: dict, rel: str) -> None:
    """Every code cell of the saved notebook ran (has an execution count) and none has an error output."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not not_run, f"{rel}: code cells {not_run} did not run"
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(code)
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{rel}: cells show error outputs (code cell, ename, evalue): {errors}"


def assert_no_traceback_on_page(page: Page) -> None:
    """No output area on the page (widget outputs included, which the saved file does not hold) shows an error."""
    shown = page.locator(".jp-OutputArea-output").filter(has_text=TRACEBACK)
    assert shown.count() == 0, "an output shows a traceback:\n" + shown.first.inner_text()[-3000:]


@dataclass(frozen=True)
class Caption:
    """One parsed ``plotted eps = … | norm = … | clean: … | adversarial: …`` line."""

    eps: float
    norm: str
    clean: str
    adv: str
    text: str

    @property
    def clean_class(self) -> str:
        return self.clean.rsplit(" (", 1)[0]

    @property
    def adv_class(self) -> str:
        return self.adv.rsplit(" (", 1)[0]


def read_caption(output: Locator) -> Caption | None:
    """The last explorer caption shown in ``output`` (None while there is none)."""
    found = None
    for line in output.inner_text().splitlines():
        m = CAPTION.search(line)
        if m:
            found = Caption(float(m["eps"]), m["norm"], m["clean"].strip(), m["adv"].strip(), line.strip())
    return found


def wait_caption(output: Locator, accept, what: str, timeout_s: float = 60.0) -> Caption:
    """Poll until the caption satisfies ``accept(caption)``; fail with the last caption seen."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = read_caption(output)
        if last is not None and accept(last):
            return last
        time.sleep(0.25)
    raise AssertionError(f"the explorer never showed {what} within {timeout_s:.0f} s; last caption: {last}")


def same_eps(a: float, b: float) -> bool:
    """Caption ε (3 significant digits) and slider readout (2 decimals) name the same value."""
    return abs(a - b) <= max(0.011, 0.006 * abs(b))


def norm_key(label: str) -> str:
    """``"L∞"`` (a button) and ``"Linf"`` (a caption) compare equal."""
    return label.strip().replace("∞", "inf").lower()
