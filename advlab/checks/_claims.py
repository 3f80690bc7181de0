"""A notebook cell's claims: each printed with ✓ or ✗, and an ``AssertionError`` if any is false.

The course notebooks state their findings as claims that could fail: an ordering, a threshold with a margin, a
count with a tolerance. The cell that checks them is the one nbval compares with its stored output (the cell's
first line is ``# NBVAL_CHECK_OUTPUT``), so what is compared is the claim, never the last digit of a measured
number; the numbers themselves are shown, at the precision that shows the effect, in the cell above it. Claims
that hold print the same text on every CPU, with every seed and under ``ADVLAB_JITTER``; a false claim fails the
cell, whatever was stored.

Usage in a notebook::

    claims(
        ("logistic regression is fooled at ε = 0.1 (FGSM accuracy < 0.5)", acc_logistic < 0.5),
        ("every model drops below 10 % at ε = 0.3", all(a < 0.1 for a in final)),
    )
"""

from __future__ import annotations

import torch

__all__ = ["claims"]


def _holds(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"a claim's value must be one truth value, got a tensor of shape {tuple(value.shape)}; "
                            "reduce it with .all() or .any()")
        value = value.item()
    if value is None or not isinstance(value, (bool, int)) and not hasattr(value, "__bool__"):
        raise TypeError(f"a claim's value must be a truth value (True/False), got {value!r}")
    return bool(value)


def claims(*pairs: tuple[str, object], title: str | None = None) -> None:
    """Print each ``(statement, holds)`` pair as ``✓ statement`` or ``✗ statement``; raise if any is false.

    Args:
        pairs: ``(statement, value)``; ``value`` is a bool, a NumPy bool or a one-element tensor. The statement
            should name its threshold or ordering, not a measured value (the printed text must not change with
            the last bits of the arithmetic).
        title: an optional first line.

    Raises:
        AssertionError: listing every false claim, after all claims were printed.
    """
    if not pairs:
        raise TypeError("claims() needs at least one (statement, value) pair")
    lines, failed = [] if title is None else [title], []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"each claim is a (statement, value) pair, got {pair!r}")
        statement, value = pair
        ok = _holds(value)
        lines.append(f"{'✓' if ok else '✗'} {statement}")
        if not ok:
            failed.append(statement)
    print("\n".join(lines))
    if failed:
        raise AssertionError(f"{len(failed)} of {len(pairs)} claims do not hold: " + "; ".join(failed))

