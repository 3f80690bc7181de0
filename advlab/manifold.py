"""On- and off-manifold adversarial examples and adversarial training, after Stutz, Hein & Schiele (2019).

Stutz et al. separate two kinds of adversarial examples:

* **off-manifold** (regular) ones, ``x + δ`` with a small pixel perturbation δ, which leave the data
  manifold (:func:`off_manifold`, plain pixel PGD from :mod:`advlab.attacks`);
* **on-manifold** ones, which stay on the manifold of their class: the image is produced by the data's
  generator from a perturbed latent variable. On FONTS the generator is known
  (:func:`advlab.data.fonts.decode`), so the attack perturbs the transformation θ of the sample's own
  (font, letter) prototype (:func:`theta_attack`); on other data a class-conditional VAE
  (:mod:`advlab.vae`) approximates the manifold and the attack perturbs its latent code
  (:func:`latent_attack`).

:func:`fonts_distance` and :func:`latent_distance` measure how far an image is from the (true or learned)
manifold by re-fitting θ or the latent code to it: on-manifold examples have (near) zero distance, pixel
PGD examples do not.

Adversarial training with either kind replaces half of every batch by adversarial examples
(:func:`train_fonts`, :func:`learned_perturb`). The paper's finding: on-manifold adversarial training
is data augmentation along the manifold and lowers the test error, most of all for small training sets;
off-manifold adversarial training does not. :func:`n_sweep` reproduces that experiment on FONTS.

How the θ of a FONTS batch reaches the attack
    :func:`advlab.train.fit` calls ``perturb(model, xb, yb)`` and ``loss_fn(model, xb, yb)`` with the
    batch only. :func:`train_fonts` therefore trains with the *dataset index* of every example in place
    of its label: ``fit(model, x, torch.arange(N), perturb=..., loss_fn=...)``. Both hooks are closures
    over the :class:`~advlab.data.fonts.FontsSample` (:func:`fonts_hooks`): they look up each example's
    label, prototype and θ by index, and the loss is the cross-entropy against the looked-up labels. The
    training loop itself (shuffling, schedule, progress bar, seeding) stays :func:`advlab.train.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import config, models, train
from advlab.attacks.core import attack_loss, is_success
from advlab.attacks.engine import Rows, ascend, better, default_step_size, select_rows
from advlab.attacks.pgd import pgd
from advlab.attacks.result import AttackResult
from advlab.attacks.tensors import as_eps, check_inputs, check_logits, eval_mode, on_model_device
from advlab.config import AdvlabError
from advlab.data import fonts

MODES = ("normal", "on", "off", "random")


class ManifoldResult(NamedTuple):
    """An on-manifold attack on N samples.

    Attributes:
        x_adv: (N, C, H, W) adversarial images in [0, 1], decoded from ``code``.
        code: (N, D) the latent variables that generate them (θ for FONTS, the VAE's z otherwise).
        success: (N,) bool, the model's prediction on ``x_adv`` differs from y.
        loss: (N,) the model's cross-entropy on ``x_adv``.
        pred: (N,) int64, the model's prediction on ``x_adv``.
    """

    x_adv: Tensor
    code: Tensor
    success: Tensor
    loss: Tensor
    pred: Tensor

    @property
    def success_rate(self) -> float:
        """Fraction of the batch on which the attack succeeded."""
        return self.success.float().mean().item() if self.success.numel() else 0.0


def _check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 0:
        raise AdvlabError(f"steps must be a non-negative integer, got {steps!r}.")
    return int(steps)


def _code_pgd(
    model: nn.Module,
    generate: Callable[[Tensor], Tensor],
    code0: Tensor,
    y: Tensor,
    low: Tensor,
    high: Tensor,
    steps: int,
    step_size: Tensor,
    start: Tensor,
) -> ManifoldResult:
    """L∞ PGD on the latent code of a generator, inside the per-sample box [low, high] (N, D).

    Maximises the model's cross-entropy of ``generate(code)``; keeps each sample's best iterate (a success
    first, then the higher loss), so that more steps never weaken the attack. ``code0`` (N, D) is the clean
    code (the reference of "best" at step 0); ``start`` (N, D) the first iterate. Model in eval mode.
    """
    with torch.no_grad():
        logits = model(generate(code0))
    check_logits(logits, y)
    clean_loss, clean_succ = attack_loss(logits, y, "ce"), is_success(logits, y)

    def objective(code: Tensor, rows: Rows) -> tuple[Tensor, Tensor]:
        out, yr = model(generate(code)), select_rows(y, rows)
        return attack_loss(out, yr, "ce"), is_success(out.detach(), yr)

    def feasible(code: Tensor, rows: Rows) -> Tensor:
        return torch.minimum(torch.maximum(code, select_rows(low, rows)), select_rows(high, rows))

    run = ascend(objective, start, feasible, steps, step_size, math.inf)
    # the clean code is the reference of "best" at step 0: the attack never returns something worse than it
    keep_clean = ~better(run.value, run.success, clean_loss, clean_succ)
    best_code = torch.where(keep_clean[:, None], code0, run.z)
    with torch.no_grad():
        best_x = generate(best_code)
        logits = model(best_x)
    loss = F.cross_entropy(logits, y, reduction="none")
    pred = logits.argmax(1)
    return ManifoldResult(best_x.clamp(0, 1), best_code, pred != y, loss, pred)


# --------------------------------------------------------------------------------------- true manifold


def theta_box(
    theta: Tensor, eps: float | Tensor = 0.3, difficulty: str = "hard"
) -> tuple[Tensor, Tensor]:
    """The feasible set of :func:`theta_attack`: ``[θ − ε, θ + ε] ∩ [low, high]`` of the difficulty.

    Args:
        theta: (N, 6) clean transformations.
        eps: L∞ radius in θ units (a scalar or (N,)), the same for all six coordinates.
        difficulty: whose data range clips the box (``"hard"`` or ``"easy"``).

    Returns:
        (low, high), each (N, 6), on theta's device.
    """
    if theta.ndim != 2 or theta.shape[1] != 6:
        raise AdvlabError(f"theta must be (N, 6) = (tx, ty, shx, shy, scale, rotation), got {tuple(theta.shape)}.")
    eps_t = as_eps(eps, theta)[:, None]
    lo, hi = fonts.theta_bounds(difficulty, theta.device)
    lo, hi = lo.to(theta.dtype), hi.to(theta.dtype)
    return torch.maximum(theta - eps_t, lo), torch.minimum(theta + eps_t, hi)


@on_model_device(x="theta")
def theta_attack(
    model: nn.Module,
    prototypes: Tensor,
    theta: Tensor,
    y: Tensor,
    eps: float | Tensor = 0.3,
    steps: int = 10,
    step_size: float | Tensor | None = None,
    difficulty: str = "hard",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> ManifoldResult:
    """On-manifold attack on FONTS: L∞ PGD on the transformation θ of each sample's own prototype.

    The adversarial image is ``fonts.decode(prototype, θ')`` with θ' in :func:`theta_box` (``‖θ' − θ‖∞ ≤ ε``
    and inside the difficulty's data range), chosen to maximise the model's cross-entropy; font and letter
    never change, so the example is exactly on the class manifold (Stutz et al. 2019, FONTS, ε = 0.3).

    Args:
        model: classifier, (N, 1, 28, 28) in [0, 1] -> logits; attacked in eval mode, parameters frozen.
        prototypes: (N, 1, S, S) the (font, letter) glyph of each sample (:func:`fonts.prototypes_for`).
        theta: (N, 6) the samples' transformations (inside the difficulty's range).
        y: (N,) true labels (letters).
        eps: L∞ radius in θ units, scalar or (N,).
        steps: signed-gradient steps.
        step_size: step in θ units (scalar or (N,)); default ``2.5 · ε / steps``.
        difficulty: ``"hard"`` or ``"easy"``: the data range θ' is clipped to.
        random_start: start uniformly in the box (else at θ).
        generator: optional CPU generator for the random start.

    Returns:
        :class:`ManifoldResult` with ``code`` = θ' (N, 6).
    """
    steps = _check_steps(steps)
    if prototypes.ndim != 4 or prototypes.shape[1] != 1 or len(prototypes) not in (1, len(theta)):
        raise AdvlabError(
            f"prototypes must be (N, 1, S, S), one per sample (fonts.prototypes_for), got {tuple(prototypes.shape)}."
        )
    low, high = theta_box(theta, eps, difficulty)
    theta = theta.detach()
    if ((theta < low - 1e-6) | (theta > high + 1e-6)).any():
        raise AdvlabError(f"theta lies outside the {difficulty!r} data range; pass the difficulty it was drawn with.")
    y = torch.as_tensor(y, device=theta.device).long()
    if y.shape != (len(theta),):
        raise AdvlabError(f"y must be ({len(theta)},), one label per θ, got {tuple(y.shape)}.")
    eps_t = as_eps(eps, theta)
    alpha = _step(step_size, eps_t, steps)
    protos = prototypes.to(theta.device, theta.dtype).detach()
    if random_start:
        u = torch.rand(theta.shape, generator=generator).to(theta.device, theta.dtype)
        start = low + u * (high - low)
    else:
        start = theta.clone()
    with eval_mode(model):
        return _code_pgd(model, lambda t: fonts.decode(protos, t), theta, y, low, high, steps, alpha, start)


def _step(step_size: float | Tensor | None, eps: Tensor, steps: int) -> Tensor:
    """(N,) step sizes: given, or the engine's default 2.5 · ε / steps."""
    if step_size is None:
        return default_step_size(eps, steps)
    alpha = torch.as_tensor(step_size, dtype=eps.dtype, device=eps.device).flatten()
    if alpha.numel() not in (1, len(eps)) or not bool((alpha > 0).all()):
        raise AdvlabError(f"step_size must be > 0, a scalar or one per sample; got {step_size!r}.")
    return alpha.expand(len(eps)).clone()


def fonts_attack(
    model: nn.Module, sample: fonts.FontsSample, eps: float | Tensor = 0.3, difficulty: str = "hard", **kwargs
) -> ManifoldResult:
    """:func:`theta_attack` on a whole :class:`~advlab.data.fonts.FontsSample` (prototypes looked up for you).

    It runs on the model's device and returns on the sample's (see :func:`theta_attack`)."""
    protos = fonts.prototypes_for(sample.font, sample.y)
    return theta_attack(model, protos, sample.theta, sample.y, eps, difficulty=difficulty, **kwargs)


@on_model_device
def off_manifold(
    model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor = 0.3, norm: str | float = "inf", steps: int = 10,
    **kwargs,
) -> AttackResult:
    """Off-manifold (regular) adversarial examples: pixel PGD, :func:`advlab.attacks.pgd`, in B_ε(x) ∩ [0, 1]."""
    return pgd(model, x, y, eps, norm=norm, steps=steps, **kwargs)


def fonts_distance(
    x: Tensor, font: Tensor, y: Tensor, theta0: Tensor, steps: int = 200, difficulty: str = "hard"
) -> Tensor:
    """Distance (N,) of images to the FONTS manifold of their (font, letter), L2 in pixel units.

    Re-fits θ with :func:`advlab.data.fonts.refit_theta` from ``theta0`` (e.g. the clean sample's θ),
    inside the difficulty's data range. The fit is local, so the distance is an upper bound; on-manifold
    examples come out near zero, pixel perturbations do not (their δ is mostly orthogonal to the manifold).

    Args:
        x: (N, 1, 28, 28) images in [0, 1].
        font, y: (N,) font index and letter of each image.
        theta0: (N, 6) starting θ.
    """
    protos = fonts.prototypes_for(font.to(x.device), y.to(x.device))
    return fonts.refit_theta(protos, x, theta0, steps=steps, bounds=fonts.theta_bounds(difficulty)).distance


# ------------------------------------------------------------------------------------ learned manifold


def latent_box(mu: Tensor, eps: float | Tensor) -> tuple[Tensor, Tensor]:
    """``[μ − ε, μ + ε]`` (each (N, D)): the feasible set of :func:`latent_attack`."""
    eps_t = as_eps(eps, mu)[:, None]
    return mu - eps_t, mu + eps_t


@on_model_device(model=("model", "vae"))
def latent_attack(
    model: nn.Module,
    vae: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor = 0.3,
    steps: int = 10,
    step_size: float | Tensor | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> ManifoldResult:
    """On-manifold attack on a learned manifold: L∞ PGD on the latent code of a class-conditional VAE.

    The code starts from the encoder's mean ``μ = vae.encode(x, y)[0]`` for the *true* class y and stays
    in ``‖z − μ‖∞ ≤ ε``; the adversarial image is ``vae.decode(z, y)``, the class-y manifold the VAE learned
    (Stutz et al. 2019 use one VAE-GAN per class; a conditional VAE plays that role here).

    Args:
        model: classifier on [0, 1] images; attacked in eval mode, parameters frozen.
        vae: an :class:`advlab.vae.VAE` trained with labels (conditional).
        x: (N, C, H, W) images in [0, 1]; y: (N,) their labels.
        eps: L∞ radius in latent units (the prior is N(0, I)), scalar or (N,).
        steps, step_size, random_start, generator: as in :func:`theta_attack`.

    Returns:
        :class:`ManifoldResult` with ``code`` = z (N, latent).
    """
    steps = _check_steps(steps)
    x, y = check_inputs(x, y)
    if getattr(vae, "classes", 0) == 0:
        raise AdvlabError("latent_attack needs a class-conditional VAE; train it with labels: train_vae(x, y).")
    eps_t = as_eps(eps, x)
    alpha = _step(step_size, eps_t, steps)
    with eval_mode(vae):
        with torch.no_grad():
            mu = vae.encode(x, y)[0]
        low, high = latent_box(mu, eps_t)
        if random_start:
            u = torch.rand(mu.shape, generator=generator).to(mu.device, mu.dtype)
            start = low + u * (high - low)
        else:
            start = mu.clone()
        with eval_mode(model):
            return _code_pgd(model, lambda z: vae.decode(z, y), mu, y, low, high, steps, alpha, start)


@on_model_device(model="vae")
def latent_distance(vae: nn.Module, x: Tensor, y: Tensor | None = None, steps: int = 100, lr: float = 0.05) -> Tensor:
    """Distance (N,) of images to the VAE's learned manifold (of class y), L2 in pixel units.

    ``min_z ‖decode(z, y) − x‖₂``, by Adam on z from the encoder's mean, keeping each sample's best iterate.
    Images decoded by the VAE (e.g. :func:`latent_attack` examples) come out at ~0.
    """
    x, y = check_inputs(x, y)
    with eval_mode(vae):
        with torch.no_grad():
            z = vae.encode(x, y)[0]
        z = z.clone().requires_grad_(True)
        best = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
        opt = torch.optim.Adam([z], lr=lr)
        with torch.enable_grad():
            for k in range(steps + 1):
                err = (vae.decode(z, y) - x).flatten(1).pow(2).sum(1)
                best = torch.minimum(best, err.detach())
                if k == steps:
                    break
                opt.zero_grad(set_to_none=True)
                err.sum().backward()
                opt.step()
    return best.sqrt()


# --------------------------------------------------------------------------------------------- training


def _adv_count(n: int, fraction: float) -> int:
    return int(round(fraction * n))


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise AdvlabError(f"fraction (share of each batch made adversarial) must be in [0, 1], got {fraction}.")


def fonts_hooks(
    sample: fonts.FontsSample,
    mode: str = "on",
    eps: float | None = None,
    steps: int = 10,
    fraction: float = 0.5,
    difficulty: str = "hard",
) -> tuple[Callable | None, Callable]:
    """``(perturb, loss_fn)`` for :func:`advlab.train.fit` when training on FONTS with *dataset indices* as labels.

    ``fit(model, sample.x, torch.arange(N), perturb=perturb, loss_fn=loss_fn)`` then trains on the sample:
    ``yb`` holds the indices of the batch, with which the hooks look up each example's label, prototype and θ
    (see the module docstring). The first ``round(fraction · B)`` examples of every (shuffled) batch are
    replaced by adversarial ones: ``mode="on"`` θ-PGD (:func:`theta_attack`, ε = 0.3 by default),
    ``mode="off"`` pixel L∞ PGD (:func:`off_manifold`, ε = 0.3 by default); ``mode="random"`` draws θ'
    uniformly in the same box as ``"on"`` (the data-augmentation control: same transformations, no attack);
    ``"normal"`` has no perturb hook.

    Returns:
        (perturb or None, loss_fn): the loss is the mean cross-entropy against the looked-up labels.
    """
    if mode not in MODES:
        raise AdvlabError(f"Unknown mode {mode!r}; use one of {MODES}.")
    _check_fraction(fraction)
    eps = 0.3 if eps is None else eps
    labels, theta, font = sample.y, sample.theta, sample.font

    def lookup(idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if idx.dtype != torch.long or (len(idx) and (idx.min() < 0 or idx.max() >= len(labels))):
            raise AdvlabError("The fonts hooks expect dataset indices as labels: fit(model, x, torch.arange(len(x))).")
        i = idx.cpu()
        return labels[i].to(idx.device), theta[i].to(idx.device), font[i].to(idx.device)

    def loss_fn(model: nn.Module, xb: Tensor, idx: Tensor) -> Tensor:
        return F.cross_entropy(model(xb), lookup(idx)[0])

    def perturb(model: nn.Module, xb: Tensor, idx: Tensor) -> Tensor:
        yb, tb, fb = lookup(idx)
        k = _adv_count(len(xb), fraction)
        if k == 0:
            return xb
        yb, tb, fb = yb[:k], tb[:k], fb[:k]
        if mode == "on":
            protos = fonts.prototypes_for(fb, yb)
            adv = theta_attack(model, protos, tb, yb, eps, steps=steps, difficulty=difficulty).x_adv
        elif mode == "random":
            low, high = theta_box(tb, eps, difficulty)
            u = torch.rand(tb.shape).to(tb.device, tb.dtype)
            adv = fonts.decode(fonts.prototypes_for(fb, yb), low + u * (high - low))
        else:
            adv = off_manifold(model, xb[:k], yb, eps, steps=steps).x_adv
        return torch.cat([adv.to(xb.dtype), xb[k:]])

    return (None if mode == "normal" else perturb), loss_fn


def learned_perturb(
    vae: nn.Module, eps: float = 0.3, steps: int = 10, fraction: float = 0.5
) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """A ``perturb`` hook for :func:`advlab.train.fit`: on-manifold training on a *learned* manifold.

    Replaces the first ``round(fraction · B)`` examples of every batch by :func:`latent_attack` examples
    (decoded from the class-conditional VAE), leaves the rest clean; labels are ordinary labels.
    """
    _check_fraction(fraction)

    def perturb(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        k = _adv_count(len(xb), fraction)
        if k == 0:
            return xb
        adv = latent_attack(model, vae, xb[:k], yb[:k], eps, steps=steps).x_adv
        return torch.cat([adv.to(xb.dtype), xb[k:]])

    return perturb


def train_fonts(
    model: nn.Module,
    sample: fonts.FontsSample,
    mode: str = "normal",
    *,
    eps: float | None = None,
    steps: int = 10,
    fraction: float = 0.5,
    difficulty: str = "hard",
    **fit_kwargs,
) -> train.History:
    """Train ``model`` on a FONTS sample: normally, or with on-/off-manifold adversarial training.

    Runs :func:`advlab.train.fit` with dataset indices as labels and the hooks of :func:`fonts_hooks`, so that
    every option of ``fit`` (epochs, batch_size, lr, optimizer, schedule, seed, progress, …) applies.
    ``shift`` augmentation is refused (it would move the images away from their θ).
    """
    if fit_kwargs.get("shift"):
        raise AdvlabError("shift augmentation breaks the image ↔ θ correspondence; train FONTS with shift=0.")
    if "perturb" in fit_kwargs or "loss_fn" in fit_kwargs:
        raise AdvlabError("train_fonts builds its own perturb and loss_fn; pass mode= instead.")
    perturb, loss_fn = fonts_hooks(sample, mode, eps, steps, fraction, difficulty)
    idx = torch.arange(len(sample.y))
    return train.fit(model, sample.x, idx, perturb=perturb, loss_fn=loss_fn, **fit_kwargs)


@config.isolated
def fonts_net(seed: int = 0) -> nn.Module:
    """The classifier of :func:`n_sweep`: :func:`advlab.models.mnist_net` (28×28 gray letters, 10 classes)."""
    config.seed_everything(seed)
    return models.mnist_net()


def n_sweep(
    ns: Sequence[int] = (250, 500, 1000, 2000),
    seeds: Sequence[int] = (0, 1, 2),
    modes: Sequence[str] = ("normal", "on", "off"),
    *,
    n_test: int = 1000,
    difficulty: str = "hard",
    iterations: int = 1500,
    batch_size: int = 64,
    lr: float = 3e-3,
    eps_on: float = 0.3,
    eps_off: float = 0.3,
    steps: int = 10,
    progress: bool = True,
) -> dict[str, dict[int, list[float]]]:
    """Test error vs training-set size N for normal / on-manifold / off-manifold training on FONTS.

    For every N and seed: draw N training images (``fonts.generate("train", N, seed=seed)``), train
    :func:`fonts_net` (initialised from ``seed``) with each mode for ``iterations`` Adam steps (the same
    number for every N, so that small sets are not under-trained; epochs = ceil(iterations · batch / N)),
    and measure the error on one fixed test set of ``n_test`` images (``seed=0``). ``modes`` may also hold
    ``"random"``, the augmentation control of :func:`fonts_hooks`. Adversarial modes attack with ``steps``
    PGD steps, ε = ``eps_on`` in θ (``"on"``, ``"random"``) or ``eps_off`` in pixels (``"off"``).

    Returns:
        ``{mode: {N: [test error per seed]}}``, errors as fractions in [0, 1].
    """
    for m in modes:
        if m not in MODES:
            raise AdvlabError(f"Unknown mode {m!r}; use some of {MODES}.")
    test = fonts.generate("test", n_test, difficulty, seed=0)
    dev = config.device()
    out: dict[str, dict[int, list[float]]] = {m: {int(n): [] for n in ns} for m in modes}
    for n in ns:
        epochs = max(1, math.ceil(iterations * batch_size / n))
        for seed in seeds:
            sample = fonts.generate("train", int(n), difficulty, seed=int(seed))
            for m in modes:
                model = fonts_net(int(seed)).to(dev)
                eps = eps_off if m == "off" else eps_on
                train_fonts(
                    model, sample, m, eps=eps, steps=steps, difficulty=difficulty, epochs=epochs,
                    batch_size=batch_size, lr=lr, optimizer="adam", weight_decay=0.0, seed=int(seed),
                    progress=progress,
                )
                err = 1.0 - train.accuracy(model, test.x.to(dev), test.y.to(dev))
                out[m][int(n)].append(err)
                if progress:
                    print(f"N={n} seed={seed} {m:6s} test error {err:.4f}", flush=True)
    return out


def summarize(results: dict[str, dict[int, list[float]]]) -> str:
    """A Markdown table of mean ± std test error (%) per N and mode from :func:`n_sweep`'s output."""
    modes = list(results)
    ns = sorted({n for m in modes for n in results[m]})
    head = "| N | " + " | ".join(modes) + " |\n|---|" + "---|" * len(modes)
    rows = []
    for n in ns:
        cells = []
        for m in modes:
            v = torch.tensor(results[m].get(n, []), dtype=torch.float64) * 100
            if len(v) == 0:
                cells.append("–")
            elif len(v) == 1:
                cells.append(f"{v[0]:.1f}")
            else:
                cells.append(f"{v.mean():.1f} ± {v.std():.1f}")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join([head, *rows])


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m advlab.manifold sweep``: run :func:`n_sweep`, print the table, optionally save JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m advlab.manifold", description="FONTS N-sweep (Stutz et al.)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sw = sub.add_parser("sweep", help="test error vs N for normal / on- / off-manifold training")
    sw.add_argument("--ns", type=int, nargs="+", default=[250, 500, 1000, 2000])
    sw.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    sw.add_argument("--modes", nargs="+", default=["normal", "on", "off"], choices=MODES)
    sw.add_argument("--iterations", type=int, default=1500)
    sw.add_argument("--steps", type=int, default=10, help="attack steps during adversarial training")
    sw.add_argument("--n-test", type=int, default=1000)
    sw.add_argument("--difficulty", default="hard", choices=("hard", "easy"))
    sw.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sw.add_argument("--out", help="write the raw results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = n_sweep(
        args.ns, args.seeds, args.modes, n_test=args.n_test, difficulty=args.difficulty,
        iterations=args.iterations, steps=args.steps,
    )
    print(summarize(res))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "test_error": res}, f, indent=1)
    return 0


__all__ = [
    "MODES",
    "ManifoldResult",
    "fonts_attack",
    "fonts_distance",
    "fonts_hooks",
    "fonts_net",
    "latent_attack",
    "latent_box",
    "latent_distance",
    "learned_perturb",
    "n_sweep",
    "off_manifold",
    "summarize",
    "theta_attack",
    "theta_box",
    "train_fonts",
]


if __name__ == "__main__":
    raise SystemExit(_main())
