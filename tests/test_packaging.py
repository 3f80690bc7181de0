"""Set-up files agree with each other, and the code stays ruff-clean."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject_runtime_dependencies():
    runtime = {_name(r): r.replace(" ", "") for r in _pyproject()["project"]["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith(("-", "."))}
    assert listed == runtime, "environment.yml and pyproject.toml must name the same runtime dependencies"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip_section, "Binder needs CPU-only torch"
    assert pip_section[-1] == "-e .", "Binder installs the package itself last"


def test_reference_library_pins_agree():
    pins = _pyproject()["project"]["optional-dependencies"]["ref"]
    makefile = (ROOT / "Makefile").read_text()
    for pin in pins:
        assert pin in makefile, f"the Makefile must install {pin} (with --no-deps)"


def test_readme_gives_the_two_commands_and_pip_equivalents():
    readme = (ROOT / "README.md").read_text()
    for needle in (
        "make lab",
        "make test",
        "pip install -e",
        "colab.research.google.com",
        "mybinder.org",
        "repo2docker",
    ):
        assert needle in readme, f"README.md should mention {needle!r}"
    from advlab import course

    assert _pyproject()["project"]["urls"]["Repository"] == f"https://github.com/{course.REPOSITORY}"
    assert course.REPOSITORY in readme, "README badges must point at advlab.course.REPOSITORY"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.14.1" in ci and "torchvision==0.29.1" in ci
    assert "make test" in ci and "-eq 5" in ci


@pytest.mark.skipif(
    shutil.which("ruff") is None
    and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0,
    reason="ruff is in the dev extra; install it with make install",
)
def test_ruff_clean():
    targets = [p for p in ("advlab", "tests", "benchmarks", "conftest.py", "docs") if (ROOT / p).exists()]
    out = subprocess.run([sys.executable, "-m", "ruff", "check", *targets], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
