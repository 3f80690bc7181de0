"""The model zoo: ``load(name)`` returns a trained model, training and caching it on first use.

Each entry is a recipe in :data:`RECIPES` (architecture, dataset, training settings per profile, and
optionally a defense's trainer). A trained model is stored as ``<name>-<key>.pt`` (a ``state_dict``)
next to ``<name>-<key>.json`` (the recipe, profile, data fingerprint, advlab version, metrics and the
weights' SHA-256). The key hashes everything that changes the weights, so a stale model is never
reused. Files are written atomically (temp file + ``os.replace``); loads use ``weights_only=True``
and verify the checksum and the shapes, and a corrupt file is rebuilt, never loaded silently.

Small fast-profile checkpoints ship inside the package (``advlab/checkpoints``), so that no notebook
waits for training on Binder. Rebuild and verify them with ``python -m advlab.zoo build NAME --ship``.

Experiments too slow for a notebook (a whole table, a sweep) are entries of :data:`RESULTS`: ``result(name)``
returns their JSON result, computed once and cached the same way (shipped in ``advlab/checkpoints/results``,
else ``<cache>/results``, else computed). Their key also hashes the zoo keys of the models they use and the
source files they depend on, so editing such a file makes the stored result stale. Rebuild and ship one with
``python -m advlab.zoo result NAME --ship``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import importlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import advlab
from advlab import config, data, models, train
from advlab.config import AdvlabError

SHIPPED = Path(__file__).parent / "checkpoints"

# One table of recipes. "fit" holds advlab.train.fit keyword arguments per profile; "trainer" (optional)
# names "module:function" called as trainer(model, x, y, **fit_kwargs) instead of fit, and "eval" lists
# the metrics recorded after training. "arch" is [name, kwargs], or one per profile.


def _adam(**kwargs: Any) -> dict[str, Any]:
    """fit() settings: Adam without weight decay, batches of 128, overridden by ``kwargs``."""
    return {"batch_size": 128, "optimizer": "adam", "weight_decay": 0.0, **kwargs}


# The fast L∞ PGD-AT recipe (#16): 96 epochs (8× the first version's 12) with a 24-epoch ε warm-up and an EMA of the
# weights. Measured on the 1,000 fast test images, AutoAttack-grade at ε = 0.3 (docs/defenses.md): 12 epochs 68.4 %,
# 48 epochs 85.4 %, 48 + EMA 85.7 %, 96 + EMA 87.3 %: the number of weight updates did most of it, the EMA little.
_FAST_PGD_LINF = {"steps": 7, "warmup_epochs": 24, "epochs": 96, "ema": 0.995, "lr": 3e-3, "shift": 1}


def _pgd_at_fit(
    eps: float, full_step: float | None = None, fast: dict[str, Any] | None = None, **attack: Any
) -> dict[str, dict[str, Any]]:
    """Both profiles of Madry et al.'s PGD adversarial training at radius ``eps`` (extra ``attack`` settings such
    as ``norm`` go to both): fast = :data:`_FAST_PGD_LINF` unless ``fast`` is given; full = 40 steps (step
    ``full_step`` if given), 60 epochs."""
    step = {} if full_step is None else {"step_size": full_step}
    return {
        "fast": _adam(eps=eps, **attack, **(_FAST_PGD_LINF if fast is None else fast)),
        "full": _adam(eps=eps, **attack, steps=40, **step, warmup_epochs=5, epochs=60, batch_size=50, lr=1e-3),
    }


def _aa_eval(eps: float, norm: str | int) -> dict[str, Any]:
    """The metric every classifier entry records: AutoAttack-grade robust accuracy on the profile's test set
    (:func:`advlab.eval.robustness_record`: the chain, n, correct, accuracy and its 95 % interval)."""
    return {"autoattack_grade": {"fn": "advlab.eval:robustness_record", "kwargs": {"eps": eps, "norm": norm}}}


# Metrics older records held that the zoo no longer computes; ``evaluate`` drops them.
_RETIRED_METRICS = ("pgd_accuracy",)


_SMALL_CNN = ["mnist_net", {}]
_ROBUST_ARCH = {"fast": _SMALL_CNN, "full": ["madry_cnn", {}]}  # Madry et al.'s CNN for the paper-sized runs

RECIPES: dict[str, dict[str, Any]] = {
    "mnist-cnn": {
        "description": "Wong et al.'s small MNIST CNN, standard training",
        "arch": _SMALL_CNN,
        "data": "mnist",
        "fit": {"fast": _adam(epochs=10, lr=3e-3, shift=1), "full": _adam(epochs=10, lr=3e-3, shift=1)},
        "eval": _aa_eval(0.3, "inf"),
    },
    "mnist-logistic": {
        "description": "multinomial logistic regression on MNIST pixels",
        "arch": ["logistic", {}],
        "data": "mnist",
        "fit": {"fast": _adam(epochs=10, lr=1e-2), "full": _adam(epochs=5, lr=1e-2)},
    },
    "mnist-mlp": {
        "description": "a 2×256 ReLU MLP on MNIST",
        "arch": ["mlp", {}],
        "data": "mnist",
        "fit": {"fast": _adam(epochs=10, lr=3e-3), "full": _adam(epochs=10, lr=3e-3)},
    },
    # Adversarially trained MNIST CNNs (advlab.defenses.adversarial; see docs/defenses.md). "fast": the 4k
    # training images on a CPU; "full": paper-sized (60k images, Madry et al.'s 40-step PGD, ε = 0.3).
    "mnist-cnn-pgd": {
        "description": "PGD adversarial training (Madry et al.), L∞ ε = 0.3, linear ε warm-up, EMA of the weights",
        "arch": _ROBUST_ARCH,
        "data": "mnist",
        "trainer": "advlab.defenses.adversarial:pgd_at",
        "fit": _pgd_at_fit(0.3, full_step=0.01),
        "eval": _aa_eval(0.3, "inf"),
    },
    "mnist-cnn-fgsm-rs": {
        "description": "fast adversarial training: FGSM from a random start, α = 1.25ε (Wong et al.), L∞ ε = 0.3",
        "arch": _ROBUST_ARCH,
        "data": "mnist",
        "trainer": "advlab.defenses.adversarial:fgsm_rs_at",
        "fit": {
            "fast": _adam(
                eps=0.3, alpha=0.375, warmup_epochs=5, early_stop=True, holdout=200, epochs=15, lr=2e-3, shift=1
            ),
            "full": _adam(eps=0.3, alpha=0.375, early_stop=True, holdout=1000, epochs=10, batch_size=100, lr=5e-3),
        },
        "eval": _aa_eval(0.3, "inf"),
    },
    "mnist-cnn-free": {
        "description": "free adversarial training (Shafahi et al.), m = 8 replays, δ step ε/3, L∞ ε = 0.3",
        "arch": _ROBUST_ARCH,
        "data": "mnist",
        "trainer": "advlab.defenses.adversarial:free_at",
        "fit": {
            "fast": _adam(eps=0.3, replays=8, step_size=0.1, warmup_epochs=32, epochs=96, lr=3e-3, shift=1),
            "full": _adam(eps=0.3, replays=8, epochs=80, batch_size=100, lr=1e-3),
        },
        "eval": _aa_eval(0.3, "inf"),
    },
    "mnist-cnn-trades": {
        "description": "TRADES (Zhang et al.), β = 6, L∞ ε = 0.3, EMA of the weights",
        "arch": _ROBUST_ARCH,
        "data": "mnist",
        "trainer": "advlab.defenses.adversarial:trades",
        "fit": {
            "fast": _adam(eps=0.3, beta=6.0, steps=7, epochs=48, ema=0.995, lr=3e-3, shift=1),
            "full": _adam(eps=0.3, beta=6.0, steps=40, step_size=0.01, epochs=60, lr=1e-3),
        },
        "eval": _aa_eval(0.3, "inf"),
    },
    "mnist-cnn-l2": {
        "description": "PGD adversarial training in L2, ε = 2.0 (L2-robust model for the non-robust-features notebook)",
        "arch": _ROBUST_ARCH,
        "data": "mnist",
        "trainer": "advlab.defenses.adversarial:pgd_at",
        # the first recipe (12 epochs), kept: the cached features-mnist result of notebook 05 is keyed on this model
        "fit": _pgd_at_fit(2.0, norm=2, fast={"steps": 7, "warmup_epochs": 3, "epochs": 12, "lr": 3e-3, "shift": 1}),
        "eval": _aa_eval(2.0, 2),
    },
    # Certified defenses (advlab.lipschitz, advlab.smoothing; see docs/certified.md).
    "mnist-lipschitz": {
        "description": "1-Lipschitz MLP (AOL layers + MaxMin), certified by margin / (√2·L)",
        "arch": ["advlab.lipschitz:lipschitz_mlp", {"width": 512, "depth": 3, "layer": "aol"}],
        "data": "mnist",
        "fit": {"fast": _adam(epochs=10, lr=3e-3), "full": _adam(epochs=10, lr=3e-3)},
    },
    **{
        f"mnist-cnn-noise-{sigma}": {
            "description": f"Gaussian-noise training, σ = {sigma}, "
            "the base classifier of randomized smoothing (Cohen et al.)",
            "arch": _SMALL_CNN,
            "data": "mnist",
            "trainer": "advlab.smoothing:train_under_noise",
            "fit": {"fast": _adam(sigma=sigma, epochs=10, lr=3e-3), "full": _adam(sigma=sigma, epochs=10, lr=3e-3)},
        }
        for sigma in (0.25, 0.5, 1.0)
    },
    # Generative models (notebooks/03_properties.ipynb: Kos et al.'s attacks on a VAE, survey ③). "kind": "vae"
    # records the test ELBO (advlab.vae.elbo_at_mean, nats, higher is better) instead of a test accuracy.
    "mnist-vae": {
        "description": "unconditional MLP VAE (8 latent dimensions, Bernoulli decoder) for Kos et al.'s attacks",
        "kind": "vae",
        "arch": ["advlab.vae:VAE", {"in_shape": [1, 28, 28], "latent": 8, "hidden": 256, "classes": 0}],
        "data": "mnist",
        "trainer": "advlab.vae:fit_vae",
        "fit": {
            "fast": {"epochs": 20, "batch_size": 128, "lr": 1e-3},
            "full": {"epochs": 20, "batch_size": 128, "lr": 1e-3},
        },
        "eval": {"test_elbo": {"fn": "advlab.vae:elbo_at_mean", "kwargs": {}}},
    },
    # notebooks/05_robustness_vs_generalization.ipynb: Madry et al.'s capacity figure and the trade-off as the
    # training ε grows. The same recipes as mnist-cnn / mnist-cnn-pgd (which are the width-1, ε = 0 / 0.3
    # members of these families), at smaller widths of Wong et al.'s CNN and at ε = 0.1 and 0.2.
    **{
        f"mnist-cnn-w{width:g}": {
            "description": f"mnist-cnn at width ×{width:g} (capacity sweep), standard training",
            "arch": ["mnist_net", {"width": width}],
            "data": "mnist",
            "fit": {"fast": _adam(epochs=10, lr=3e-3, shift=1), "full": _adam(epochs=10, lr=3e-3, shift=1)},
            "eval": _aa_eval(0.3, "inf"),
        }
        for width in (0.125, 0.25, 0.5)
    },
    **{
        f"mnist-cnn-w{width:g}-pgd": {
            "description": f"mnist-cnn-pgd at width ×{width:g} (capacity sweep): PGD-AT, L∞ ε = 0.3",
            "arch": {"fast": ["mnist_net", {"width": width}], "full": ["madry_cnn", {"width": width}]},
            "data": "mnist",
            "trainer": "advlab.defenses.adversarial:pgd_at",
            "fit": _pgd_at_fit(0.3, full_step=0.01),
            "eval": _aa_eval(0.3, "inf"),
        }
        for width in (0.125, 0.25, 0.5)
    },
    **{
        f"mnist-cnn-pgd{eps:g}": {
            "description": f"mnist-cnn-pgd trained at L∞ ε = {eps:g} instead of 0.3 (the trade-off as ε grows)",
            "arch": _ROBUST_ARCH,
            "data": "mnist",
            "trainer": "advlab.defenses.adversarial:pgd_at",
            "fit": _pgd_at_fit(eps, full_step=eps / 30),
            "eval": _aa_eval(eps, "inf"),
        }
        for eps in (0.1, 0.2)
    },
    "mnist-cnn-features-d": {
        "description": "the fresh-model recipe of features.PRESETS['mnist'] (20 epochs, no shifts) trained on D itself",
        "arch": _SMALL_CNN,
        "data": "mnist",
        "fit": {"fast": _adam(epochs=20, lr=3e-3), "full": _adam(epochs=20, lr=3e-3)},
        "eval": _aa_eval(2.0, 2),
    },
}


def names() -> list[str]:
    """Every model name the zoo knows."""
    return sorted(RECIPES)


def recipe(name: str) -> dict[str, Any]:
    """The recipe of a zoo entry (a copy)."""
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
    if ":" in arch:  # an architecture defined outside advlab.models, e.g. "advlab.lipschitz:lipschitz_mlp"
        module, func = arch.split(":")
        return getattr(importlib.import_module(module), func)(**kwargs)
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
        "advlab_version": advlab.__version__,
    }
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return key, record


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write(path: Path, write) -> None:
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
    kwargs = rec["fit"][profile]
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if "trainer" in rec:
        module, func = rec["trainer"].split(":")
        out = getattr(importlib.import_module(module), func)(model, x, y, progress=progress, **kwargs)
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
    from advlab.eval import accuracy_interval

    rec = recipe(name)
    xt, yt, _ = data.load(rec["data"], "test", profile=profile)
    metrics: dict[str, Any] = {}
    if rec.get("kind", "classifier") == "classifier" and (only is None or "test" in only):
        correct = round(train.accuracy(model, xt, yt) * len(yt))
        metrics["test_accuracy"] = round(correct / len(yt), 4)
        metrics["test_n"] = len(yt)
        metrics["test_interval_95"] = list(accuracy_interval(correct, len(yt)))
    for metric, spec in rec.get("eval", {}).items():
        if only is not None and metric not in only:
            continue
        module, func = spec["fn"].split(":")
        metrics[metric] = getattr(importlib.import_module(module), func)(model, xt, yt, **spec.get("kwargs", {}))
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
    _atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n"))
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
    _atomic_write(pt, lambda tmp: torch.save(state, tmp))
    full = {**record, "key": key, "metrics": metrics, "sha256": _sha256(pt), "torch_version": torch.__version__}
    _atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n"))
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
RESULTS_SHIPPED = SHIPPED / "results"

# One table of experiments whose result (a JSON value) is cached like a checkpoint. "fn" is "module:function",
# called as fn(**kwargs[profile], progress=...); a dataclass result is stored as a dict. "zoo" lists the zoo
# entries the experiment loads; "version" is the experiment's own revision number: bump it when a change of code
# changes what the experiment computes. Both go into the key, with the settings: a refactor that computes the same
# thing (moving or editing a module) keeps every cached result. "data" (optional) adds that dataset's fingerprint.
RESULTS: dict[str, dict[str, Any]] = {
    # notebooks/05_robustness_vs_generalization.ipynb
    "features-mnist": {
        "description": "Ilyas et al.'s table (survey Figure 6(b)) on MNIST: advlab.features.experiment",
        "fn": "advlab.features:experiment",
        "kwargs": {"fast": {"dataset": "mnist", "profile": "fast", "seed": 0},
                   "full": {"dataset": "mnist", "profile": "full", "seed": 0}},
        "data": "mnist",
        "zoo": ["mnist-cnn", "mnist-cnn-l2"],  # features.PRESETS["mnist"]: standard_zoo, robust_zoo
        "version": 1,
    },
    "data-size-mnist": {
        "description": "Schmidt et al.: standard vs PGD-AT on 500…4,000 training images, AutoAttack-grade test and "
                       "training robust accuracy (advlab.defenses.adversarial.data_size_experiment)",
        "fn": "advlab.defenses.adversarial:data_size_experiment",
        # the sweep always uses the fast training set and recipes (the full profile's would take GPU-days)
        "kwargs": {"fast": {"sizes": [500, 1000, 2000, 4000], "eps": 0.3, "n_train_eval": 500, "seed": 0},
                   "full": {"sizes": [500, 1000, 2000, 4000], "eps": 0.3, "n_train_eval": 500, "seed": 0}},
        "data": "mnist",
        "zoo": ["mnist-cnn", "mnist-cnn-pgd"],
        "version": 1,
    },
    "fonts-n-sweep": {
        "description": "Stutz et al.'s FONTS test error vs N, normal / on- / off-manifold / random-θ training",
        "fn": "advlab.manifold:n_sweep",
        "kwargs": {
            "fast": {"ns": [250, 500, 1000, 2000], "seeds": [0, 1, 2], "modes": ["normal", "on", "off", "random"],
                     "iterations": 300, "steps": 5},
            "full": {"ns": [250, 500, 1000, 2000, 5000, 10000], "seeds": [0, 1, 2],
                     "modes": ["normal", "on", "off", "random"], "iterations": 1500, "steps": 10},
        },
        "version": 1,
    },
}


def result_entry(name: str) -> dict[str, Any]:
    """The :data:`RESULTS` entry ``name`` (a copy)."""
    if name not in RESULTS:
        raise AdvlabError(f"Unknown cached result {name!r}; choose one of {sorted(RESULTS)}.")
    return copy.deepcopy(RESULTS[name])


def result_key(name: str, profile: str) -> tuple[str, dict[str, Any]]:
    """(key, record) of a cached result: hashes the entry's function, settings, version, profile, zoo keys and data."""
    entry = result_entry(name)
    record: dict[str, Any] = {
        "name": name,
        "fn": entry["fn"],
        "kwargs": entry["kwargs"][profile],
        "profile": profile,
        "zoo_keys": {n: cache_key(n, profile)[0] for n in entry.get("zoo", [])},
        "version": int(entry.get("version", 1)),
        "advlab_version": advlab.__version__,
    }
    if "data" in entry:
        x, y, _ = data.load(entry["data"], "train", profile=profile)
        record["data_fingerprint"] = data.fingerprint(x, y)
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    return key, record


