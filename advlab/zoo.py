"""The model zoo: ``load(name)`` returns a trained model, training and caching it on first use.

Each entry is a recipe in :data:`RECIPES` (architecture, dataset, training settings per profile, and
optionally a defense's trainer). A trained model is stored as ``<name>-<key>.pt`` (a ``state_dict``)
next to ``<name>-<key>.json`` (the recipe, profile, data fingerprint, advlab version, metrics and the
weights' SHA-256). The key hashes everything that changes the weights, so a stale model is never
reused. Files are written atomically (temp file + ``os.replace``); loads use ``weights_only=True``
and verify the checksum and the shapes, and a corrupt file is rebuilt, never loaded silently.

Small fast-profile checkpoints ship inside the package (``advlab/checkpoints``), so that no notebook
waits for training on Binder. Rebuild and verify them with ``python -m advlab.zoo build NAME --ship``.

Registration from above. The zoo imports only config, data, models and train. The entries whose trainer,
architecture or metric lives in a higher layer are registered by that layer: :mod:`advlab.defenses.recipes` (the
adversarially trained, 1-Lipschitz and noise-trained models, with their trainers and architectures),
:mod:`advlab.vae` (the VAE), :mod:`advlab.eval` (the AutoAttack-grade metric every classifier entry records) and
:mod:`advlab.results` (the cached experiment results that :func:`result` returns), through :func:`register_recipe`
and :func:`register_function`. The zoo never imports them, not even by an import string: the package's top level
(``advlab/__init__.py``), which sits above every layer, leaves a function that imports the registering modules with
:func:`advlab.config.defer_registration`, and the zoo runs it (:func:`advlab.config.complete_registrations`) before
it first looks a name up. So ``zoo.load("mnist-cnn-pgd")`` works after only ``from advlab import zoo``.

A recipe names its trainer, architecture and metrics by registered names. The names are hashed into the key, so the
ones the shipped checkpoints were built with keep their spelling: ``"advlab.lipschitz:lipschitz_mlp"`` was an import
path and is now only a name. Moving or editing a module that computes the same thing keeps every checkpoint.

Experiments too slow for a notebook (a whole table, a sweep) are cached results of :mod:`advlab.results`, one layer
up (``python -m advlab.results``); :func:`result` and :func:`result_info` hand the notebooks' requests to it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import config, data, models, train
from advlab.config import AdvlabError
from advlab.data.splits import stratified_halves

SHIPPED = Path(__file__).parent / "checkpoints"

# The recipes of the models trained by plain advlab.train.fit. "fit" holds fit keyword arguments per profile;
# "trainer" (in registered entries) names a registered function called as trainer(model, x, y, **fit_kwargs)
# instead of fit, and "eval" the registered metrics recorded after training. "arch" is [name, kwargs] (a name of
# advlab.models or a registered architecture), or one per profile.


def adam_fit(**kwargs: Any) -> dict[str, Any]:
    """fit() settings: Adam without weight decay, batches of 128, overridden by ``kwargs``."""
    return {"batch_size": 128, "optimizer": "adam", "weight_decay": 0.0, **kwargs}


def autoattack_eval(eps: float, norm: str | int) -> dict[str, Any]:
    """The metric every classifier entry records: AutoAttack-grade robust accuracy on the profile's test set
    (``"robustness_record"``, registered by :mod:`advlab.eval`: the chain, n, correct, accuracy, 95 % interval)."""
    return {"autoattack_grade": {"fn": "robustness_record", "kwargs": {"eps": eps, "norm": norm}}}


# Metrics older records held that the zoo no longer computes; ``evaluate`` drops them.
_RETIRED_METRICS = ("pgd_accuracy",)


_SMALL_CNN = ["mnist_net", {}]

RECIPES: dict[str, dict[str, Any]] = {
    "mnist-cnn": {
        "description": "Wong et al.'s small MNIST CNN, standard training",
        "arch": _SMALL_CNN,
        "data": "mnist",
        "fit": {"fast": adam_fit(epochs=10, lr=3e-3, shift=1), "full": adam_fit(epochs=10, lr=3e-3, shift=1)},
        "eval": autoattack_eval(0.3, "inf"),
    },
    # Szegedy et al. (survey ③): adversarial examples transfer between models trained on disjoint training sets
    # (notebooks/03_properties.ipynb). The same CNN and recipe as mnist-cnn, each on one half of its training set.
    **{
        f"mnist-cnn-half-{half}": {
            "description": f"mnist-cnn's recipe on half {half.upper()} of its training set (disjoint halves)",
            "arch": _SMALL_CNN,
            "data": "mnist",
            "subset": f"half-{half}",
            "fit": {"fast": adam_fit(epochs=10, lr=3e-3, shift=1), "full": adam_fit(epochs=10, lr=3e-3, shift=1)},
        }
        for half in ("a", "b")
    },
    "mnist-logistic": {
        "description": "multinomial logistic regression on MNIST pixels",
        "arch": ["logistic", {}],
        "data": "mnist",
        "fit": {"fast": adam_fit(epochs=10, lr=1e-2), "full": adam_fit(epochs=5, lr=1e-2)},
    },
    "mnist-mlp": {
        "description": "a 2×256 ReLU MLP on MNIST",
        "arch": ["mlp", {}],
        "data": "mnist",
        "fit": {"fast": adam_fit(epochs=10, lr=3e-3), "full": adam_fit(epochs=10, lr=3e-3)},
    },
    # notebooks/05_robustness_vs_generalization.ipynb: Madry et al.'s capacity figure. mnist-cnn's recipe at smaller
    # widths of Wong et al.'s CNN (their PGD-AT twins, mnist-cnn-w*-pgd, are registered by advlab.defenses.recipes).
    **{
        f"mnist-cnn-w{width:g}": {
            "description": f"mnist-cnn at width ×{width:g} (capacity sweep), standard training",
            "arch": ["mnist_net", {"width": width}],
            "data": "mnist",
            "fit": {"fast": adam_fit(epochs=10, lr=3e-3, shift=1), "full": adam_fit(epochs=10, lr=3e-3, shift=1)},
            "eval": autoattack_eval(0.3, "inf"),
        }
        for width in (0.125, 0.25, 0.5)
    },
    "mnist-cnn-features-d": {
        "description": "the fresh-model recipe of features.PRESETS['mnist'] (20 epochs, no shifts) trained on D itself",
        "arch": _SMALL_CNN,
        "data": "mnist",
        "fit": {"fast": adam_fit(epochs=20, lr=3e-3), "full": adam_fit(epochs=20, lr=3e-3)},
        "eval": autoattack_eval(2.0, 2),
    },
}

# Trainers, architecture builders, metrics and the cached results' lookup that upper layers register by name.
_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def register_recipe(name: str, recipe: dict[str, Any]) -> None:
    """Add (or replace) zoo entry ``name``: registration from above by the layer whose trainer or architecture the
    recipe names (see the module docstring). Its names must be registered with :func:`register_function`."""
    RECIPES[name] = recipe


def register_function(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn`` what recipes mean by ``name``: a ``"trainer"``, an ``"arch"`` builder, an ``"eval"`` metric
    ``fn(model, x_test, y_test, **kwargs)``, or ``"result_info"`` (:mod:`advlab.results`). Returns ``fn``."""
    _FUNCTIONS[name] = fn
    return fn


