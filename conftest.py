"""Repository-wide pytest plugin: notebook memory (Binder's 2 GB) and the claims-only mode of nbval.

``--nbval-claims-only`` runs every notebook cell but compares no stored output: only an error or a failed claim
(an ``assert``, :func:`advlab.checks.claims`) fails a cell. ``make test`` uses it for the run with another seed
(``ADVLAB_SEED=1``), where the printed numbers may move but the claims must hold.

nbval runs each notebook in one kernel, one test item per code cell. Right after the notebook's last code cell
has run, this plugin reads the kernel process's peak resident set size (``VmHWM`` in ``/proc/<pid>/status``,
Linux) and fails that last item when the peak exceeds ``--nbval-max-rss`` (default ``2GB`` = 2·10⁹ bytes, the
Binder limit). No notebook runs twice for this. The peaks are printed in the terminal summary and stored in
the pytest cache (``.pytest_cache/v/advlab/notebook-peak-rss``, bytes per notebook).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CACHE_KEY = "advlab/notebook-peak-rss"
_PEAKS = pytest.StashKey[dict]()
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def pytest_addoption(parser):
    parser.addoption(
        "--nbval-max-rss",
        default="2GB",
        help="fail a notebook whose kernel's peak RSS exceeds this (e.g. 2GB, 1500MB; default 2GB, as on Binder)",
    )
    _add_claims_option(parser)


def parse_size(text: str) -> int:
    """Bytes in ``"2GB"``, ``"1500 MB"`` or ``"123"`` (decimal units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not m:
        raise pytest.UsageError(f"--nbval-max-rss: cannot read {text!r}; write e.g. 2GB or 1500MB")
    return int(float(m[1]) * _UNITS[m[2] if m[2] in _UNITS else m[2] + "B"])


def _add_claims_option(parser):
    parser.addoption(
        "--nbval-claims-only",
        action="store_true",
        help="run the notebooks without comparing stored outputs: only errors and failed claims/asserts fail",
    )


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--nbval-claims-only"):
        return
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.options["check"] = False


def pytest_configure(config):
    config.stash[_PEAKS] = {}
    parse_size(config.getoption("--nbval-max-rss"))  # a bad value fails at start-up, not after an hour


def _is_last_nbval_cell(item) -> bool:
    nb = getattr(item.parent, "nb", None)
    if type(item).__name__ != "IPyNbCell" or nb is None:
        return False
    return item.cell_num == sum(cell.cell_type == "code" for cell in nb.cells) - 1


def kernel_peak_rss(item) -> int | None:
    """Peak RSS in bytes of the kernel that runs ``item``'s notebook (None where it cannot be read)."""
    kernel = getattr(item.parent, "kernel", None)
    pid = getattr(getattr(getattr(kernel, "km", None), "provisioner", None), "pid", None)
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M)
    return int(m[1]) * 1024 if m else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not _is_last_nbval_cell(item):
        return (yield)
    try:
        result = yield
    finally:
        peak = kernel_peak_rss(item)
        item.config.stash[_PEAKS][item.parent.nodeid] = peak
    budget = parse_size(item.config.getoption("--nbval-max-rss"))
    if peak is not None and peak > budget:
        raise AssertionError(
            f"{item.parent.nodeid}: the kernel's peak memory (RSS) was {peak / 1e9:.2f} GB, over the budget of "
            f"{budget / 1e9:.2f} GB (Binder has 2 GB). Load less data at once, free large tensors, or use a subset."
        )
    return result


def pytest_terminal_summary(terminalreporter, config):
    peaks = config.stash.get(_PEAKS, {})
    if not peaks:
        return
    budget = parse_size(config.getoption("--nbval-max-rss"))
    terminalreporter.section(f"notebook peak memory (kernel RSS; budget {budget / 1e9:.2f} GB)")
    for nodeid, peak in sorted(peaks.items()):
        shown = "not measured (no /proc/<pid>/status)" if peak is None else f"{peak / 1e9:.2f} GB"
        over = "  OVER BUDGET" if peak is not None and peak > budget else ""
        terminalreporter.write_line(f"{nodeid}: {shown}{over}")
    if getattr(config, "cache", None) is not None:  # absent with -p no:cacheprovider
        stored = config.cache.get(CACHE_KEY, {})
        config.cache.set(CACHE_KEY, {**stored, **peaks})