def _jsonable(value: Any) -> Any:
    """``value`` after a JSON round trip (dataclasses become dicts), so computed and loaded results agree."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value))


def compute_result(name: str, profile: str, folder: Path, progress: bool = True) -> dict[str, Any]:
    """Run experiment ``name`` and write its record (with ``"result"``) atomically into ``folder``."""
    key, record = result_key(name, profile)
    module, func = record["fn"].split(":")
    start = time.perf_counter()
    value = getattr(importlib.import_module(module), func)(**record["kwargs"], progress=progress)
    full = {**record, "key": key, "seconds": round(time.perf_counter() - start, 1), "result": _jsonable(value),
            "torch_version": torch.__version__}
    path = folder / f"{name}-{profile}-{key}.json"
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(full, indent=1, sort_keys=True) + "\n"))
    return full


def result_info(name: str, profile: str | None = None, *, compute: bool = True, progress: bool = True
                ) -> dict[str, Any] | None:
    """The stored record of result ``name`` (shipped, else cached); computed and cached if missing.

    With ``compute=False`` a missing result gives None. A stored file whose key or content does not check out is
    recomputed (with a warning), never used.
    """
    profile = profile or config.profile()
    key, _ = result_key(name, profile)
    for folder in (RESULTS_SHIPPED, config.cache_dir() / "results"):
        path = folder / f"{name}-{profile}-{key}.json"
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text())
            if record.get("key") != key or "result" not in record:
                raise ValueError("key mismatch or no result")
            return record
        except Exception as err:  # noqa: BLE001 - any corruption means: recompute
            warnings.warn(f"Stored result {path} is unusable ({err}); it will be recomputed.", stacklevel=2)
    if not compute:
        return None
    return compute_result(name, profile, config.cache_dir() / "results", progress=progress)


def result(name: str, *, profile: str | None = None, progress: bool = True) -> Any:
    """The JSON result of experiment ``name`` (see :data:`RESULTS`): shipped, else cached, else computed now."""
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
    sub.add_parser("list", help="list zoo entries")
    r = sub.add_parser("result", help="recompute cached experiment results (RESULTS)")
    r.add_argument("names", nargs="+", help="result names")
    r.add_argument("--ship", action="store_true", help="write into advlab/checkpoints/results (fast profile)")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        for n in names():
            print(f"{n:24s} {RECIPES[n]['description']}")
        for n in sorted(RESULTS):
            print(f"{n:24s} (result) {RESULTS[n]['description']}")
        return 0
    if args.cmd == "evaluate":
        for name in args.names:
            profile = "fast" if args.ship else config.profile()
            folder = SHIPPED if args.ship else config.cache_dir() / "zoo"
            only = tuple(args.only) if args.only else None
            print(f"{name}: {reevaluate(name, profile, folder, only)['metrics']}")
        return 0
    if args.cmd == "result":
        for name in args.names:
            profile = "fast" if args.ship else config.profile()
            folder = RESULTS_SHIPPED if args.ship else config.cache_dir() / "results"
            new = compute_result(name, profile, folder)
            print(f"{name}: key {new['key']}, {new['seconds']} s -> {folder}")
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
    raise SystemExit(_main())