def function(name: str) -> Callable[..., Any]:
    """The function registered as ``name`` (after the registrations from above have run)."""
    config.complete_registrations()
    if name not in _FUNCTIONS:
        raise AdvlabError(f"No function is registered with the zoo as {name!r}; registered: {sorted(_FUNCTIONS)}. "
                          "The module that defines it registers it with zoo.register_function.")
    return _FUNCTIONS[name]


def names() -> list[str]:
    """Every model name the zoo knows (its own and the registered ones)."""
    config.complete_registrations()
    return sorted(RECIPES)


def recipe(name: str) -> dict[str, Any]:
    """The recipe of a zoo entry (a copy)."""
    config.complete_registrations()
    if name not in RECIPES:
        raise AdvlabError(f"Unknown zoo model {name!r}; choose one of {names()}.")
    return copy.deepcopy(RECIPES[name])


def architecture(name: str, profile: str) -> list:
    """``[architecture, kwargs]`` of a zoo entry; a recipe may give one per profile (``{"fast": …, "full": …}``)."""
    arch = recipe(name)["arch"]
    return arch[profile] if isinstance(arch, dict) else arch


@config.isolated
def build(name: str, profile: str | None = None, seed: int = 0) -> nn.Module:
    """An untrained model with the architecture of zoo entry ``name``, initialised from ``seed``."""
    arch, kwargs = architecture(name, profile or config.profile())
    config.seed_everything(seed)
    if arch in _FUNCTIONS:  # registered by a higher layer, e.g. "advlab.lipschitz:lipschitz_mlp"
        return _FUNCTIONS[arch](**kwargs)
    return models.build(arch, **kwargs)


