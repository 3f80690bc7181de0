"""The GPU check: the attacks' tests, every notebook and solution, and the attack benchmark on ``cuda``.

    python benchmarks/gpu_check.py [--out DIR] [--workers 4] [--dry-run]

One prepared command for a lent GPU machine (a session has 15 device-minutes; this finishes within about 8):

1. the oracle, property and device tests of the attacks (they parametrize over ``cuda`` when it exists);
2. every notebook in ``notebooks/`` and every solution in ``solutions/``, executed headless on ``cuda`` (plain
   execution, no output comparison: a GPU's floats differ), ``--workers`` at a time, each in its own kernel; any
   error or failed claim fails the check;
3. ``benchmarks/attacks.py --device cuda`` (after the rest, on an idle GPU).

It writes ``gpu-check.md`` (device, torch, one line per step with its time and verdict), ``gpu-tests.txt`` and
``benchmarks-gpu.md`` into DIR (default ``docs/``); commit them. The notebooks run ``--workers`` at a time, each
with its share of the CPU's cores (``OMP_NUM_THREADS``), the benchmark alone at the end. ``--dry-run`` lists the
plan and needs no GPU (``make test`` runs it).

The lent machine has Python 3.12 and an older torch (2.11) and lacks some of the course's packages (nbclient,
ipykernel and what they need, ipywidgets, mlxtend, torchattacks): ``benchmarks/gpu_wheels.txt`` pins them. Download
their wheels here once (``/.whl/`` is git-ignored; about 17 MB)::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_26_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl -r benchmarks/gpu_wheels.txt

then run there, with ``.whl`` in ``carry`` and a ``timeout_s`` of 540::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site:. && python3 benchmarks/gpu_check.py --out $OUT

``--cpu`` rehearses the same plan on this machine's CPU (the benchmark with ``--quick``, its table not kept), into
``docs/gpu-rehearsal/`` unless ``--out`` says otherwise, to find what would fail there before spending device time
on it. Run it in an environment like the lent machine's: Python 3.12 with its torch and the packages of its image
that the course uses, then the wheels above installed the same way::

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/v312 && /tmp/v312/bin/python -m pip install torch==2.11.0 \
        torchvision==0.26.0 numpy scipy matplotlib tqdm pytest scikit-learn pandas attrs
    export PATH=/tmp/v312/bin:$PATH && python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
        && PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --cpu
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


def _run(cmd: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    """Run ``cmd``; past ``timeout`` s, stop it (SIGTERM, then SIGKILL) and report exit code 124 with what it had
    printed, instead of raising. A stopped notebook's kernel exits with it (ipykernel watches its parent)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout=out, stderr=err)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    last = _last_line(out)
    msg = f"gpu_check: {' '.join(Path(c).name for c in cmd[1:3])} ran past {timeout} s and was stopped" + (
        f" (last: {last})" if last else "")
    print(msg, file=sys.stderr)
    return subprocess.CompletedProcess(cmd, 124, stdout=out + "\n" + msg, stderr=err)


