"""Per-cell timings of the course notebooks: where a class waits.

    python benchmarks/notebook_times.py [NB.ipynb ...] [--top 5] [--out docs/notebook-times.md]

Executes each notebook (default: every ``notebooks/*.ipynb``) headless in a fresh kernel with nbclient, one at a
time (never two torch jobs at once on a small machine), reads the per-cell execution times that nbclient records,
and writes a Markdown table: per notebook its total and its ``--top`` slowest cells (with the first line of their
source). Timings depend on the machine and its load: run it on an idle machine and commit the table with the
machine named in it. The notebooks are not modified.

nbclient sometimes stalls between cells (the kernel idle, the client waiting for a message until the cell timeout
runs out; seen with pyzmq 27 / jupyter_client 8.10 / ipykernel 6.31, never under nbval). The wall time then exceeds
the sum of the cells' own times by about the timeout: such a run is repeated (``--tries``) with a short cell
timeout (``--cell-timeout``, above every cell of the fast profile), and the table says how many runs were dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _seconds(cell: dict) -> float:
    """A code cell's execution time from nbclient's timing metadata (0 when it did not run)."""
    ex = cell.get("metadata", {}).get("execution", {})
    start, end = ex.get("iopub.execute_input"), ex.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


STALL_SECONDS = 15.0  # wall time beyond the cells' own times (and the kernel's start) that marks a stalled run


def time_notebook(path: Path, timeout: int = 120) -> tuple[float, list[tuple[int, float, str]]]:
    """Execute ``path`` in a fresh kernel; (wall seconds, [(cell index, seconds, first source line)] per code cell)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    cells = [(i, _seconds(c), next((ln for ln in c.source.splitlines() if ln.strip()), ""))
             for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    return wall, cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    parser.add_argument("--top", type=int, default=5, help="slowest cells listed per notebook")
    parser.add_argument("--out", default=str(ROOT / "docs" / "notebook-times.md"), help="'-' for stdout only")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell (a stall waits this long)")
    parser.add_argument("--tries", type=int, default=3, help="runs per notebook while they stall")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {dt.date.today()}"
    lines = [f"# Notebook timings ({machine})", "",
             "`python benchmarks/notebook_times.py`: each notebook executed alone in a fresh kernel (nbclient).", "",
             "| notebook | total (s) | slowest cells: seconds, cell, first line |", "|---|---|---|"]
    total, dropped = 0.0, 0
    for path in paths:
        for _ in range(args.tries):
            wall, cells = time_notebook(path, args.cell_timeout)
            own = sum(c[1] for c in cells)
            if wall <= own + STALL_SECONDS:
                break
            dropped += 1
            print(f"{path.name}: {wall:.1f} s, but its cells took {own:.1f} s: a stall, again", flush=True)
        total += wall
        slow = sorted(cells, key=lambda c: -c[1])[: args.top]
        detail = "<br>".join(f"{s:.1f} s, [{i}] `{src[:60].replace('|', '/')}`" for i, s, src in slow)
        lines.append(f"| {path.name} | {wall:.1f} | {detail} |")
        print(f"{path.name}: {wall:.1f} s", flush=True)
    lines += ["", f"All {len(paths)} notebooks: {total:.0f} s ({total / 60:.1f} min). Stalled runs dropped and "
              f"repeated: {dropped}."]
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