def cache_key(name: str, profile: str) -> tuple[str, dict[str, Any]]:
    """(key, record) for a zoo entry: the key hashes recipe, profile, data fingerprint and version."""
    rec = recipe(name)
    x, y, _ = data.load(rec["data"], "train", profile=profile)
    weights_matter = {k: v for k, v in rec.items() if k not in ("description", "fit", "eval")}
    weights_matter["arch"] = architecture(name, profile)
    record = {
        "name": name,
        "recipe": {**weights_matter, "fit": rec["fit"][profile]},
        "profile": profile,
        "data_fingerprint": data.fingerprint(x, y),
        "advlab_version": config.VERSION,
    }
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return key, record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def atomic_write(path: Path, write) -> None:
    """Write a file by ``write(tmp_path)`` then ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _try_load(model: nn.Module, pt: Path, meta: Path, key: str) -> dict[str, Any] | None:
    """Load weights into ``model`` if both files exist and check out; else None (with a warning if corrupt)."""
    if not (pt.exists() and meta.exists()):
        return None
    try:
        record = json.loads(meta.read_text())
        if record.get("key") != key:
            raise ValueError(f"record key {record.get('key')} != {key}")
        if record.get("sha256") != _sha256(pt):
            raise ValueError("checksum mismatch (truncated or modified file)")
        state = torch.load(pt, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        return record
    except Exception as err:  # noqa: BLE001 - any corruption means: rebuild
        warnings.warn(f"Zoo checkpoint {pt} is unusable ({err}); it will be rebuilt.", stacklevel=3)
        return None


def load(name: str, *, profile: str | None = None, retrain: bool = False, progress: bool = True) -> nn.Module:
    """A trained zoo model in eval mode on :func:`advlab.device`.

    Looks in the package's shipped checkpoints, then in ``<cache>/zoo``; otherwise trains the model
    (with a progress bar) and caches it. ``retrain=True`` ignores existing files.
    """
    profile = profile or config.profile()
    key, record = cache_key(name, profile)
    model = build(name, profile)
    stem = f"{name}-{profile}-{key}"
    cached = config.cache_dir() / "zoo"
    if not retrain:
        for folder in (SHIPPED, cached):
            if _try_load(model, folder / f"{stem}.pt", folder / f"{stem}.json", key) is not None:
                return config.jitter_weights(model).to(config.device()).eval()
    if config.weight_jitter():
        raise AdvlabError(f"ADVLAB_JITTER is set: it perturbs stored models for a test run, and {name!r} is not "
                          "stored yet. Unset ADVLAB_JITTER to train and cache it first.")
    model = build(name, profile)  # a fresh start: a failed load_state_dict may have copied part of a bad checkpoint
    save(model, name, profile, key, record, cached, progress=progress)
    return config.jitter_weights(model).to(config.device()).eval()


def train_entry(model: nn.Module, name: str, profile: str, progress: bool = True) -> dict[str, Any]:
    """Train ``model`` by recipe ``name`` and return its metrics (the trainer's and :func:`evaluate_entry`'s)."""
    rec = recipe(name)
    x, y, _ = data.load(rec["data"], "train", profile=profile)
    if "subset" in rec:  # "half-a" / "half-b": two disjoint class-balanced halves of the training set
        first, second = stratified_halves(y)
        idx = {"half-a": first, "half-b": second}[rec["subset"]]
        x, y = x[idx], y[idx]
    kwargs = rec["fit"][profile]
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if "trainer" in rec:
        out = function(rec["trainer"])(model, x, y, progress=progress, **kwargs)
        extra = out if isinstance(out, dict) else {}
    else:
        train.fit(model, x, y, progress=progress, **kwargs)
    metrics: dict[str, Any] = {"train_seconds": round(time.perf_counter() - start, 1)}
    metrics.update(evaluate_entry(model, name, profile))
    metrics.update({k: v for k, v in extra.items() if isinstance(v, (int, float, str))})
    return metrics


def evaluate_entry(model: nn.Module, name: str, profile: str, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The test metrics of a trained entry: clean ``test_accuracy`` with ``test_n`` and its 95 % Clopper–Pearson
    ``test_interval_95`` (classifiers), then the recipe's ``"eval"`` metrics (``only``: just those names, and
    ``"test"`` for the clean ones)."""
    rec = recipe(name)
    xt, yt, _ = data.load(rec["data"], "test", profile=profile)
    metrics: dict[str, Any] = {}
    if rec.get("kind", "classifier") == "classifier" and (only is None or "test" in only):
        correct = round(train.accuracy(model, xt, yt) * len(yt))
        metrics["test_accuracy"] = round(correct / len(yt), 4)
        metrics["test_n"] = len(yt)
        metrics["test_interval_95"] = list(train.accuracy_interval(correct, len(yt)))
    for metric, spec in rec.get("eval", {}).items():
        if only is not None and metric not in only:
            continue
        metrics[metric] = function(spec["fn"])(model, xt, yt, **spec.get("kwargs", {}))
    return metrics


