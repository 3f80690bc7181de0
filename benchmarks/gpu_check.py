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
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-k", "cuda or mnist", *TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = (
        f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n{tests.stdout[-6000:]}\n{tests.stderr[-2000:]}"
    )
    (out / "gpu-tests.txt").write_text(report)
    print(tests.stdout[-1500:])
    bench = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "attacks.py"),
            "--device",
            "cuda",
            "--out",
            str(out / "benchmarks-gpu.md"),
        ],
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    seconds = time.perf_counter() - start
    print(f"gpu_check: tests exit {tests.returncode}, benchmark exit {bench.returncode}, {seconds:.0f} s")
    return tests.returncode or bench.returncode


if __name__ == "__main__":
    raise SystemExit(main())
