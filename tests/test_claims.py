"""Notebook claims (advlab.checks.claims) and nbval's claims-only mode (the root conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.checks import claims

ROOT = Path(__file__).resolve().parents[1]


def test_claims_print_each_statement(capsys):
    claims(("a holds", True), ("an ordering", np.float64(0.2) < 0.3), ("a tensor", torch.tensor(True)))
    assert capsys.readouterr().out == "✓ a holds\n✓ an ordering\n✓ a tensor\n"


def test_a_false_claim_is_printed_then_raised(capsys):
    with pytest.raises(AssertionError, match="1 of 2 claims do not hold: b is bigger"):
        claims(("a", True), ("b is bigger", 1 > 2), title="section 1")
    assert capsys.readouterr().out == "section 1\n✓ a\n✗ b is bigger\n"


@pytest.mark.parametrize("bad", [(), ("no value",), (("x", torch.ones(3, dtype=torch.bool)),), ((1, True),)])
def test_malformed_claims_raise_type_errors(bad):
    with pytest.raises(TypeError):
        claims(*bad)


def _notebook(path: Path, stored: str) -> Path:
    """A two-cell notebook whose checked cell prints '0.1' but stores ``stored``, then asserts a claim."""
    cells = [
        {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "# NBVAL_CHECK_OUTPUT\nprint(0.1)",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": stored}]},
        {"cell_type": "code", "metadata": {}, "execution_count": 2, "source": "assert 0.1 < 0.2", "outputs": []},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def _nbval(path: Path, *options: str) -> int:
    # the repository's settings (nbval-lax, the sanitizer) and its root conftest.py, which adds the option
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", "--rootdir", str(ROOT),
           "-c", str(ROOT / "pyproject.toml"), *options, str(path)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300).returncode


def test_claims_only_mode_ignores_stored_numbers_but_not_claims(tmp_path):
    moved = _notebook(tmp_path / "moved.ipynb", "0.2\n")
    assert _nbval(moved) == 1, "a moved checked output must fail nbval"
    assert _nbval(moved, "--nbval-claims-only") == 0, "claims-only compares no stored output"
    broken = tmp_path / "broken.ipynb"
    nb = json.loads(moved.read_text())
    nb["cells"][1]["source"] = "assert 0.3 < 0.2"
    broken.write_text(json.dumps(nb))
    assert _nbval(broken, "--nbval-claims-only") == 1, "a failed assert must still fail"
