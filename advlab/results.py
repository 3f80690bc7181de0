"""Cached experiment results: experiments too slow for a notebook (a whole table, a sweep), computed once and cached
like the zoo's checkpoints.

:func:`result_info` returns the record of entry ``name`` of :data:`RESULTS`, its JSON result under ``"result"``:
shipped in ``advlab/checkpoints/results``, else cached in ``<cache>/results``, else computed now and cached. The
notebooks ask for it through the zoo (``zoo.result("features-mnist")``, ``zoo.result_info(...)``): this module sits
above the experiments it runs (features, manifold, the defenses) and registers :func:`result_info` with the zoo,
which does not import it (registration from above, see :mod:`advlab.zoo`).

A result's key hashes the entry's function name, settings and ``version``, the profile, the zoo keys of the models
it uses and, optionally, its data's fingerprint: not the source text, so a refactor that computes the same thing
(moving or editing a module) keeps every cached result; bump ``version`` when a change of code changes the result.
Recompute and ship one with ``python -m advlab.results NAME --ship``; list them with ``python -m advlab.results list``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advlab import config, data, features, manifold, zoo
from advlab.config import AdvlabError
from advlab.defenses import experiments as defense_experiments

RESULTS_SHIPPED = zoo.SHIPPED / "results"

# The functions the entries name, called as fn(**kwargs[profile], progress=...); a dataclass result is stored as a
# dict. The names are hashed into the keys and keep the spelling the shipped results were computed under (the import
# paths of the time: the data-size sweep has since moved to advlab.defenses.experiments).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "advlab.features:experiment": features.experiment,
    "advlab.defenses.adversarial:data_size_experiment": defense_experiments.data_size_experiment,
    "advlab.manifold:n_sweep": manifold.n_sweep,
    "advlab.defenses.experiments:autoattack_table": defense_experiments.autoattack_table,
    "advlab.defenses.experiments:cross_threat_table": defense_experiments.cross_threat_table,
    "advlab.defenses.experiments:smoothing_soundness": defense_experiments.smoothing_soundness,
    "advlab.defenses.experiments:purification_report": defense_experiments.purification_report,
}

# One table of experiments whose result (a JSON value) is cached like a checkpoint. "fn" names a function of
# FUNCTIONS; "zoo" lists the zoo entries the experiment loads; "version" is the experiment's own revision number:
# bump it when a change of code changes what the experiment computes. Both go into the key, with the settings.
# "data" (optional) adds that dataset's fingerprint. "course_seed": True makes the course's seed (ADVLAB_SEED,
# config.seed()) the experiment's seed= setting, so that a run of the course under another seed recomputes the result
# instead of reading the shipped one (computed with the default seed, 0).
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
                       "training robust accuracy (advlab.defenses.experiments.data_size_experiment)",
        "fn": "advlab.defenses.adversarial:data_size_experiment",
        # the sweep always uses the fast training set and recipes (the full profile's would take GPU-days)
        "kwargs": {"fast": {"sizes": [500, 1000, 2000, 4000], "eps": 0.3, "n_train_eval": 500, "seed": 0},
                   "full": {"sizes": [500, 1000, 2000, 4000], "eps": 0.3, "n_train_eval": 500, "seed": 0}},
        "data": "mnist",
        "zoo": ["mnist-cnn", "mnist-cnn-pgd"],
        "version": 1,
    },
    # notebooks/04b_defenses.ipynb, section 1
    "defenses-autoattack-mnist": {
        "description": "AutoAttack-grade robust accuracy of the five L∞ models of 04b's first table on its evaluation "
                       "images (advlab.defenses.experiments.autoattack_table)",
        "fn": "advlab.defenses.experiments:autoattack_table",
        "kwargs": {profile: {"models": {"standard": "mnist-cnn", "PGD-AT": "mnist-cnn-pgd",
                                        "FGSM-RS": "mnist-cnn-fgsm-rs", "free AT": "mnist-cnn-free",
                                        "TRADES": "mnist-cnn-trades"},
                             "n": n, "eps": 0.3, "norm": "inf", "seed": 0}
                   for profile, n in (("fast", 500), ("full", 10_000))},
        "data": "mnist",
        "zoo": ["mnist-cnn", "mnist-cnn-pgd", "mnist-cnn-fgsm-rs", "mnist-cnn-free", "mnist-cnn-trades"],
        "version": 1,
    },
    # notebooks/04b_defenses.ipynb, section 9
    "cross-threat-mnist": {
        "description": "Schott et al.: three models in four threat models (L∞, L2, L1, L0), each under a gradient-based"
                       " and a gradient-free attack (advlab.defenses.experiments.cross_threat_table)",
        "fn": "advlab.defenses.experiments:cross_threat_table",
        "kwargs": {profile: {"models": {"standard": "mnist-cnn", "L∞-AT": "mnist-cnn-pgd", "L2-AT": "mnist-cnn-l2"},
                             "n": 100, "pixels": 10, "seed": 0} for profile in ("fast", "full")},
        "data": "mnist",
        "zoo": ["mnist-cnn", "mnist-cnn-pgd", "mnist-cnn-l2", "mnist-mlp"],
        "version": 1,
    },
    # notebooks/04b_defenses.ipynb, section 5
    "purification-mnist": {
        "description": "A Defense-GAN-style projection onto a VAE's manifold under PGD, BPDA-PGD, transfer and Square "
                       "(advlab.defenses.experiments.purification_report)",
        "fn": "advlab.defenses.experiments:purification_report",
        "kwargs": {profile: {"cnn": "mnist-cnn", "vae": "mnist-vae", "n_eval": n_eval, "n": 100, "eps": 0.3,
                             "steps": steps, "queries": 300, "projection_steps": 50, "restarts": 4}
                   for profile, n_eval, steps in (("fast", 500, 20), ("full", 10_000, 100))},
        "course_seed": True,
        "data": "mnist",
        "zoo": ["mnist-cnn", "mnist-vae"],
        "version": 1,
    },
    # notebooks/04b_defenses.ipynb, section 7
    "smoothing-soundness-mnist": {
        "description": "Randomized smoothing's certificates attacked at 0.99 and 2 × their radius: PGD-L2 on the "
                       "noise-averaged stand-in, then PREDICT (advlab.defenses.experiments.smoothing_soundness)",
        "fn": "advlab.defenses.experiments:smoothing_soundness",
        "kwargs": {profile: {"zoo_name": "mnist-cnn-noise-0.5", "sigma": 0.5, "n_eval": n_eval, "n_certify": n_cert,
                             "n_attacked": n_att, "n0": 100, "n_mc": n_mc, "alpha": 0.001, "steps": 100, "draws": 64,
                             "scales": [0.99, 2.0]}
                   for profile, n_eval, n_cert, n_att, n_mc in (("fast", 500, 100, 50, 500),
                                                                ("full", 10_000, 500, 500, 100_000))},
        "course_seed": True,
        "data": "mnist",
        "zoo": ["mnist-cnn-noise-0.5"],
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
    kwargs = entry["kwargs"][profile]
    if entry.get("course_seed"):
        kwargs = {**kwargs, "seed": config.seed()}
    record: dict[str, Any] = {
        "name": name,
        "fn": entry["fn"],
        "kwargs": kwargs,
        "profile": profile,
        "zoo_keys": {n: zoo.cache_key(n, profile)[0] for n in entry.get("zoo", [])},
        "version": int(entry.get("version", 1)),
        "advlab_version": config.VERSION,
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
    if record["fn"] not in FUNCTIONS:
        raise AdvlabError(f"Cached result {name!r} names {record['fn']!r}, which is not in results.FUNCTIONS.")
    start = time.perf_counter()
    value = FUNCTIONS[record["fn"]](**record["kwargs"], progress=progress)
    full = {**record, "key": key, "seconds": round(time.perf_counter() - start, 1), "result": _jsonable(value),
            "torch_version": torch.__version__}
    path = folder / f"{name}-{profile}-{key}.json"
    zoo.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(full, indent=1, sort_keys=True) + "\n"))
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


# Registration from above: zoo.result / zoo.result_info, which the notebooks call, hand their requests to this module.
zoo.register_function("result_info", result_info)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m advlab.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="result names to recompute, or 'list'")
    parser.add_argument("--ship", action="store_true", help="write into advlab/checkpoints/results (fast profile)")
    args = parser.parse_args(argv)
    if args.names == ["list"]:
        for n in sorted(RESULTS):
            print(f"{n:24s} {RESULTS[n]['description']}")
        return 0
    for name in args.names:
        profile = "fast" if args.ship else config.profile()
        folder = RESULTS_SHIPPED if args.ship else config.cache_dir() / "results"
        new = compute_result(name, profile, folder)
        print(f"{name}: key {new['key']}, {new['seconds']} s -> {folder}")
    return 0


if __name__ == "__main__":
    # The CLI of the imported module advlab.results (the one registered with the zoo), not of this __main__ copy.
    from advlab import results as _results

    raise SystemExit(_results._main())
