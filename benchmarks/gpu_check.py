"""The GPU check: attack correctness on ``cuda`` and the attack benchmark, in under 5 minutes.

    python benchmarks/gpu_check.py [--out DIR]

Runs the oracle and property tests of the attacks (they parametrize over ``cuda`` when it exists) and
then ``benchmarks/attacks.py --device cuda``, writing ``gpu-tests.txt`` and ``benchmarks-gpu.md`` into
DIR (default ``docs/``). Run it whenever a GPU is available and commit the numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_attacks_core.py", "tests/test_pgd.py", "tests/test_min_attacks.py", "tests/test_models.py"]


def _run(cmd: list[str], env: dict[str, str], timeout: int, capture: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run`` that reports a timeout as exit code 124 (with what was captured) instead of raising."""
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=capture, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        msg = f"gpu_check: {' '.join(cmd[1:3])} ran past {timeout} s and was stopped"
        print(msg, file=sys.stderr)
        return subprocess.CompletedProcess(cmd, 124, stdout=out + "\n" + msg, stderr="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for gpu-tests.txt and benchmarks-gpu.md")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("No CUDA device: nothing to check here (the CPU suite covers the rest).", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    tests = _run([sys.executable, "-m", "pytest", "-q", "-k", "cuda or mnist", *TESTS], env, 180, capture=True)
    report = (
        f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n{tests.stdout[-6000:]}\n{tests.stderr[-2000:]}"
    )
    (out / "gpu-tests.txt").write_text(report)
    print(tests.stdout[-1500:])
    bench_cmd = [sys.executable, str(ROOT / "benchmarks" / "attacks.py"), "--device", "cuda", "--reps", "2"]
    bench = _run([*bench_cmd, "--out", str(out / "benchmarks-gpu.md")], env, 240)
    seconds = time.perf_counter() - start
    print(f"gpu_check: tests exit {tests.returncode}, benchmark exit {bench.returncode}, {seconds:.0f} s")
    return tests.returncode or bench.returncode


if __name__ == "__main__":
    raise SystemExit(main())
