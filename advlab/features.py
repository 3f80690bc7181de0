"""Robust and non-robust features (Ilyas et al., 2019, "Adversarial Examples Are Not Bugs, They Are Features").

Four training sets are built from a training set D and tested on D's *original* test set (survey Figure 6):

* **D_R** ("robust features"): for every training image x, find an image x_r whose penultimate representation
  under an *adversarially trained* model matches x's, ``min_{x_r} ||g(x_r) - g(x)||_2``, starting the search
  from *another* random training image; keep x's label. Only features the robust model uses survive.
* **D_NR** ("non-robust features"): the same inversion with a *standard* model.
* **D_rand** / **D_det**: targeted L2 PGD on a standard model towards a target t, relabelled t. t is random
  (D_rand) or ``(y + 1) mod C`` (D_det). The images still look like class y; only the non-robust features
  point at t, so a model trained on them can only beat chance on the real test set by using those features.

:func:`experiment` trains a fresh standard model on each set and reports clean and L2-PGD accuracy on the
original test set (the survey's Figure 6(b)); ``python -m advlab.features --dataset mnist`` prints the table.
Fast-profile MNIST takes about 15 minutes on a busy 2-core CPU once the zoo models exist; the CIFAR-10 preset
(``--dataset cifar10 --profile full``) follows Ilyas et al.'s settings and needs a GPU. See ``docs/features.md``.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from advlab import config, data, models, train, zoo
from advlab.attacks import next_class, pgd, random_targets
from advlab.attacks.engine import Rows, ascend, select_rows
from advlab.attacks.tensors import check_inputs, eval_mode, on_model_device
from advlab.config import AdvlabError

# --------------------------------------------------------------------------------------------- representations


def penultimate(model: nn.Module) -> nn.Sequential:
    """g: ``model`` without its last ``nn.Linear`` (the representation the classifier's last layer reads).

    ``model`` must be an ``nn.Sequential`` ending in ``nn.Linear`` (every :mod:`advlab.models` architecture is).
    The returned module shares the parameters of ``model`` and is in the same train/eval mode.
    """
    if not isinstance(model, nn.Sequential) or len(model) < 2 or not isinstance(model[-1], nn.Linear):
        raise AdvlabError(
            "penultimate() needs an nn.Sequential whose last layer is nn.Linear (like advlab.models.*); "
            f"got {type(model).__name__}. Pass the representation g yourself to invert_representation()."
        )
    g = model[:-1]
    g.train(model.training)
    return g


class Inversion(NamedTuple):
    """The result of :func:`invert_representation` on N inputs.

    Attributes:
        x: (N, *) images x_r in [0, 1] whose representation approximates the target's.
        start_distance: (N,) ``||g(x_start) - g(x_target)||_2``.
        distance: (N,) ``||g(x_r) - g(x_target)||_2`` at the returned (best) iterate.
    """

    x: Tensor
    start_distance: Tensor
    distance: Tensor


def _rep_distance(g: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    return (g(x).flatten(1) - target).norm(dim=1)


@on_model_device(model="g", x="x_target")
def invert_representation(
    g: nn.Module,
    x_target: Tensor,
    x_start: Tensor,
    steps: int = 1000,
    step_size: float = 0.1,
    decay: bool = True,
    batch_size: int = 500,
) -> Inversion:
    """Minimise ``||g(x_r) - g(x_target)||_2`` over images x_r in [0, 1], starting from ``x_start``.

    Normalised-gradient (L2 steepest-descent) steps in pixel space, clamped to [0, 1] after each step, with no
    bound on the distance to ``x_start`` (Ilyas et al.: 1000 steps of size 0.1). With ``decay`` the step shrinks
    linearly to 0 so the walk settles instead of oscillating at the step length; the best iterate per sample is
    kept. Batched (``batch_size`` images at a time), gradients w.r.t. the input only, g in eval mode. One call of
    the attack engine (:func:`advlab.attacks.engine.ascend`) with the box as the feasible set.

    Args:
        g: a representation (N, *) -> (N, ...), e.g. :func:`penultimate` of a model.
        x_target: (N, *) images in [0, 1] whose representation is matched.
        x_start: (N, *) starting images in [0, 1] (Ilyas: other random training images).
        steps: gradient steps; step_size: L2 length of a step in pixel units.
    """
    x_target, _ = check_inputs(x_target)
    x_start, _ = check_inputs(x_start)
    if x_start.shape != x_target.shape:
        raise AdvlabError(
            f"x_start {tuple(x_start.shape)} and x_target {tuple(x_target.shape)} must have the same shape."
        )
    if int(steps) != steps or steps < 0:
        raise AdvlabError(f"steps must be a non-negative integer, got {steps!r}.")
    if not step_size > 0:
        raise AdvlabError(f"step_size must be > 0 (an L2 length in pixel units), got {step_size!r}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise AdvlabError(f"batch_size must be a positive integer, got {batch_size!r}.")
    outs, starts, dists = [], [], []
    with eval_mode(g):
        for i in range(0, len(x_target), int(batch_size)):
            xt, xs = x_target[i : i + batch_size], x_start[i : i + batch_size]
            with torch.no_grad():
                target = g(xt).flatten(1)
                start_d = _rep_distance(g, xs, target)

            def objective(z: Tensor, rows: Rows, target: Tensor = target) -> tuple[Tensor, None]:
                return -_rep_distance(g, z, select_rows(target, rows)), None  # the engine maximises: minus the distance

            run = ascend(objective, xs, lambda z, rows: z.clamp(0, 1), int(steps), step_size, 2.0, decay=decay)
            outs.append(run.z)
            starts.append(start_d)
            dists.append(-run.value)
    return Inversion(torch.cat(outs), torch.cat(starts), torch.cat(dists))


# ----------------------------------------------------------------------------------------------------- datasets


class FeatureDataset(NamedTuple):
    """A constructed training set.

    Attributes:
        x: (M, *) images in [0, 1]; y: (M,) labels they are trained with.
        index: (M,) index into the source set of the image each example was made from (for D_R/D_NR: the target
            image whose representation was matched; for D_rand/D_det: the attacked image).
        info: (M,) per-example diagnostic: final representation distance (D_R/D_NR) or L2 perturbation norm
            (D_rand/D_det).
        attempted: number of source images processed (M < attempted when unsuccessful attacks were dropped).
    """

    x: Tensor
    y: Tensor
    index: Tensor
    info: Tensor
    attempted: int


def other_indices(n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,) a random index ``j != i`` for each i in ``range(n)`` (uniform over the n - 1 others)."""
    if n < 2:
        raise AdvlabError(f"Need at least 2 images to start each inversion from another one, got {n}.")
    return (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n


@on_model_device
def representation_dataset(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int = 1000,
    step_size: float = 0.1,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
) -> FeatureDataset:
    """D_R (robust ``model``) or D_NR (standard ``model``): invert g = :func:`penultimate` of ``model``.

    Each x_i's representation is matched starting from another random training image x_j (j != i); the result
    keeps the label y_i. ``info`` holds ``||g(x_r) - g(x_i)||_2 / ||g(x_j) - g(x_i)||_2``, the fraction of the
    starting distance left (small = good inversion).
    """
    x, y = check_inputs(x, y)
    start = x[other_indices(len(x), generator).to(x.device)]
    inv = invert_representation(penultimate(model), x, start, steps=steps, step_size=step_size, batch_size=batch_size)
    ratio = inv.distance / inv.start_distance.clamp_min(1e-12)
    return FeatureDataset(inv.x, y.clone(), torch.arange(len(x), device=x.device), ratio, len(x))


@on_model_device(model="robust_model")
def robust_dataset(robust_model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> FeatureDataset:
    """D_R: :func:`representation_dataset` with an adversarially trained model."""
    return representation_dataset(robust_model, x, y, **kwargs)


@on_model_device(model="standard_model")
def nonrobust_dataset(standard_model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> FeatureDataset:
    """D_NR: :func:`representation_dataset` with a standard model."""
    return representation_dataset(standard_model, x, y, **kwargs)


@on_model_device
def adversarial_dataset(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    targets: str = "rand",
    eps: float = 0.5,
    steps: int = 100,
    step_size: float | None = 0.1,
    classes: int | None = None,
    keep: str = "successful",
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
) -> FeatureDataset:
    """D_rand (``targets="rand"``) or D_det (``targets="det"``): targeted L2 PGD on a standard model, relabelled.

    t is uniform over the classes other than y (D_rand) or ``(y + 1) mod C`` (D_det). Each x gets
    ``x_adv = argmin_{||x' - x||_2 <= eps} CE(model(x'), t)`` (targeted :func:`advlab.attacks.pgd`, Ilyas et al.:
    eps 0.5, 100 steps of 0.1 on CIFAR-10) and the label t.

    ``keep="successful"`` (default, as Ilyas et al.) keeps only the examples the standard model classifies as t;
    ``keep="all"`` keeps every attacked image, with label t either way.
    """
    x, y = check_inputs(x, y)
    if targets not in ("rand", "det"):
        raise AdvlabError(f"targets must be 'rand' (D_rand) or 'det' (D_det), got {targets!r}.")
    if keep not in ("successful", "all"):
        raise AdvlabError(f"keep must be 'successful' or 'all', got {keep!r}.")
    if classes is None:
        with eval_mode(model), torch.no_grad():
            classes = model(x[:1]).shape[1]
    t = random_targets(y, classes, generator=generator) if targets == "rand" else next_class(y, classes)
    advs, succ, norms = [], [], []
    for i in range(0, len(x), int(batch_size)):
        sl = slice(i, i + int(batch_size))
        res = pgd(model, x[sl], t[sl], eps, norm=2, steps=steps, step_size=step_size, targeted=True,
                  random_start=False)
        advs.append(res.x_adv)
        succ.append(res.success)
        norms.append(res.norms)
    x_adv, success, norm = torch.cat(advs), torch.cat(succ), torch.cat(norms)
    kept = success if keep == "successful" else torch.ones_like(success)
    idx = kept.nonzero().squeeze(1)
    return FeatureDataset(x_adv[idx], t[idx], idx, norm[idx], len(x))


# -------------------------------------------------------------------------------------------------- experiment

#: Settings per dataset. ``standard_zoo`` / ``robust_zoo`` name zoo entries used when they exist (else the
#: models are trained here with ``fit`` / ``robust_fit``). ``eps_train`` is the L2 radius of the robust model's
#: PGD adversarial training, ``eps_build`` the L2 radius of D_rand / D_det, ``eps_eval`` the L2 radius of the
#: evaluation attack; all in pixel units. ``train_n`` keeps a class-balanced subset of the training set (None: all).
PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "arch": ["mnist_net", {}],
        "train_n": None,
        "fit": {"epochs": 20, "batch_size": 128, "lr": 3e-3, "optimizer": "adam", "weight_decay": 0.0},
        "standard_zoo": "mnist-cnn",
        "robust_zoo": "mnist-cnn-l2",
        "eps_train": 2.0,
        "robust_fit": {"epochs": 12, "batch_size": 128, "lr": 3e-3, "optimizer": "adam", "weight_decay": 0.0},
        "train_steps": 7,
        "invert_steps": 100,
        "invert_step_size": 0.5,
        "eps_build": 3.0,
        "build_steps": 50,
        "build_step_size": 0.2,
        "eps_eval": 2.0,
        "eval_steps": 20,
        "eval_n": 1000,
    },
    "cifar10": {  # Ilyas et al. (2019), appendix C, with PreAct-ResNet-18 instead of ResNet-50
        "arch": ["preact_resnet18", {}],
        "train_n": None,
        "fit": {"epochs": 150, "batch_size": 128, "lr": 0.1, "optimizer": "sgd", "weight_decay": 5e-4, "shift": 4},
        "standard_zoo": "cifar10-resnet18",
        "robust_zoo": "cifar10-resnet18-l2",
        "eps_train": 0.5,
        "robust_fit": {"epochs": 150, "batch_size": 128, "lr": 0.1, "optimizer": "sgd", "weight_decay": 5e-4,
                       "shift": 4},
        "train_steps": 7,
        "invert_steps": 1000,
        "invert_step_size": 0.1,
        "eps_build": 0.5,
        "build_steps": 100,
        "build_step_size": 0.1,
        "eps_eval": 0.25,
        "eval_steps": 20,
        "eval_n": 10000,
    },
}

#: Published CIFAR-10 numbers of Ilyas et al. (2019), Figure 2(b) / 3 (clean %, L2 ε=0.25 PGD %).
PUBLISHED_CIFAR10 = {
    "D_R": (84.0, 48.0),
    "D_NR": (88.0, 0.0),
    "D_rand": (63.0, None),
    "D_det": (44.0, None),
}


@dataclass
class Row:
    """One line of the table: a training set and the test accuracies of a model trained on it (fractions)."""

    name: str
    n_train: int
    clean: float
    robust: float
    note: str = ""


@dataclass
class FeatureTable:
    """Figure 6(b)-style results of :func:`experiment`."""

    dataset: str
    eps_eval: float
    eps_build: float
    rows: list[Row] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise AdvlabError(f"No row {name!r}; rows are {[r.name for r in self.rows]}.")

    def markdown(self) -> str:
        lines = [
            f"| training set | n train | clean acc. on D test | L2 PGD acc. (ε={self.eps_eval:g}) | note |",
            "|---|---:|---:|---:|---|",
        ]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.n_train} | {100 * r.clean:.1f}% | {100 * r.robust:.1f}% | {r.note} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()


def _robust_perturb(eps: float, steps: int) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    def perturb(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        return pgd(model, xb, yb, eps, norm=2, steps=steps).x_adv

    return perturb


@config.isolated
def _model(preset: dict[str, Any], seed: int) -> nn.Module:
    arch, kwargs = preset["arch"]
    config.seed_everything(seed)
    return models.build(arch, **kwargs).to(config.device())


def _zoo_or_train(
    name: str | None, preset: dict, x: Tensor, y: Tensor, robust: bool, profile: str, progress: bool
) -> tuple[nn.Module, str]:
    if name in zoo.names():
        return zoo.load(name, profile=profile, progress=progress), f"zoo {name!r}"
    model = _model(preset, seed=1 if robust else 0)
    if robust:
        perturb = _robust_perturb(preset["eps_train"], preset["train_steps"])
        train.fit(model, x, y, perturb=perturb, progress=progress, **preset["robust_fit"])
        return model, f"L2 PGD-AT ε={preset['eps_train']:g}, trained here"
    train.fit(model, x, y, progress=progress, **preset["fit"])
    return model, "trained here"


@on_model_device
def evaluate(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 50, batch_size: int = 500
             ) -> tuple[float, float]:
    """(clean accuracy, accuracy under L2 PGD of radius ``eps``) of ``model`` on (x, y), as fractions."""
    x, y = check_inputs(x, y)
    clean, robust = 0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        res = pgd(model, xb, yb, eps, norm=2, steps=steps)
        with torch.no_grad():
            clean += int((model(xb).argmax(1) == yb).sum())
        robust += int((~res.success).sum())
    return clean / len(x), robust / len(x)


@config.isolated
def experiment(
    dataset: str = "mnist",
    *,
    profile: str | None = None,
    standard_model: nn.Module | None = None,
    robust_model: nn.Module | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FeatureTable:
    """Build D_R, D_NR, D_rand and D_det from ``dataset``'s training set and test fresh models on each.

    Rows: "D (standard)" and "D (adv. trained)" are the two source models themselves; the others are fresh
    ``preset["arch"]`` models trained with ``preset["fit"]`` on the constructed sets. Accuracies are on the first
    ``eval_n`` images of the original test set, clean and under L2 PGD of radius ``eps_eval``.

    Args:
        dataset: a key of :data:`PRESETS` (``"mnist"`` or ``"cifar10"``).
        standard_model / robust_model: the models that build the sets; default: the preset's zoo entries
            when the zoo has them, else trained here (robust: L2 PGD adversarial training at ``eps_train``).
        overrides: preset entries to replace (e.g. ``{"invert_steps": 100}``).
    """
    if dataset not in PRESETS:
        raise AdvlabError(f"No feature-experiment preset for {dataset!r}; choose one of {sorted(PRESETS)}.")
    preset = {**copy.deepcopy(PRESETS[dataset]), **(overrides or {})}
    profile = profile or config.profile()
    dev = config.device()
    x, y, classes = data.load(dataset, "train", n=preset["train_n"], profile=profile)
    xt, yt, _ = data.load(dataset, "test", profile=profile)
    x, y = x.to(dev), y.to(dev)
    xt, yt = xt[: preset["eval_n"]].to(dev), yt[: preset["eval_n"]].to(dev)
    gen = config.seed_everything(seed)
    table = FeatureTable(dataset, float(preset["eps_eval"]), float(preset["eps_build"]))
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        table.seconds[name] = round(now - tick, 1)
        tick = now

    notes = {}
    if standard_model is None:
        standard_model, notes["std"] = _zoo_or_train(preset["standard_zoo"], preset, x, y, False, profile, progress)
    if robust_model is None:
        robust_model, notes["rob"] = _zoo_or_train(preset["robust_zoo"], preset, x, y, True, profile, progress)
    standard_model.eval()
    robust_model.eval()
    lap("source models")
    ev = {"eps": preset["eps_eval"], "steps": preset["eval_steps"]}
    table.rows.append(Row("D (standard)", len(x), *evaluate(standard_model, xt, yt, **ev), notes.get("std", "given")))
    table.rows.append(Row("D (adv. trained)", len(x), *evaluate(robust_model, xt, yt, **ev), notes.get("rob", "given")))
    lap("evaluate source models")

    inv = {"steps": preset["invert_steps"], "step_size": preset["invert_step_size"], "generator": gen}
    build = {"eps": preset["eps_build"], "steps": preset["build_steps"], "step_size": preset["build_step_size"],
             "classes": len(classes)}
    sets: dict[str, FeatureDataset] = {}
    sets["D_R"] = robust_dataset(robust_model, x, y, **inv)
    lap("build D_R")
    sets["D_NR"] = nonrobust_dataset(standard_model, x, y, **inv)
    lap("build D_NR")
    sets["D_rand"] = adversarial_dataset(standard_model, x, y, targets="rand", generator=gen, **build)
    lap("build D_rand")
    sets["D_det"] = adversarial_dataset(standard_model, x, y, targets="det", **build)
    lap("build D_det")
    for i, (name, ds) in enumerate(sets.items()):
        if len(ds.y) == 0:
            note = "no successful attack: raise eps_build or build_steps"
            table.rows.append(Row(name, 0, math.nan, math.nan, note))
            continue
        model = _model(preset, seed=seed + 10 + i)
        m = len(ds.y) - (len(ds.y) % preset["fit"].get("batch_size", 128) == 1 and len(ds.y) > 1)
        # (a last batch of one image would break batch-norm training, so such a straggler is dropped)
        train.fit(model, ds.x[:m], ds.y[:m], progress=progress, seed=seed + i, **preset["fit"])
        if name in ("D_R", "D_NR"):
            note = f"median distance left {100 * ds.info.median().item():.0f}% of start"
        else:
            note = f"{len(ds.y)}/{ds.attempted} attacks succeeded (kept)"
        table.rows.append(Row(name, len(ds.y), *evaluate(model, xt, yt, **ev), note))
        lap(f"train + evaluate on {name}")
    table.seconds["total"] = round(sum(table.seconds.values()), 1)
    return table


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.features", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=sorted(PRESETS))
    parser.add_argument("--profile", default=None, choices=config.PROFILES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a preset number, e.g. --set invert_steps=100 eps_eval=1.5")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in PRESETS[args.dataset] or not value:
            raise AdvlabError(f"--set needs KEY=VALUE with KEY one of {sorted(PRESETS[args.dataset])}, got {item!r}.")
        overrides[key] = float(value) if "." in value or "e" in value.lower() else int(value)
    table = experiment(args.dataset, profile=args.profile, overrides=overrides, seed=args.seed)
    print(table.markdown())
    print(f"\nε_build (D_rand/D_det) = {table.eps_build:g}, ε_eval = {table.eps_eval:g} (L2, pixel units)")
    print("seconds:", table.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
