"""The notebook memory budget (the plugin in the repository's root conftest.py) measures and fails for real.

Two tiny notebooks run under nbval in a separate pytest with the plugin and a lowered cap: the one that
allocates (and frees) 400 MB fails on its last cell, the small one passes, and both peaks are reported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_a_notebook_over_the_memory_budget_fails_its_last_cell(tmp_path):
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a rootdir of its own: no repository addopts
    # 400 MB written (so resident), then freed: the *peak* must still count.
    _notebook(tmp_path / "big.ipynb", "import numpy as np\na = np.ones(50_000_000)\ndel a", "print('done')")
    _notebook(tmp_path / "small.ipynb", "x = 1", "print(x)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    cmd = [
        sys.executable, "-m", "pytest", "-rA", "-p", "no:randomly", "--nbval-lax", "--nbval-current-env",
        "--nbval-max-rss=300MB", "-o", f"cache_dir={tmp_path / 'cache'}", "big.ipynb", "small.ipynb",
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "PASSED big.ipynb::Cell 0" in out and "FAILED big.ipynb::Cell 1" in out, out
    assert "PASSED small.ipynb::Cell 0" in out and "PASSED small.ipynb::Cell 1" in out, out
    assert "over the budget of 0.30 GB" in out and "notebook peak memory (kernel RSS; budget 0.30 GB)" in out, out

    peaks = json.loads((tmp_path / "cache" / "v" / "advlab" / "notebook-peak-rss").read_text())
    assert set(peaks) == {"big.ipynb", "small.ipynb"}, peaks
    assert peaks["big.ipynb"] > 400e6 > 300e6 > peaks["small.ipynb"] > 10e6, peaks
    assert f"big.ipynb: {peaks['big.ipynb'] / 1e9:.2f} GB  OVER BUDGET" in out, out


def test_sizes_are_read_in_decimal_units():
    spec = importlib.util.spec_from_file_location("advlab_root_conftest", ROOT / "conftest.py")
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    assert root_conftest.parse_size("2GB") == 2 * 10**9
    assert root_conftest.parse_size("1500 mb") == 1_500_000_000
    assert root_conftest.parse_size("2G") == 2 * 10**9 and root_conftest.parse_size("123") == 123
    with pytest.raises(pytest.UsageError, match="1500MB"):
        root_conftest.parse_size("lots")
