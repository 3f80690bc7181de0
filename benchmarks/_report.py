"""What every benchmark script ends with: its markdown table written to a file, or printed with ``--out -``."""

from __future__ import annotations

import sys
from pathlib import Path


def write(md: str, out: str) -> None:
    """Print ``md`` when ``out`` is ``"-"``, else write it to the file ``out`` (and say so on stderr)."""
    if out == "-":
        print(md)
    else:
        Path(out).write_text(md, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