def execute_one(path: Path, timeout: int) -> int:
    """Execute the code cells of one notebook in order, in a fresh kernel whose cwd is the notebook's folder.

    0 if every cell ran; 1 at the first error (or a cell past ``timeout`` s, or a dead kernel), with its last line
    printed. Each cell's start is printed too, so a stopped notebook says where it stood. A plain blocking client
    that polls with a short timeout, not nbclient: nbclient's asyncio polling sometimes never sees the reply of a
    cell that displays a widget while other kernels run (seen here with 2 at a time; jupyter/nbclient#312), and then
    waits out its whole timeout with the kernel idle.
    """
    import re
    from queue import Empty

    import nbformat
    from jupyter_client.manager import start_new_kernel

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(path.parent))

    def fail(text: str) -> int:  # one line (the report's last line), without terminal colours
        print(" ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())[:300], flush=True)
        return 1

    try:
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            print(f"{time.perf_counter() - t0:.0f} s: cell {i} started", flush=True)
            msg_id = kc.execute(cell.source, allow_stdin=False, stop_on_error=True)
            deadline, error = time.monotonic() + timeout, None
            while True:  # IOPub until this request's idle: its outputs, and its error if any
                if time.monotonic() > deadline:
                    return fail(f"cell {i} ran past {timeout} s")
                try:
                    msg = kc.get_iopub_msg(timeout=1.0)
                except Empty:
                    if not km.is_alive():
                        return fail(f"cell {i}: the kernel died")
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                if msg["msg_type"] == "error":
                    error = msg["content"]
                elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
            while True:  # its reply, sent before the idle status
                reply = kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            content = error or reply["content"]
            if reply["content"]["status"] != "ok" or error is not None:
                return fail(f"cell {i}: {content.get('ename', 'error')}: {content.get('evalue', '')}")
        print(f"{time.perf_counter() - t0:.0f} s: all {sum(c.cell_type == 'code' for c in nb.cells)} code cells ran",
              flush=True)
        return 0
    except Empty:
        return fail("no reply from the kernel")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def plan(device: str = "cuda") -> list[tuple[str, list[str], int]]:
    """(name, command, timeout in s) of every step, in the order the report lists them."""
    # addopts= : the project's pytest options name nbval, which only the notebook runs need (not carried there)
    steps = [("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                        "-k", "cuda or mnist", *TESTS], TIMEOUTS["tests"])]
    for nb in notebooks():
        name = str(nb.relative_to(ROOT) if nb.is_relative_to(ROOT) else nb)
        steps.append((name, [sys.executable, str(Path(__file__).resolve()), "--execute-one", str(nb)],
                      TIMEOUTS["notebook"]))
    bench = ["--reps", "2"] if device == "cuda" else ["--quick"]  # a rehearsal checks that it runs, not its speed
    steps.append(("benchmark", [sys.executable, str(ROOT / "benchmarks" / "attacks.py"), "--device", device, *bench],
                  TIMEOUTS["benchmark"]))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="folder for gpu-check.md, gpu-tests.txt, benchmarks-gpu.md "
                        "(default: docs/, or docs/gpu-rehearsal/ with --cpu)")
    parser.add_argument("--workers", type=int, default=4, help="notebooks executed at a time")
    parser.add_argument("--budget", type=int, default=480, help="seconds for everything: a step is cut to what is "
                        "left, and one that cannot start is reported as skipped")
    parser.add_argument("--dry-run", action="store_true", help="list what would run; needs no GPU")
    parser.add_argument("--cpu", action="store_true", help="rehearse the plan on this machine's CPU")
    parser.add_argument("--execute-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute_one:
        return execute_one(Path(args.execute_one), TIMEOUTS["notebook"])
    device = "cpu" if args.cpu else "cuda"
    steps = plan(device)
    if args.dry_run:
        for name, cmd, timeout in steps:
            print(f"{name:50s} {timeout:4d} s  {' '.join(Path(c).name if os.sep in c else c for c in cmd)}")
        total = TIMEOUTS["tests"] + TIMEOUTS["benchmark"] + TIMEOUTS["notebook"] * -(-len(notebooks()) // args.workers)
        print(f"{len(steps)} steps; at most {min(total, args.budget)} s with {args.workers} notebook workers "
              f"(budget {args.budget} s)")
        return 0
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: nothing to check here (the CPU suite covers the rest; --cpu rehearses the plan).",
              file=sys.stderr)
        return 2
    out = Path(args.out or (ROOT / "docs" / ("gpu-rehearsal" if args.cpu else "")))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           **({"CUDA_VISIBLE_DEVICES": ""} if args.cpu else {})}  # a rehearsal stays on the CPU
    # the steps that run side by side share the cores: torch's default (every core per process) oversubscribes them,
    # and its spinning threads then slow each step far more than the sharing alone (here 4 notebooks on 2 cores took
    # 10-17x their time alone); the benchmark runs alone, on every core
    threads = str(max(1, (os.cpu_count() or 1) // max(1, args.workers)))
    shared = {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    start = time.perf_counter()
    results: dict[str, tuple[int, float, str]] = {}

    deadline = start + args.budget

    def run_step(step: tuple[str, list[str], int], env: dict[str, str] = shared) -> None:
        name, cmd, timeout = step
        t0 = time.perf_counter()
        left = int(deadline - t0)
        if left < 10:
            results[name] = (125, 0.0, "skipped: the budget was spent")
            print(f"gpu_check: {name}: skipped (budget)", flush=True)
            return
        done = _run(cmd, env, min(timeout, left))
        results[name] = (done.returncode, time.perf_counter() - t0, done.stdout + "\n" + done.stderr)
        print(f"gpu_check: {name}: {'ok' if done.returncode == 0 else f'FAILED ({done.returncode})'} "
              f"in {results[name][1]:.0f} s", flush=True)

    *work, bench = steps  # the benchmark runs last, alone, on an idle GPU
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        list(pool.map(run_step, work))
    table = "-" if args.cpu else str(out / "benchmarks-gpu.md")  # a rehearsal's --quick table shows no speed: not kept
    run_step((bench[0], [*bench[1], "--out", table], bench[2]), env)
    seconds = time.perf_counter() - start

    tests_out = results["tests"][2]
    machine = torch.cuda.get_device_name(0) if device == "cuda" else "no GPU, a rehearsal on the CPU"
    (out / "gpu-tests.txt").write_text(f"# {machine}, torch {torch.__version__}\n{tests_out[-8000:]}\n")
    command = "python benchmarks/gpu_check.py" + (" --cpu" if args.cpu else "")
    lines = [f"# GPU check: {machine}, torch {torch.__version__}, Python {sys.version.split()[0]}", "",
             f"`{command}`, {seconds:.0f} s in all ({args.workers} notebooks at a time). Notebooks are executed, not "
             "compared: a GPU's floats differ." + (" On the CPU the benchmark runs with `--quick`: it shows that the "
                                                    "step runs, not a speed." if args.cpu else ""), "",
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
