"""The experiments of ``docs/defenses.md`` on the adversarially trained models: the table of defended zoo models,
catastrophic overfitting, label leaking, virtual adversarial training and Schmidt et al.'s data-size sweep.

Run them with ``python -m advlab.defenses.adversarial table|overfitting|leaking|vat`` (:mod:`advlab.defenses.cli`);
the data-size sweep is the cached result ``data-size-mnist`` (:mod:`advlab.results`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from advlab import config, data, models, train, zoo
from advlab.attacks import greedy_pixels, logits_of, one_pixel, pgd, transfer
from advlab.config import AdvlabError
from advlab.data.splits import stratified_subset
from advlab.defenses import smoothing
from advlab.defenses.adversarial import fgsm_rs_at, label_leaking_eval, one_step_at, pgd_at, vat_train
from advlab.defenses.masking import masking_report
from advlab.defenses.purification import ManifoldProjection
from advlab.eval import autoattack_attacks, pgd_accuracy, robust_accuracy, robustness_record
from advlab.train import accuracy_interval

TABLE_MODELS = (
    ("standard", "mnist-cnn", 0.3, "inf"),
    ("PGD-AT", "mnist-cnn-pgd", 0.3, "inf"),
    ("FGSM-RS", "mnist-cnn-fgsm-rs", 0.3, "inf"),
    ("free AT", "mnist-cnn-free", 0.3, "inf"),
    ("TRADES", "mnist-cnn-trades", 0.3, "inf"),
    ("standard (L2)", "mnist-cnn", 2.0, 2),
    ("PGD-AT L2", "mnist-cnn-l2", 2.0, 2),
)


def table(n: int = 1000, steps: int = 40, restarts: int = 1, strong: bool = False, seed: int = 0) -> str:
    """Markdown table of clean and robust accuracy of the zoo's defended MNIST models on the first n test images.

    Robust accuracy is :func:`advlab.eval.pgd_accuracy` (PGD on cross-entropy, ``steps`` steps, ``restarts``
    random starts). ``strong=True`` instead takes the AutoAttack-grade default of
    :func:`advlab.eval.robust_accuracy` (APGD-CE, APGD-T, Square; per-sample worst case): the checkpoint's record
    (``autoattack_grade``, computed by :func:`advlab.eval.robustness_record` when the zoo built or re-evaluated it)
    where it was measured on these images at this radius, else computed now. Every accuracy comes with its 95 %
    Clopper–Pearson interval.
    """
    x, y, _ = data.load("mnist", "test", n=n)
    dev = config.device()
    x, y = x.to(dev), y.to(dev)
    n = len(y)
    head = "AutoAttack-grade: APGD-CE → APGD-T → Square" if strong else f"PGD-{steps}, {restarts} restart(s)"

    def with_interval(acc: float) -> str:
        low, high = accuracy_interval(round(acc * n), n)
        return f"{acc:.1%} ({low:.1%}–{high:.1%})"

    lines = [
        f"| Model | zoo name | ε (norm) | clean accuracy (95 % interval) | robust accuracy, {head} (95 % interval) "
        "| training time |",
        "|---|---|---|---|---|---|",
    ]
    full_test = len(data.load("mnist", "test")[1])
    for label, name, eps, norm in TABLE_MODELS:
        model = zoo.load(name)
        info = zoo.info(name) or {}
        if strong:
            rec = info.get("metrics", {}).get("autoattack_grade")
            same = (rec is not None and rec["n"] == n == full_test and rec["eps"] == eps and seed == 0
                    and rec["norm"] == ("Linf" if norm == "inf" else f"L{norm:g}"))
            robust = (rec if same else robustness_record(model, x, y, eps, norm, seed=seed))["accuracy"]
        else:
            robust = pgd_accuracy(model, x, y, eps, norm, steps=steps, restarts=restarts, seed=seed)
        secs = info.get("metrics", {}).get("train_seconds", float("nan"))
        lines.append(
            f"| {label} | `{name}` | {eps:g} (L{'∞' if norm == 'inf' else norm}) | "
            f"{with_interval(train.accuracy(model, x, y))} | {with_interval(robust)} | {secs:.0f} s |"
        )
    return "\n".join(lines)


def _mnist(profile_n: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y, _ = data.load("mnist", "train")
    xt, yt, _ = data.load("mnist", "test", n=profile_n)
    dev = config.device()
    return x.to(dev), y.to(dev), xt.to(dev), yt.to(dev)


@config.isolated
def overfitting_experiment(
    eps: float = 0.3, epochs: int = 15, settings: tuple[tuple[str, float, bool], ...] | None = None, seed: int = 0,
) -> list[dict[str, Any]]:
    """FGSM training without ε warm-up or early stopping, with and without random start: per-epoch held-out FGSM /
    PGD-10 accuracy, the detected catastrophic-overfitting epoch and the final test clean and PGD-40 accuracy
    (1,000 images). Same optimiser settings as the zoo's ``mnist-cnn-fgsm-rs`` otherwise."""
    x, y, xt, yt = _mnist(1000)
    settings = settings or (("FGSM-RS α=1.25ε", 1.25 * eps, True), ("FGSM α=ε, zero init", eps, False))
    rows = []
    for name, alpha, rs in settings:
        config.seed_everything(seed)
        model = models.mnist_net()
        out = fgsm_rs_at(model, x, y, eps, alpha=alpha, random_start=rs, epochs=epochs, batch_size=128, lr=2e-3,
                         optimizer="adam", weight_decay=0.0, shift=1, seed=seed, progress=False)
        h = out["history"].extra
        rows.append({
            "setting": name,
            "fgsm_by_epoch": [round(v, 3) for v in h["fgsm_accuracy"]],
            "pgd_by_epoch": [round(v, 3) for v in h["pgd_accuracy"]],
            "co_epoch": out["catastrophic_overfitting_epoch"],
            "test_clean": round(train.accuracy(model, xt, yt), 4),
            "test_pgd40": pgd_accuracy(model, xt, yt, eps, steps=40),
        })
    return rows


