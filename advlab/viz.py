"""Figures for the course notebooks: image grids, perturbations, confidence bars, curves and histograms.

Every function takes tensors (any device) or arrays, draws with matplotlib and returns what it drew on
(a ``Figure`` or the ``Axes``), so a notebook cell can show it and a test can inspect it headless. Images
are (C, H, W) or (H, W) in [0, 1]; a batch is (N, C, H, W). Probabilities are softmax outputs (K,) or (N, K).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from advlab.config import AdvlabError

ArrayLike = Tensor | np.ndarray | Sequence[float]

CORRECT, WRONG = "#1a7f37", "#cf222e"  # title colours: prediction right / wrong


def to_numpy(a: ArrayLike) -> np.ndarray:
    """A detached CPU float NumPy copy of a tensor, array or sequence."""
    if isinstance(a, Tensor):
        return a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=float)


def image_array(img: ArrayLike) -> np.ndarray:
    """(H, W) or (H, W, C) array for ``imshow`` from a (C, H, W), (1, C, H, W) or (H, W) image."""
    a = to_numpy(img)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
    if a.ndim not in (2, 3):
        raise AdvlabError(f"Expected one image shaped (C, H, W) or (H, W), got shape {a.shape}.")
    return a


def label_text(classes: Sequence[str] | None, k: int, conf: float | None = None) -> str:
    """``"7 (0.99)"``: the class name of index ``k`` (or the index) with an optional confidence."""
    name = classes[k] if classes is not None else str(k)
    return name if conf is None else f"{name} ({conf:.2f})"


def show_image(ax: Axes, img: ArrayLike, title: str | None = None, color: str | None = None) -> Axes:
    """Draw one [0, 1] image (grayscale for one channel) without ticks; returns ``ax``."""
    a = image_array(img)
    ax.imshow(a.clip(0, 1), cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9, **({"color": color} if color else {}))
    return ax


def show_perturbation(ax: Axes, delta: ArrayLike, title: str | None = None, scale: float | None = None) -> Axes:
    """Draw a perturbation δ = x̃ − x with a diverging map (red +, blue −, white 0); returns ``ax``.

    ``scale`` is the value drawn at full colour (default: max |δ|, so a tiny δ stays visible); multi-channel
    perturbations are averaged over channels.
    """
    a = to_numpy(delta)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.mean(0)
    m = float(scale) if scale is not None else float(np.abs(a).max())
    m = m if m > 0 else 1.0
    ax.imshow(a, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def image_grid(
    x: Tensor,
    probs: Tensor | None = None,
    classes: Sequence[str] | None = None,
    y: Tensor | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.35,
    suptitle: str | None = None,
) -> Figure:
    """A grid of images titled by predicted class and confidence.

    Args:
        x: (N, C, H, W) images in [0, 1].
        probs: optional (N, K) class probabilities; titles become ``"class (confidence)"`` of the argmax.
        classes: class names (index → name).
        y: optional (N,) true labels; titles are then green when the prediction is right, red when wrong.
        titles: explicit titles (overrides ``probs``).
        ncols: images per row.
        size: inches per image.
        suptitle: title of the whole figure.
    """
    n = len(x)
    if n == 0:
        raise AdvlabError("image_grid needs at least one image.")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.3) * nrows), squeeze=False)
    conf = pred = None
    if probs is not None:
        conf, pred = to_numpy(probs).max(1), to_numpy(probs).argmax(1)
    truth = None if y is None else to_numpy(y).astype(int)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        title, color = None, None
        if titles is not None:
            title = titles[i]
        elif pred is not None:
            title = label_text(classes, int(pred[i]), float(conf[i]))
        if pred is not None and truth is not None:
            color = CORRECT if pred[i] == truth[i] else WRONG
        show_image(ax, x[i], title, color)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def confidence_bars(
    ax: Axes,
    probs: Mapping[str, ArrayLike] | ArrayLike,
    classes: Sequence[str] | None = None,
    true: int | None = None,
) -> Axes:
    """Grouped bars of class probabilities, e.g. ``{"clean": p, "adversarial": p_adv}`` (each (K,)).

    The true class (if given) is marked on the x-axis with a star; returns ``ax``.
    """
    series = dict(probs) if isinstance(probs, Mapping) else {"p": probs}
    arrays = {name: to_numpy(p).reshape(-1) for name, p in series.items()}
    k = len(next(iter(arrays.values())))
    if any(len(a) != k for a in arrays.values()):
        raise AdvlabError("confidence_bars needs probability vectors of the same length.")
    names = [label_text(classes, i) for i in range(k)]
    if true is not None:
        names[true] = names[true] + "*"
    width = 0.8 / len(arrays)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for j, (name, a) in enumerate(arrays.items()):
        ax.bar(np.arange(k) + (j - (len(arrays) - 1) / 2) * width, a, width, label=name, color=colors[j % 4])
    ax.set_xticks(np.arange(k), names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    if len(arrays) > 1:
        ax.legend(fontsize=8, loc="best")
    return ax


def attack_figure(
    x: Tensor,
    x_adv: Tensor,
    clean_probs: Tensor,
    adv_probs: Tensor,
    classes: Sequence[str] | None = None,
    true: int | None = None,
    perturbation_title: str | None = None,
    bars: bool = True,
    scale: float | None = None,
) -> Figure:
    """The survey's Figure 1: clean image | perturbation | adversarial image (+ confidence bars).

    Args:
        x, x_adv: (C, H, W) or (1, C, H, W) clean and adversarial image in [0, 1].
        clean_probs, adv_probs: (K,) or (1, K) class probabilities for each.
        classes: class names; the image titles read ``"class (confidence)"``.
        true: the true class index (marks the bars, colours the titles).
        perturbation_title: title over δ (default ``"perturbation δ"``).
        bars: add a fourth panel with both probability vectors.
        scale: colour scale of δ (default max |δ|).
    """
    pc, pa = to_numpy(clean_probs).reshape(-1), to_numpy(adv_probs).reshape(-1)
    fig, axes = plt.subplots(1, 4 if bars else 3, figsize=(11 if bars else 7, 2.8),
                             gridspec_kw={"width_ratios": [1, 1, 1, 2.2] if bars else [1, 1, 1]})

    def color(p: np.ndarray) -> str | None:
        return None if true is None else (CORRECT if int(p.argmax()) == true else WRONG)

    show_image(axes[0], x, "clean: " + label_text(classes, int(pc.argmax()), float(pc.max())), color(pc))
    delta = to_numpy(x_adv) - to_numpy(x)
    show_perturbation(axes[1], delta, perturbation_title or "perturbation δ", scale)
    show_image(axes[2], x_adv, "adversarial: " + label_text(classes, int(pa.argmax()), float(pa.max())), color(pa))
    axes[1].text(-0.18, 0.5, "+", transform=axes[1].transAxes, fontsize=16, ha="center", va="center")
    axes[2].text(-0.18, 0.5, "=", transform=axes[2].transAxes, fontsize=16, ha="center", va="center")
    if bars:
        confidence_bars(axes[3], {"clean": pc, "adversarial": pa}, classes, true)
    fig.tight_layout()
    return fig


def accuracy_curves(
    x_values: ArrayLike,
    curves: Mapping[str, ArrayLike],
    xlabel: str,
    title: str | None = None,
    ax: Axes | None = None,
    ylabel: str = "accuracy",
    chance: float | None = None,
) -> Axes:
    """Accuracy (or any [0, 1] score) against a severity/ε, one line per entry of ``curves``; returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    xs = to_numpy(x_values)
    for name, values in curves.items():
        v = to_numpy(values)
        if len(v) != len(xs):
            raise AdvlabError(f"Curve {name!r} has {len(v)} values for {len(xs)} x values.")
        ax.plot(xs, v, marker="o", ms=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


def score_histograms(
    scores: Mapping[str, ArrayLike],
    xlabel: str = "max softmax probability",
    bins: int = 30,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Overlaid normalised histograms of a score (e.g. max-softmax) for several sets of inputs."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    arrays = {name: to_numpy(s).reshape(-1) for name, s in scores.items()}
    lo = min(float(a.min()) for a in arrays.values())
    hi = max(float(a.max()) for a in arrays.values())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for name, a in arrays.items():
        ax.hist(a, bins=edges, alpha=0.5, density=True, label=f"{name} (n = {len(a)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


def probs_of(model: torch.nn.Module, x: Tensor) -> Tensor:
    """(N, K) softmax probabilities of ``model`` on ``x`` (eval mode, no gradients)."""
    from advlab.attacks import logits_of

    return logits_of(model, x).softmax(1)


__all__ = [
    "accuracy_curves",
    "attack_figure",
    "confidence_bars",
    "image_array",
    "image_grid",
    "label_text",
    "probs_of",
    "score_histograms",
    "show_image",
    "show_perturbation",
    "to_numpy",
]
