"""The recipe study behind the zoo's L∞ models (docs/defenses.md, "What made the difference"), reproducible.

    python benchmarks/recipes.py                 # every variant: about 15 minutes on an idle 2-core CPU
    python benchmarks/recipes.py --only pgd-48   # one variant

Each variant trains Wong et al.'s `mnist_net` on the 4,000 fast-profile training images (Adam 3e-3, one-cycle, ±1-pixel
shifts, L∞ ε = 0.3, seed 0) and reports clean and AutoAttack-grade accuracy (the default of
`advlab.eval.robust_accuracy`) on the 1,000 fast test images, and the training time. The variants differ in epochs,
the exponential moving average of the weights (EMA), width and method; the shipped recipes are in
`advlab/defenses/recipes.py`.
Run it alone: two torch jobs on 2 cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import advlab
from advlab import config, data, models, train
from advlab.defenses import adversarial
from advlab.eval import robust_accuracy

BASE = {"batch_size": 128, "optimizer": "adam", "weight_decay": 0.0, "lr": 3e-3, "shift": 1, "eps": 0.3}
PGD = {"steps": 7}
VARIANTS: dict[str, tuple[str, float, dict[str, Any]]] = {  # name: (trainer, width, settings)
    "pgd-12 (first recipe)": ("pgd_at", 1.0, {**PGD, "epochs": 12, "warmup_epochs": 3}),
    "pgd-48": ("pgd_at", 1.0, {**PGD, "epochs": 48, "warmup_epochs": 12}),
    "pgd-48-ema": ("pgd_at", 1.0, {**PGD, "epochs": 48, "warmup_epochs": 12, "ema": 0.995}),
    "pgd-96-ema (shipped)": ("pgd_at", 1.0, {**PGD, "epochs": 96, "warmup_epochs": 24, "ema": 0.995}),
    "pgd-48-ema-width2": ("pgd_at", 2.0, {**PGD, "epochs": 48, "warmup_epochs": 12, "ema": 0.995}),
    "trades-48-ema (shipped)": ("trades", 1.0, {**PGD, "beta": 6.0, "epochs": 48, "ema": 0.995}),
    "free-384-ema": ("free_at", 1.0, {"replays": 8, "step_size": 0.1, "warmup_epochs": 128, "epochs": 384,
                                       "ema": 0.995}),
}


@config.isolated
def run(name: str) -> str:
    trainer, width, settings = VARIANTS[name]
    x, y, _ = data.load("mnist", "train", profile="fast")
    xt, yt, _ = data.load("mnist", "test", profile="fast")
    config.seed_everything(0)
    model = models.mnist_net(width=width)
    start = time.perf_counter()
    getattr(adversarial, trainer)(model, x, y, progress=False, **BASE, **settings)
    seconds = time.perf_counter() - start
    model.eval()
    rep = robust_accuracy(model, xt, yt, 0.3, "inf")
    low, high = rep.interval
    return (f"| {name} | {train.accuracy(model, xt, yt):.1%} | {rep.robust_accuracy:.1%} ({low:.1%}–{high:.1%}) | "
            f"{seconds:.0f} s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run only these variants")
    args = parser.parse_args(argv)
    advlab.set_profile("fast")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | clean | AutoAttack-grade (95 % interval) | training time |\n|---|---|---|---|")
    for name in args.only or VARIANTS:
        print(run(name), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