def reevaluate(name: str, profile: str, folder: Path, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Recompute the test metrics of the stored checkpoint of ``name`` in ``folder`` and rewrite its record.

    The weights (and so the key and checksum) stay; training metrics stay; metrics the recipe no longer lists
    (:data:`_RETIRED_METRICS`) are dropped; ``only`` limits the recomputation to those metrics (see
    :func:`evaluate_entry`). Used when the evaluation gets stronger, so that no model is retrained just to refresh a
    number.
    """
    key, _ = cache_key(name, profile)
    stem = f"{name}-{profile}-{key}"
    pt, meta = folder / f"{stem}.pt", folder / f"{stem}.json"
    model = build(name, profile)
    record = _try_load(model, pt, meta, key)
    if record is None:
        raise AdvlabError(f"No usable checkpoint of {name!r} ({profile}) in {folder}; build it first.")
    model = model.to(config.device()).eval()
    fresh = evaluate_entry(model, name, profile, only)
    kept = {k: v for k, v in record["metrics"].items() if k not in fresh and k not in _RETIRED_METRICS}
    record["metrics"] = {**kept, **fresh}
    atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n"))
    return record


def _headline(metric: str, value: Any) -> float | None:
    """The accuracy a build is checked on: ``test_accuracy``, or a record's ``"accuracy"`` (``autoattack_grade``);
    None for every other metric (losses, times, counts)."""
    if isinstance(value, dict) and "accuracy" in value:
        return float(value["accuracy"])
    return float(value) if metric == "test_accuracy" and isinstance(value, (int, float)) else None


def save(
    model: nn.Module, name: str, profile: str, key: str, record: dict, folder: Path, progress: bool = True
) -> dict:
    """Train ``model`` for zoo entry ``name`` and write its checkpoint + JSON record into ``folder``."""
    metrics = train_entry(model, name, profile, progress=progress)
    stem = f"{name}-{profile}-{key}"
    pt, meta = folder / f"{stem}.pt", folder / f"{stem}.json"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(pt, lambda tmp: torch.save(state, tmp))
    full = {**record, "key": key, "metrics": metrics, "sha256": _sha256(pt), "torch_version": torch.__version__}
    atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n"))
    return full


def info(name: str, profile: str | None = None) -> dict[str, Any] | None:
    """The JSON record of a stored checkpoint (shipped or cached), or None if none is stored."""
    profile = profile or config.profile()
    key, _ = cache_key(name, profile)
    for folder in (SHIPPED, config.cache_dir() / "zoo"):
        meta = folder / f"{name}-{profile}-{key}.json"
        if meta.exists():
            return json.loads(meta.read_text())
    return None


# ------------------------------------------------------------------------------------- cached experiment results
def result_info(name: str, profile: str | None = None, *, compute: bool = True, progress: bool = True
                ) -> dict[str, Any] | None:
    """The stored record of cached experiment result ``name``, computed and cached if missing (``compute=False``: None
    instead): :func:`advlab.results.result_info`, which registers itself here (the zoo does not import it)."""
    return function("result_info")(name, profile, compute=compute, progress=progress)


def result(name: str, *, profile: str | None = None, progress: bool = True) -> Any:
    """The JSON result of experiment ``name`` (:mod:`advlab.results`): shipped, else cached, else computed now."""
    return result_info(name, profile, progress=progress)["result"]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train entries and check their recorded metrics")
    b.add_argument("names", nargs="*", help="zoo names (default: all shipped entries)")
    b.add_argument("--ship", action="store_true", help="write into advlab/checkpoints (fast profile)")
    b.add_argument("--tolerance", type=float, default=0.02,
                   help="allowed drop of each recorded accuracy, e.g. the AutoAttack-grade one (default 2 pp)")
    e = sub.add_parser("evaluate", help="recompute the test metrics of stored checkpoints (no retraining)")
    e.add_argument("names", nargs="+", help="zoo names")
    e.add_argument("--ship", action="store_true", help="the shipped checkpoints in advlab/checkpoints (fast profile)")
    e.add_argument("--only", nargs="+", help="recompute only these metrics ('test' for the clean accuracy)")
    sub.add_parser("list", help="list zoo entries (cached experiment results: python -m advlab.results list)")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for n in names():
            print(f"{n:24s} {RECIPES[n]['description']}")
        return 0
    if args.cmd == "evaluate":
        for name in args.names:
            profile = "fast" if args.ship else config.profile()
            folder = SHIPPED if args.ship else config.cache_dir() / "zoo"
            only = tuple(args.only) if args.only else None
            print(f"{name}: {reevaluate(name, profile, folder, only)['metrics']}")
        return 0
    targets = args.names or sorted({p.name.split("-fast-")[0] for p in SHIPPED.glob("*-fast-*.json")})
    status = 0
    for name in targets:
        profile = "fast" if args.ship else config.profile()
        key, record = cache_key(name, profile)
        old = info(name, profile)
        folder = SHIPPED if args.ship else config.cache_dir() / "zoo"
        new = save(build(name, profile), name, profile, key, record, folder)
        print(f"{name}: {new['metrics']}")
        if old:
            for metric, value in old["metrics"].items():
                before, after = _headline(metric, value), _headline(metric, new["metrics"].get(metric))
                if before is None or metric in _RETIRED_METRICS:
                    continue
                if after is None or after < before - args.tolerance:
                    print(f"  {metric} dropped: {before:.4f} -> {after}")
                    status = 1
    return status


if __name__ == "__main__":
    # The CLI of the imported module advlab.zoo, where the upper layers register, not of this __main__ copy.
    from advlab import zoo as _zoo

    raise SystemExit(_zoo._main())