@config.isolated
def leaking_experiment(
    eps: float = 0.3, epochs: int = 10, mix: float = 0.5, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Train one-step AT with true and with predicted labels; :func:`label_leaking_eval` of each on the test set."""
    x, y, xt, yt = _mnist(1000)
    out = {}
    for label in ("true", "predicted"):
        config.seed_everything(seed)
        model = models.mnist_net()
        one_step_at(model, x, y, eps, label=label, mix=mix, epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam",
                    weight_decay=0.0, seed=seed, progress=False)
        out[f"{label}-label model"] = label_leaking_eval(model, xt, yt, eps)
    return out


@config.isolated
def vat_experiment(
    labels: int = 100, eps: float = 2.0, alpha: float = 1.0, epochs: int = 60, seed: int = 0
) -> dict[str, float]:
    """Semi-supervised MNIST: ``labels`` labelled training images (class-balanced) and the rest of the fast
    training set unlabelled; test accuracy of supervised-only training vs VAT, same steps and seed."""
    x, y, xt, yt = _mnist(1000)
    idx = stratified_subset(y.cpu(), labels, seed=seed).to(x.device)
    mask = torch.ones(len(x), dtype=torch.bool, device=x.device)
    mask[idx] = False
    xl, yl, xu = x[idx], y[idx], x[mask]
    fit = {"epochs": epochs, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "shift": 1,
           "seed": seed, "progress": False}
    config.seed_everything(seed)
    sup = models.mnist_net()
    train.fit(sup, xl, yl, **fit)
    config.seed_everything(seed)
    semi = models.mnist_net()
    vat_train(semi, xl, yl, xu, eps=eps, alpha=alpha, **fit)
    return {"labels": labels, "supervised_only": round(train.accuracy(sup, xt, yt), 4),
            "vat": round(train.accuracy(semi, xt, yt), 4)}


@config.isolated
def data_size_experiment(
    sizes: tuple[int, ...] = (500, 1000, 2000, 4000), eps: float = 0.3, n_train_eval: int = 500, seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Robust generalization needs more data (Schmidt et al., 2018): standard training and PGD-AT on growing subsets.

    For each size n (the first n fast-profile training images), trains ``mnist-cnn`` and ``mnist-cnn-pgd`` with
    their zoo recipes, the number of epochs scaled by ``4000 / n`` so that every run makes the same number of
    optimiser steps (a small set is not simply under-trained). Measures, with the AutoAttack-grade default of
    :func:`advlab.eval.robust_accuracy` at L∞ ``eps``: clean and robust accuracy on the 1,000 fast test images, and
    on the first ``n_train_eval`` of the n training images (robust *training* accuracy: the gap between the two is
    the robust generalization gap).

    Returns:
        ``{"sizes", "eps", "n_test", "n_train_eval", "standard": {...}, "pgd-at": {...}}``, each method holding lists
        (one entry per size) ``clean_test``, ``robust_test``, ``clean_train``, ``robust_train``, ``seconds``.
    """
    x, y, _ = data.load("mnist", "train", profile="fast")
    xt, yt, _ = data.load("mnist", "test", profile="fast")
    dev = config.device()
    recipes = {"standard": ("mnist-cnn", None), "pgd-at": ("mnist-cnn-pgd", pgd_at)}
    out: dict[str, Any] = {"sizes": list(sizes), "eps": eps, "n_test": len(yt), "n_train_eval": n_train_eval}
    bar = tqdm(total=len(sizes) * len(recipes), desc="data-size sweep", disable=not progress)
    for method, (name, trainer) in recipes.items():
        rows: dict[str, list[float]] = {k: [] for k in ("clean_test", "robust_test", "clean_train", "robust_train",
                                                        "seconds")}
        for n in sizes:
            if not 0 < n <= len(x):
                raise AdvlabError(f"sizes must lie in 1..{len(x)} (the fast training set), got {n}.")
            kwargs = dict(zoo.recipe(name)["fit"]["fast"])
            scale = len(x) / n
            kwargs["epochs"] = round(kwargs["epochs"] * scale)
            if "warmup_epochs" in kwargs:
                kwargs["warmup_epochs"] = kwargs["warmup_epochs"] * scale
            config.seed_everything(seed)
            arch, arch_kwargs = zoo.architecture(name, "fast")
            model = models.build(arch, **arch_kwargs)
            start = time.perf_counter()
            if trainer is None:
                train.fit(model, x[:n], y[:n], seed=seed, progress=False, **kwargs)
            else:
                trainer(model, x[:n], y[:n], seed=seed, progress=False, **kwargs)
            rows["seconds"].append(round(time.perf_counter() - start, 1))
            model = model.to(dev).eval()
            k = min(n, n_train_eval)
            for split, (xs, ys) in (("test", (xt, yt)), ("train", (x[:k], y[:k]))):
                rep = robust_accuracy(model, xs.to(dev), ys.to(dev), eps, "inf", seed=seed)
                rows[f"clean_{split}"].append(rep.clean_accuracy)
                rows[f"robust_{split}"].append(rep.robust_accuracy)
            bar.update(1)
        out[method] = rows
    bar.close()
    return out


def _eval_images(n_eval: int, n: int | None = None) -> tuple[Tensor, Tensor]:
    """The first ``n`` (default all) of the ``n_eval`` class-balanced MNIST test images (notebook 04b's evaluation
    images when ``n_eval`` is its ``N_EVAL``), on the course's device: x (n, 1, 28, 28) in [0, 1], y (n,)."""
    x, y, _ = data.load("mnist", "test", n=n_eval)
    dev = config.device()
    return x[:n].to(dev), y[:n].to(dev)


@config.isolated
def autoattack_table(
    models: dict[str, str], n: int, eps: float = 0.3, norm: str | float = "inf", seed: int = 0,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """AutoAttack-grade robust accuracy (:func:`advlab.eval.robust_accuracy`'s default) of zoo models on the first
    ``n`` class-balanced MNIST test images (``data.load("mnist", "test", n=n)``, notebook 04b's evaluation images).

    The evaluation that 04b's first table reports beside FGSM and PGD: Square's 5,000 queries on every image the
    gradient attacks leave robust make it the slowest cell of the course, so it is computed once and cached
    (``python -m advlab.results defenses-autoattack-mnist --ship``).

    Args:
        models: ``{display name: zoo name}``.
        n: test images; eps, norm: the threat model (pixel units); seed: the attacks' random starts.

    Returns:
        ``{display name: {"zoo", "n", "clean_accuracy", "robust_accuracy", "interval" ([low, high], 95 %),
        "robust" ("0"/"1" per image: survived every attack), "summary" (the report's text table)}}``.
    """
    x, y = _eval_images(n)
    out: dict[str, dict[str, Any]] = {}
    for name, zoo_name in tqdm(models.items(), desc="AutoAttack-grade evaluation", disable=not progress):
        model = zoo.load(zoo_name, progress=False).to(x.device).eval()
        rep = robust_accuracy(model, x, y, eps, norm, seed=seed)
        out[name] = {"zoo": zoo_name, "n": rep.n, "clean_accuracy": rep.clean_accuracy,
                     "robust_accuracy": rep.robust_accuracy, "interval": list(rep.interval),
                     "robust": "".join("1" if r else "0" for r in rep.robust.tolist()), "summary": rep.summary()}
    return out


@config.isolated
def cross_threat_table(
    models: dict[str, str], n: int = 100, pixels: int = 10, seed: int = 0, progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """Schott et al. (2018): robust accuracy of zoo models in four threat models, each under a gradient-based and a
    gradient-free attack, on the first ``n`` of the 500 class-balanced MNIST test images ``data.load("mnist", "test",
    n=500)`` (notebook 04b's evaluation images in the fast profile).

    ============  ========================================  ===================================================
    threat model  gradient-based                            gradient-free
    ============  ========================================  ===================================================
    L∞ ε = 0.3    APGD-CE → APGD-T (AutoAttack-grade)       Square, 5,000 queries
    L2 ε = 2      APGD-CE → APGD-T                          Square-L2, 5,000 queries
    L1 ε = 10     PGD-L1, 100 steps                         transfer of PGD-L1 from ``mnist-mlp``
    L0 pixels     :func:`advlab.attacks.greedy_pixels`      :func:`advlab.attacks.one_pixel` (DE, 60 × 40)
    ============  ========================================  ===================================================

    An image counts as robust ("both") only if it survives both attacks. Cached for notebook 04b
    (``python -m advlab.results cross-threat-mnist --ship``).

    Returns:
        ``{threat model: {model name: {"gradient", "gradient-free", "both"}}}``, accuracies over the n images.
    """
    x, y = _eval_images(500, n)
    dev = x.device
    mlp = zoo.load("mnist-mlp", progress=False).to(dev).eval()  # the transfer surrogate: another architecture

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    aa = autoattack_attacks(seed=seed)
    gradient_aa = {k: v for k, v in aa.items() if not k.startswith("square")}
    square_aa = {k: v for k, v in aa.items() if k.startswith("square")}
    pgd_l1 = {"pgd-l1-100": lambda m, x, y, e, p: pgd(m, x, y, e, norm=p, steps=100, generator=gen())}
    transfer_l1 = {"transfer-mlp": lambda m, x, y, e, p: transfer(pgd, mlp, m, x, y, eps=e, norm=p, steps=100,
                                                                   generator=gen())}
    threats = [("L∞ ε = 0.3", 0.3, "inf", gradient_aa, square_aa), ("L2 ε = 2", 2.0, 2, gradient_aa, square_aa),
               ("L1 ε = 10", 10.0, 1, pgd_l1, transfer_l1)]
    out: dict[str, dict[str, dict[str, float]]] = {t[0]: {} for t in threats}
    out[f"L0 {pixels} pixels"] = {}

    def row(grad_ok: Tensor, free_ok: Tensor) -> dict[str, float]:
        return {"gradient": grad_ok.float().mean().item(), "gradient-free": free_ok.float().mean().item(),
                "both": (grad_ok & free_ok).float().mean().item()}

    for name, zoo_name in tqdm(models.items(), desc="four threat models", disable=not progress):
        model = zoo.load(zoo_name, progress=False).to(dev).eval()
        for threat, eps, norm, grad_attacks, free_attacks in threats:
            grad_ok = robust_accuracy(model, x, y, eps, norm, attacks=grad_attacks).robust
            free_ok = robust_accuracy(model, x, y, eps, norm, attacks=free_attacks).robust
            out[threat][name] = row(grad_ok, free_ok)
        correct = logits_of(model, x).argmax(1) == y
        greedy = greedy_pixels(model, x, y, pixels)
        de = one_pixel(model, x, y, pixels=pixels, population=60, generations=40, generator=gen())
        out[f"L0 {pixels} pixels"][name] = row(correct & ~greedy.success, correct & ~de.success)
    return out


@config.isolated
def smoothing_soundness(
    zoo_name: str, sigma: float, n_eval: int, n_certify: int, n_attacked: int, n0: int, n_mc: int, alpha: float,
    steps: int, draws: int, scales: list[float], seed: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Attack randomized smoothing's certificates (notebook 04b, section 7): is CERTIFY sound?

    CERTIFY (``n0``, ``n_mc``, ``alpha``, noise seed ``seed``) runs on the first ``n_certify`` of the ``n_eval``
    class-balanced MNIST test images with the base classifier ``zoo_name`` (trained under noise ``sigma``). The first
    ``n_attacked`` images it certifies correctly (radius R_i > 0) are attacked at ``scale · R_i`` for each scale: PGD-L2
    (``steps``, random start from a generator seeded ``seed``) on :class:`~advlab.defenses.smoothing.NoiseAverage`
    (``draws`` fresh noise draws per step, generator seeded ``seed + 1``); PREDICT (``n_mc`` samples, seed
    ``seed + 2``) then gives the smoothed classifier's answer. A **break** is a non-abstaining wrong answer: a sound
    certificate allows at most Binomial(m, 2α) of them at scales below 1. Two scales × ``steps`` steps on
    ``draws · n_attacked`` noisy images make it the slowest cell of 04b, so it is computed once and cached
    (``python -m advlab.results smoothing-soundness-mnist --ship``).

    Returns:
        ``{"attacked": image indices (into the n_certify images), "radius": their certified radii R_i,
        "scales": {str(scale): {"breaks", "abstains", "norm_ratio": ||δ_i||_2 / R_i per image}}}``.
    """
    x, y = _eval_images(n_eval, n_certify)
    base = zoo.load(zoo_name, progress=False).to(x.device).eval()
    cert = smoothing.certify(base, x, sigma, n0=n0, n=n_mc, alpha=alpha, seed=seed)
    attacked = ((cert.pred == y) & (cert.radius > 0)).nonzero().squeeze(1)[:n_attacked]
    x_att, y_att, r_att = x[attacked], y[attacked], cert.radius[attacked].to(x.dtype)
    out: dict[str, Any] = {"attacked": attacked.tolist(), "radius": r_att.tolist(), "scales": {}}
    for scale in tqdm(scales, desc="attacking the smoothed classifier", disable=not progress):
        stand_in = smoothing.NoiseAverage(base, sigma, draws=draws,
                                          generator=torch.Generator().manual_seed(seed + 1)).eval()
        adv = pgd(stand_in, x_att, y_att, scale * r_att, norm=2, steps=steps,
                  generator=torch.Generator().manual_seed(seed))
        answer = smoothing.predict(base, adv.x_adv, sigma, n=n_mc, alpha=alpha, seed=seed + 2)
        out["scales"][str(scale)] = {"breaks": int(((answer != y_att) & (answer != -1)).sum()),
                                     "abstains": int((answer == -1).sum()),
                                     "norm_ratio": (adv.norms / r_att).tolist()}
    return out


@config.isolated
def purification_report(
    cnn: str, vae: str, n_eval: int, n: int, eps: float, steps: int, queries: int, projection_steps: int,
    restarts: int, seed: int = 0, progress: bool = True,
) -> dict[str, float]:
    """A Defense-GAN-style purifier under four attacks (notebook 04b, section 5): :func:`masking_report` of
    :class:`~advlab.defenses.purification.ManifoldProjection` (the zoo classifier ``cnn`` behind a projection onto
    the decoder of the zoo VAE ``vae``: ``restarts`` random codes, ``projection_steps`` descent steps each) on the
    first ``n`` of the ``n_eval`` class-balanced MNIST test images, L∞ at ``eps``: PGD and BPDA-PGD (``steps``),
    PGD transferred from ``cnn`` and Square (``queries``), random starts seeded ``seed``. Every query and step runs the
    projection's descent, so it is computed once and cached (``python -m advlab.results purification-mnist --ship``).

    Returns:
        ``{"clean", "pgd", "bpda", "transfer", "square", "undefended_pgd"}``: accuracies, fractions of the n images.
    """
    x, y = _eval_images(n_eval, n)
    model = zoo.load(cnn, progress=False).to(x.device).eval()
    generator = zoo.load(vae, progress=False).to(x.device).eval()
    purifier = ManifoldProjection(model, generator.decode, generator.latent, steps=projection_steps,
                                  restarts=restarts).eval()
    return masking_report(model, x, y, eps=eps, steps=steps, sanity=False, seed=seed, queries=queries,
                          defended=purifier)
