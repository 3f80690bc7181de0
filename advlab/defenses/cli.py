"""The command line of the defenses' experiments: ``python -m advlab.defenses.adversarial WHAT`` (the command
``docs/defenses.md`` and the notebooks cite) or ``python -m advlab.defenses.cli WHAT``, WHAT one of ``table``
(``--strong``: AutoAttack-grade), ``overfitting``, ``leaking``, ``vat`` (:mod:`advlab.defenses.experiments`).
"""

from __future__ import annotations

import argparse
import time

from advlab.defenses import experiments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.defenses.adversarial",
                                     description="Reproduce the numbers of docs/defenses.md.")
    parser.add_argument("what", choices=["table", "overfitting", "leaking", "vat"])
    parser.add_argument("--n", type=int, default=1000, help="test images for the table")
    parser.add_argument("--strong", action="store_true",
                        help="table: the AutoAttack-grade default of advlab.eval.robust_accuracy instead of PGD-40")
    parser.add_argument("--eps", type=float, default=0.3, help="leaking: L∞ radius of training and evaluation")
    parser.add_argument("--mix", type=float, default=0.5, help="leaking: adversarial fraction of each batch")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.what == "table":
        print(experiments.table(args.n, strong=args.strong))
    elif args.what == "overfitting":
        for row in experiments.overfitting_experiment():
            print(row)
    elif args.what == "leaking":
        for name, row in experiments.leaking_experiment(args.eps, mix=args.mix).items():
            print(name, row)
    else:
        print(experiments.vat_experiment())
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
