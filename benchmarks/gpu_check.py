"""The GPU check: the attacks' tests, every notebook and solution, and the attack benchmark on ``cuda``.

    python benchmarks/gpu_check.py [--out DIR] [--workers 4] [--dry-run]

One prepared command for a lent GPU machine (a session has 15 device-minutes; this finishes within about 8):

1. the oracle, property and device tests of the attacks (they parametrize over ``cuda`` when it exists);
2. every notebook in ``notebooks/`` and every solution in ``solutions/``, executed headless on ``cuda`` (plain
   execution, no output comparison: a GPU's floats differ), ``--workers`` at a time, each in its own kernel; any
   error or failed claim fails the check;
3. ``benchmarks/attacks.py --device cuda`` (after the rest, on an idle GPU).

It writes ``gpu-check.md`` (device, torch, one line per step with its time and verdict), ``gpu-tests.txt`` and
``benchmarks-gpu.md`` into DIR (default ``docs/``); commit them. ``--dry-run`` lists the plan and needs no GPU
(``make test`` runs it).

The lent machine has Python 3.12 and an older torch and lacks some of the course's packages. Prepare their wheels
here (``/.whl/`` is git-ignored) and carry them::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl nbclient nbformat jupyter_client jupyter_core ipykernel \\
        ipywidgets widgetsnbextension jupyterlab_widgets comm mlxtend torchattacks ...

then run there, with ``.whl`` in ``carry``::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. \\
        && python3 benchmarks/gpu_check.py --out $OUT
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_attacks_core.py", "tests/test_pgd.py", "tests/test_min_attacks.py", "tests/test_models.py",
         "tests/test_devices.py"]
TIMEOUTS = {"tests": 150, "notebook": 300, "benchmark": 150}  # seconds per step (a notebook: each one)


def notebooks() -> list[Path]:
    """The notebooks the check executes: the course and the solutions (not the exercises, whose stubs raise)."""
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def _run(cmd: list[str], env: dict[str, str], timeout: int, capture: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run`` that reports a timeout as exit code 124 (with what was captured) instead of raising."""
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=capture, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        msg = f"gpu_check: {' '.join(cmd[1:3])} ran past {timeout} s and was stopped"
        print(msg, file=sys.stderr)
        return subprocess.CompletedProcess(cmd, 124, stdout=out + "\n" + msg, stderr="")


def execute_one(path: Path, timeout: int) -> int:
    """Execute one notebook in a fresh kernel (cwd: its folder); 0 if every cell ran, 1 with the error printed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        print(lines[-1] if lines else "cell error")
        return 1
    return 0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def plan() -> list[tuple[str, list[str], int]]:
    """(name, command, timeout in s) of every step, in the order the report lists them."""
    steps = [("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda or mnist",
                        *TESTS], TIMEOUTS["tests"])]
    for nb in notebooks():
        steps.append((str(nb.relative_to(ROOT)), [sys.executable, str(Path(__file__).resolve()), "--execute-one",
                                                    str(nb)], TIMEOUTS["notebook"]))
    steps.append(("benchmark", [sys.executable, str(ROOT / "benchmarks" / "attacks.py"), "--device", "cuda",
                                "--reps", "2"], TIMEOUTS["benchmark"]))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for gpu-check.md, gpu-tests.txt, "
                        "benchmarks-gpu.md")
    parser.add_argument("--workers", type=int, default=4, help="notebooks executed at a time")
    parser.add_argument("--budget", type=int, default=480, help="seconds for everything: a step is cut to what is "
                        "left, and one that cannot start is reported as skipped")
    parser.add_argument("--dry-run", action="store_true", help="list what would run; needs no GPU")
    parser.add_argument("--execute-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute_one:
        return execute_one(Path(args.execute_one), TIMEOUTS["notebook"])
    steps = plan()
    if args.dry_run:
        for name, cmd, timeout in steps:
            print(f"{name:50s} {timeout:4d} s  {' '.join(Path(c).name if os.sep in c else c for c in cmd)}")
        total = TIMEOUTS["tests"] + TIMEOUTS["benchmark"] + TIMEOUTS["notebook"] * -(-len(notebooks()) // args.workers)
        print(f"{len(steps)} steps; at most {min(total, args.budget)} s with {args.workers} notebook workers "
              f"(budget {args.budget} s)")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: nothing to check here (the CPU suite covers the rest).", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    start = time.perf_counter()
    results: dict[str, tuple[int, float, str]] = {}

    deadline = start + args.budget

    def run_step(step: tuple[str, list[str], int]) -> None:
        name, cmd, timeout = step
        t0 = time.perf_counter()
        left = int(deadline - t0)
        if left < 10:
            results[name] = (125, 0.0, "skipped: the budget was spent")
            print(f"gpu_check: {name}: skipped (budget)", flush=True)
            return
        done = _run(cmd, env, min(timeout, left), capture=True)
        results[name] = (done.returncode, time.perf_counter() - t0, done.stdout + "\n" + done.stderr)
        print(f"gpu_check: {name}: {'ok' if done.returncode == 0 else f'FAILED ({done.returncode})'} "
              f"in {results[name][1]:.0f} s", flush=True)

    *work, bench = steps  # the benchmark runs last, alone, on an idle GPU
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        list(pool.map(run_step, work))
    run_step((bench[0], [*bench[1], "--out", str(out / "benchmarks-gpu.md")], bench[2]))
    seconds = time.perf_counter() - start

    tests_out = results["tests"][2]
    (out / "gpu-tests.txt").write_text(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n"
                                       f"{tests_out[-8000:]}\n")
    lines = [f"# GPU check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, Python "
             f"{sys.version.split()[0]}", "", f"`python benchmarks/gpu_check.py`, {seconds:.0f} s in all "
             f"({args.workers} notebooks at a time). Notebooks are executed, not compared: a GPU's floats differ.", "",
             "| step | result | seconds | last line |", "|---|---|---|---|"]
    for name, _, _ in steps:
        code, secs, text = results[name]
        verdict = {0: "ok", 124: "timeout", 125: "skipped"}.get(code, f"failed ({code})")
        lines.append(f"| {name} | {verdict} | {secs:.0f} | {_last_line(text).replace('|', '/')} |")
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    failed = [name for name, (code, _, _) in results.items() if code != 0]
    print(f"gpu_check: {len(results) - len(failed)} of {len(results)} steps ok, {seconds:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
