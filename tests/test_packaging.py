"""Set-up files agree with each other, and the code stays ruff-clean."""

import os
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


@pytest.mark.parametrize(("make_rc", "ci_rc"), [(0, 0), (1, 1), (5, 1)])
def test_ci_runs_the_readme_test_command_and_fails_when_nothing_is_collected(tmp_path, make_rc, ci_rc):
    # .ci/run on stand-ins for pip, make and the browser: it must install the torch the README names, run the
    # README's test command with the browser tests required, and fail when make test fails or pytest collected
    # nothing (exit 5, which pytest does not count as a failure).
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    stubs = {"python3": 'echo "python3 $*" >> "$CALLS"',
             "make": 'echo "make $* browser=$ADVLAB_REQUIRE_BROWSER" >> "$CALLS"; exit "$MAKE_RC"',
             "chromium": "exit 0"}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(log),
           "MAKE_RC": str(make_rc)}
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == ci_rc, out.stdout + out.stderr
    readme = (ROOT / "README.md").read_text()
    pins = re.search(r"\.ci/run` runs after installing `([^`]+)`", readme)
    assert pins, "README.md must say which torch .ci/run installs"
    calls = log.read_text().splitlines()
    assert calls[0] == f"python3 -m pip install {pins.group(1)}"
    assert calls[-1] == "make test browser=1"


@pytest.mark.skipif(
    shutil.which("ruff") is None
    and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0,
    reason="ruff is in the dev extra; install it with make install",
)
def test_ruff_clean():
    targets = [p for p in ("advlab", "tests", "benchmarks", "conftest.py", "docs") if (ROOT / p).exists()]
    out = subprocess.run([sys.executable, "-m", "ruff", "check", *targets], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
