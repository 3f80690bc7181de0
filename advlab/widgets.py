"""Slider demos: how big must a perturbation be, in which norm, to change a prediction?

Every demo has two layers, so that a notebook works without a live kernel and tests run headless: a plain
function that computes, draws (optionally) and returns a result with a one-line ``.caption``, and an
ipywidgets wrapper whose callbacks redraw through it, show the figure and then print the caption.

* :func:`explore` / :func:`explorer` — the MNIST ε/norm explorer. With no arguments :func:`explore` attacks the
  demo image (the first ``7`` of the MNIST test split that the zoo's ``"mnist-cnn"`` classifies correctly with
  confidence ≥ 0.9) with 10-step PGD at the default ε of the chosen norm, draws clean image | perturbation δ |
  adversarial image | confidence bars, and returns an :class:`Exploration`.
* :func:`explore_toy` / :func:`toy_explorer` — the same on a 2-D toy whose true hypothesis h* is known
  (:mod:`advlab.data.toy2d`): the figure shows the learned and the true boundary, the ball B_ε(x) and x̃, and the
  :class:`ToyExploration` says whether x̃ is a *practical* and/or a *consistent* adversarial example (survey ②).
* :func:`draw_balls` / :func:`balls_explorer` — the L1, L2 and L∞ balls B_ε(x) in the unit square.

CSS classes (for browser tests): both explorers are a box ``advlab-explorer`` holding ToggleButtons
``advlab-explorer-norm`` (L∞ / L2 / L1), a FloatSlider ``advlab-explorer-eps`` and an Output
``advlab-explorer-output``; the balls demo uses ``advlab-balls``, ``advlab-balls-eps`` and ``advlab-balls-output``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor, nn

from advlab import attacks, viz
from advlab.config import AdvlabError

# norm name -> (p, slider maximum, slider step, default ε). The maxima are large enough to flip the demo
# image in every norm; an L∞ ball of radius 0.5 contains a mid-grey image, so nothing is safe there.
NORMS: dict[str, tuple[float, float, float, float]] = {
    "Linf": (math.inf, 0.5, 0.01, 0.15),
    "L2": (2.0, 6.0, 0.1, 2.0),
    "L1": (1.0, 40.0, 0.5, 10.0),
}
# The same for the 2-D toys (units of the unit square). Every maximum flips the demo point in its norm; at the
# defaults x̃ of the demo point lies between the learned and the true boundary (practical and consistent).
TOY_NORMS: dict[str, tuple[float, float, float, float]] = {
    "Linf": (math.inf, 0.3, 0.01, 0.1),
    "L2": (2.0, 0.4, 0.01, 0.14),
    "L1": (1.0, 0.5, 0.01, 0.17),
}
# demo point of each toy (its true label follows from h*); a toy without an entry uses its first test point of
# class 1 that the model gets right with confidence >= 0.9
TOY_DEMO: dict[str, tuple[float, float]] = {"circle": (0.6, 0.4)}
SYMBOLS = {"Linf": "∞", "L2": "2", "L1": "1"}
_ALIASES = {"inf": "Linf", "linf": "Linf", "l∞": "Linf", "∞": "Linf", "l2": "L2", "2": "L2", "l1": "L1", "1": "L1"}
ATTACKS = ("pgd", "fgsm")
CSS_CLASS = "advlab-explorer"
OUTPUT_CSS_CLASS = "advlab-explorer-output"
BALLS_CSS_CLASS = "advlab-balls"


def norm_name(norm: str | float | int) -> str:
    """Canonical ``"Linf"``, ``"L2"`` or ``"L1"`` of a norm given as ``"inf"``, ``"L∞"``, ``math.inf``, 2, ``"l1"``…"""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        key = "inf" if math.isinf(norm) else f"{norm:g}"
    else:
        key = str(norm).strip().lower()
    if key not in _ALIASES:
        raise AdvlabError(f"Unknown norm {norm!r} for the explorer; use 'Linf', 'L2' or 'L1'.")
    return _ALIASES[key]


@dataclasses.dataclass(frozen=True)
class Exploration:
    """What :func:`explore` computed for one image.

    Attributes:
        eps: the radius ε (pixel units of ``norm``); norm: ``"Linf"``, ``"L2"`` or ``"L1"``.
        distance: the actual ``||x̃ − x||_p`` (≤ ε up to float rounding).
        label: true class index y; clean_pred / adv_pred: ŷ on x and x̃; clean_conf / adv_conf: their softmax
            probability.
        clean_probs, adv_probs: (K,) probabilities on x and x̃ (CPU).
        x, x_adv: (C, H, W) clean and adversarial image (CPU).
        classes: class names; figure: the drawn figure (``None`` when ``plot=False``).
    """

    eps: float
    norm: str
    distance: float
    label: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float
    clean_probs: Tensor
    adv_probs: Tensor
    x: Tensor
    x_adv: Tensor
    classes: tuple[str, ...]
    figure: Figure | None = dataclasses.field(default=None, compare=False)

    @property
    def changed(self) -> bool:
        """Whether the adversarial prediction differs from the clean one."""
        return self.adv_pred != self.clean_pred

    @property
    def caption(self) -> str:
        """``plotted eps = 0.15 | norm = Linf | clean: 7 (0.99) | adversarial: 3 (0.87)``."""
        clean = viz.label_text(self.classes, self.clean_pred, self.clean_conf)
        adv = viz.label_text(self.classes, self.adv_pred, self.adv_conf)
        return f"plotted eps = {self.eps:.3g} | norm = {self.norm} | clean: {clean} | adversarial: {adv}"


@dataclasses.dataclass(frozen=True)
class ToyExploration(Exploration):
    """What :func:`explore_toy` computed for one point of a 2-D toy: an :class:`Exploration` plus the truth.

    Attributes (besides :class:`Exploration`'s; x and x_adv are (2,) points, label = h*(x)):
        toy: the toy's name; true_adv: the true label h*(x̃) of the adversarial point.
    """

    toy: str = dataclasses.field(kw_only=True)
    true_adv: int = dataclasses.field(kw_only=True)

    @property
    def practical(self) -> bool:
        """x is classified correctly and ĥ(x̃) ≠ ĥ(x): a practical adversarial example (x̃ is in the ball)."""
        return self.clean_pred == self.label and self.changed

    @property
    def consistent(self) -> bool:
        """x is classified correctly and ĥ(x̃) ≠ h*(x̃): an adversarial example by the consistent definition."""
        return self.clean_pred == self.label and self.adv_pred != self.true_adv


@functools.lru_cache(maxsize=1)
def _default_setup() -> tuple[nn.Module, Tensor, Tensor, tuple[str, ...]]:
    """The zoo's MNIST CNN and the demo image (cached: loading takes a moment)."""
    from advlab import data, zoo

    model = zoo.load("mnist-cnn", progress=False)
    x, y, classes = data.load("mnist", "test")
    i = demo_index(model, x, y)
    return model, x[i], y[i], tuple(classes)


def demo_index(model: nn.Module, x: Tensor, y: Tensor, label: int = 7, min_conf: float = 0.9) -> int:
    """Index of the first image of class ``label`` that ``model`` gets right with confidence ≥ ``min_conf``."""
    probs = attacks.logits_of(model, x).softmax(1).cpu()  # on the model's device, back on x's
    conf, pred = probs.max(1)
    ok = ((y.cpu() == label) & (pred == label) & (conf >= min_conf)).nonzero().flatten()
    if ok.numel() == 0:
        raise AdvlabError(f"No image of class {label} is classified correctly with confidence >= {min_conf}.")
    return int(ok[0])


def _parse(eps: float | None, norm: str | float, attack: str, table: dict) -> tuple[str, float, float]:
    """(norm name, p, ε) with ε defaulting to the table's entry; clear errors for bad arguments."""
    name = norm_name(norm)
    p, _, _, default_eps = table[name]
    eps = default_eps if eps is None else float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise AdvlabError(f"eps must be a finite number >= 0, got {eps!r}.")
    if attack not in ATTACKS:
        raise AdvlabError(f"Unknown attack {attack!r} for the explorer; use one of {ATTACKS}.")
    return name, p, eps


def _attack_one(
    model: nn.Module, x: Tensor, y: int | Tensor, eps: float, name: str, p: float, classes: Sequence[str] | None,
    attack: str, steps: int, seed: int,
) -> dict:
    """Attack one input x (*shape) with label y; returns the fields of an :class:`Exploration` (no figure).

    The attacks and :func:`advlab.attacks.logits_of` run on the model's device and answer on x's; the fields are
    on the CPU."""
    xb = x.reshape(1, *x.shape)
    yb = torch.as_tensor(y).reshape(1).long().to(xb.device)
    if attack == "pgd":
        gen = torch.Generator().manual_seed(seed)  # a CPU stream: the same start on every device
        res = attacks.pgd(model, xb, yb, eps, norm=p, steps=steps, generator=gen)
    else:
        res = attacks.fgsm(model, xb, yb, eps, norm=p)
    probs = attacks.logits_of(model, torch.cat([xb, res.x_adv])).softmax(1).cpu()
    names = tuple(classes) if classes is not None else tuple(str(k) for k in range(probs.shape[1]))
    (c_conf, a_conf), (c_pred, a_pred) = probs.max(1)
    return dict(
        eps=eps, norm=name, distance=float(res.norms[0]), label=int(yb[0]), clean_pred=int(c_pred),
        clean_conf=float(c_conf), adv_pred=int(a_pred), adv_conf=float(a_conf), clean_probs=probs[0],
        adv_probs=probs[1], x=xb[0].cpu(), x_adv=res.x_adv[0].cpu(), classes=names,
    )


def explore(
    eps: float | None = None,
    norm: str | float = "Linf",
    *,
    model: nn.Module | None = None,
    x: Tensor | None = None,
    y: int | Tensor | None = None,
    classes: Sequence[str] | None = None,
    attack: str = "pgd",
    steps: int = 10,
    seed: int = 0,
    plot: bool = True,
) -> Exploration:
    """Attack one image inside ``B_ε(x)`` of the chosen norm and (optionally) draw the result.

    Args:
        eps: radius in pixel units of ``norm`` (default: the norm's entry in :data:`NORMS`, e.g. 0.15 for L∞).
        norm: ``"Linf"``, ``"L2"`` or ``"L1"`` (aliases such as ``"inf"`` or 2 work too).
        model: classifier returning logits for [0, 1] inputs (default: the zoo's ``"mnist-cnn"``).
        x: one image (C, H, W) or (1, C, H, W) in [0, 1] (default: the demo image); needs ``y`` too.
        y: its true label (int or 0-d/1-element tensor).
        classes: class names (default: the digits, or the indices).
        attack: ``"pgd"`` (``steps`` steps, seeded random start) or ``"fgsm"`` (one step).
        steps: PGD steps (10 keeps the widget responsive).
        seed: seed of PGD's random start.
        plot: draw the figure (with pyplot, so a notebook shows it) and keep it in ``.figure``.

    Returns:
        :class:`Exploration`. At ε = 0 the adversarial image is the clean one, so both predictions agree.
    """
    name, p, eps = _parse(eps, norm, attack, NORMS)
    if x is None:
        d_model, x, y, d_classes = _default_setup()
        model = d_model if model is None else model
        classes = classes or d_classes
    elif model is None:
        raise AdvlabError("Pass the model to attack together with your own image x (and its label y).")
    if y is None:
        raise AdvlabError("Pass the true label y of your image x.")
    out = Exploration(**_attack_one(model, x.reshape(x.shape[-3:]), y, eps, name, p, classes, attack, steps, seed))
    if not plot:
        return out
    sym = SYMBOLS[name]
    fig = viz.attack_figure(
        out.x, out.x_adv, out.clean_probs, out.adv_probs, out.classes, true=out.label,
        perturbation_title=f"δ, ε = {eps:.3g}, ‖δ‖$_{{{sym}}}$ = {out.distance:.3g}",
    )
    fig.suptitle(f"{attack.upper()} in the L{sym} ball", fontsize=10, y=1.02)
    return dataclasses.replace(out, figure=fig)


# ------------------------------------------------------------------------------------------------ 2-D toys


def ball_outline(center: Sequence[float] | Tensor, eps: float, norm: str | float, n: int = 256) -> np.ndarray:
    """Closed outline (M, 2) of the 2-D sphere ``{x' : ||x' − center||_p = ε}``.

    A square for L∞, a circle for L2 (``n`` points), a diamond for L1; ``center`` is (2,).
    """
    name = norm_name(norm)
    c = viz.to_numpy(center).reshape(2)
    if name == "L2":
        t = np.linspace(0.0, 2 * np.pi, n)
        unit = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif name == "Linf":
        unit = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1], [1, 1]], dtype=float)
    else:
        unit = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 0]], dtype=float)
    return c + float(eps) * unit


@functools.lru_cache(maxsize=4)
def toy_setup(name: str = "circle") -> tuple[nn.Module, Tensor, Tensor]:
    """The default model of a toy and its training points: :func:`advlab.toy.toy2d_mlp` (trained once, cached)."""
    from advlab import toy

    return toy.toy2d_mlp(name)


def toy_plane(
    ax: Axes,
    model: nn.Module,
    name: str = "circle",
    points: tuple[Tensor, Tensor] | None = None,
    grid: int = 200,
    legend: bool = True,
) -> Axes:
    """Draw a 2-D toy on ``ax``: the model's probability of class 1 (shading), its decision boundary (solid
    black), the true boundary h* (dashed green) and optional labelled points (x (N, 2), y (N,)); returns ``ax``."""
    from advlab.data import toy2d

    axis = torch.linspace(0, 1, grid)
    g1, g2 = torch.meshgrid(axis, axis, indexing="xy")
    pts = torch.stack([g1.reshape(-1), g2.reshape(-1)], dim=1)
    prob = attacks.logits_of(model, pts).softmax(1)[:, 1].reshape(grid, grid).numpy()  # on the model's device
    true = toy2d.true_score(name, pts).reshape(grid, grid).numpy()
    a = axis.numpy()
    ax.contourf(a, a, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.25)
    ax.contour(a, a, prob, levels=[0.5], colors="k", linewidths=1.5)
    ax.contour(a, a, true, levels=[0.0], colors="#1a7f37", linewidths=1.5, linestyles="--")
    classes = toy2d.CLASSES[name]
    if points is not None:
        px, py = viz.to_numpy(points[0]), viz.to_numpy(points[1]).astype(int)
        for k, color in enumerate(("#4c72b0", "#c44e52")):
            sel = py == k
            ax.scatter(px[sel, 0], px[sel, 1], s=12, color=color, edgecolors="k", linewidths=0.3, zorder=3,
                       label=f"training: {classes[k]}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if legend:
        handles = [Line2D([], [], color="k", lw=1.5, label="learned boundary (ĥ)"),
                   Line2D([], [], color="#1a7f37", lw=1.5, ls="--", label="true boundary (h*)")]
        ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=7, loc="upper right",
                  framealpha=0.8)
    return ax


def _toy_point(name: str, model: nn.Module) -> Tensor:
    if name in TOY_DEMO:
        return torch.tensor(TOY_DEMO[name])
    from advlab.data import toy2d

    x, y, _ = toy2d.load_toy(name, "test", None)
    return x[demo_index(model, x, y, label=1)]


def explore_toy(
    eps: float | None = None,
    norm: str | float = "Linf",
    *,
    name: str = "circle",
    model: nn.Module | None = None,
    x: Sequence[float] | Tensor | None = None,
    points: tuple[Tensor, Tensor] | None = None,
    attack: str = "pgd",
    steps: int = 20,
    seed: int = 0,
    plot: bool = True,
) -> ToyExploration:
    """Attack one point of a 2-D toy inside ``B_ε(x)`` and compare the two definitions of survey ②.

    The label of x is the true one, ``h*(x)`` (:func:`advlab.data.toy2d.true_label`), and the result records
    ``h*(x̃)`` too, so :attr:`ToyExploration.practical` and :attr:`ToyExploration.consistent` say which
    definition calls x̃ an adversarial example.

    Args:
        eps: radius in units of the unit square (default: the norm's entry in :data:`TOY_NORMS`).
        norm: ``"Linf"``, ``"L2"`` or ``"L1"`` (aliases work).
        name: the toy (``"circle"``, ``"sine"``, ``"xor"``).
        model: classifier returning 2 logits for points (N, 2) in [0, 1]² (default: :func:`toy_setup`'s MLP,
            drawn with its training points).
        x: the point (2,) to attack (default: :data:`TOY_DEMO`, e.g. (0.6, 0.4) for the circle).
        points: labelled points (x (N, 2), y (N,)) to draw (default: the default model's training points).
        attack: ``"pgd"`` (``steps`` steps, seeded random start) or ``"fgsm"``.
        steps, seed: PGD steps and the seed of its random start.
        plot: draw the plane (boundaries, ball, x → x̃) and the confidence bars; keep the figure in ``.figure``.

    Returns:
        :class:`ToyExploration`. At ε = 0 x̃ = x, so both predictions agree.
    """
    from advlab.data import toy2d

    nname, p, eps = _parse(eps, norm, attack, TOY_NORMS)
    if name not in toy2d.CLASSES:
        raise AdvlabError(f"Unknown toy dataset {name!r}; choose one of {sorted(toy2d.CLASSES)}.")
    if model is None:
        model, x_train, y_train = toy_setup(name)
        points = (x_train, y_train) if points is None else points
    x = _toy_point(name, model) if x is None else torch.as_tensor(x, dtype=torch.float32)
    if x.numel() != 2:
        raise AdvlabError(f"x must be one point (2,) of the unit square, got shape {tuple(x.shape)}.")
    x = x.reshape(2).float()
    label = int(toy2d.true_label(name, x[None])[0])
    fields = _attack_one(model, x, label, eps, nname, p, toy2d.CLASSES[name], attack, steps, seed)
    out = ToyExploration(**fields, toy=name, true_adv=int(toy2d.true_label(name, fields["x_adv"][None])[0]))
    if not plot:
        return out
    yes = {True: "yes", False: "no"}
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(9, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
    toy_plane(ax, model, name, points)
    ball = ball_outline(out.x, eps, nname)
    ax.fill(ball[:, 0], ball[:, 1], color="#f2c14e", alpha=0.35, zorder=2)
    ax.plot(ball[:, 0], ball[:, 1], color="#b8860b", lw=1, zorder=2)
    x0, x1 = out.x.numpy(), out.x_adv.numpy()
    ax.annotate("", xy=x1, xytext=x0, arrowprops=dict(arrowstyle="->", color="k", lw=1), zorder=4)
    ax.scatter(*x0, s=60, color="white", edgecolors="k", zorder=5)
    ax.scatter(*x1, s=140, marker="*", color="#f58518", edgecolors="k", zorder=5)
    ax.text(*x0, r"  $x$", fontsize=10, va="center", zorder=5)
    ax.text(*x1, r"  $\tilde{x}$", fontsize=10, va="center", zorder=5)
    sym = SYMBOLS[nname]
    ax.set_title(f"{attack.upper()} in the L{sym} ball, ε = {eps:.3g}", fontsize=10)
    viz.confidence_bars(bars, {r"$\hat h(x)$": out.clean_probs, r"$\hat h(\tilde{x})$": out.adv_probs}, out.classes,
                        true=out.label)
    bars.set_title(f"$h^*(x)$ = {out.classes[out.label]}, $h^*(\\tilde{{x}})$ = {out.classes[out.true_adv]}\n"
                   f"practical: {yes[out.practical]} | consistent: {yes[out.consistent]}", fontsize=10)
    fig.tight_layout()
    return dataclasses.replace(out, figure=fig)


# --------------------------------------------------------------------------------------------- the Lp balls


@dataclasses.dataclass(frozen=True)
class Balls:
    """What :func:`draw_balls` drew: ``eps``, the ``center`` (2,), the ``areas`` ``{"L1": 2ε², "L2": πε², "Linf":
    4ε²}`` of the balls in the plane (the box ignored) and the figure (``None`` when ``plot=False``)."""

    eps: float
    center: tuple[float, float]
    areas: dict[str, float]
    figure: Figure | None = dataclasses.field(default=None, compare=False)

    @property
    def caption(self) -> str:
        """``plotted eps = 0.15 | centre = (0.50, 0.50) | areas: L1 0.045, L2 0.071, Linf 0.090``."""
        areas = ", ".join(f"{k} {v:.3f}" for k, v in self.areas.items())
        return (f"plotted eps = {self.eps:.3g} | centre = ({self.center[0]:.2f}, {self.center[1]:.2f}) | "
                f"areas: {areas}")


def draw_balls(eps: float = 0.15, center: Sequence[float] = (0.5, 0.5), *, plot: bool = True) -> Balls:
    """The L1, L2 and L∞ balls ``B_ε(x) = {x' : ||x' − x||_p ≤ ε}`` around one point of the unit square.

    They are nested, ``B^1_ε ⊂ B^2_ε ⊂ B^∞_ε``, because ``||δ||_∞ ≤ ||δ||_2 ≤ ||δ||_1``. The part outside the box
    [0, 1]² (drawn as a frame) is not a valid input.
    """
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise AdvlabError(f"eps must be a finite number >= 0, got {eps!r}.")
    c = tuple(float(v) for v in viz.to_numpy(center).reshape(-1))
    if len(c) != 2:
        raise AdvlabError(f"center must be one point (x1, x2), got {center!r}.")
    out = Balls(eps, (c[0], c[1]), {"L1": 2 * eps**2, "L2": math.pi * eps**2, "Linf": 4 * eps**2})
    if not plot:
        return out
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for nname, color in (("Linf", "#4c72b0"), ("L2", "#55a868"), ("L1", "#c44e52")):
        ring = ball_outline(c, eps, nname)
        ax.fill(ring[:, 0], ring[:, 1], color=color, alpha=0.25)
        ax.plot(ring[:, 0], ring[:, 1], color=color, lw=1.5, label=f"L{SYMBOLS[nname]}: area {out.areas[nname]:.3f}")
    ax.plot([0, 1, 1, 0, 0], [0, 0, 1, 1, 0], color="k", lw=1)
    ax.scatter(*c, color="k", s=20, zorder=3)
    ax.text(c[0], c[1], r"  $x$", va="center")
    pad = max(0.05, eps - 0.45)
    ax.set_xlim(-pad, 1 + pad)
    ax.set_ylim(-pad, 1 + pad)
    ax.set_aspect("equal")
    ax.set_title(f"$B_\\epsilon(x)$ for ε = {eps:.3g} in the box [0, 1]²", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return dataclasses.replace(out, figure=fig)


# ------------------------------------------------------------------------------------------ ipywidgets wrappers


@functools.cache
def _box_class(text: str):
    """A VBox class whose plain-text form (shown where no widget can render) is ``text``."""
    import ipywidgets as widgets

    class Box(widgets.VBox):
        def __repr__(self) -> str:
            return text

    return Box


def _output(css: str, draw: Callable[[], object]) -> tuple[object, Callable[..., None]]:
    """An Output area with CSS class ``css`` and a ``redraw`` that shows ``draw()``'s figure, then its caption."""
    import ipywidgets as widgets

    out = widgets.Output()
    out.add_class(css)

    def redraw(*_) -> None:
        with out:
            out.clear_output(wait=True)
            result = draw()
            plt.show()
            plt.close(result.figure)
            print(result.caption)

    return out, redraw


def _norm_eps_widget(explore_fn: Callable, table: dict, norm: str, eps: float | None, text: str, kwargs: dict):
    """The explorer widget around ``explore_fn(eps, norm, **kwargs)``: norm buttons + ε slider + output."""
    import ipywidgets as widgets

    name = norm_name(norm)
    _, top, step, default = table[name]
    norm_w = widgets.ToggleButtons(
        options=[(f"L{SYMBOLS[k]}", k) for k in ("Linf", "L2", "L1")], value=name, description="norm",
        style={"button_width": "60px"},
    )
    eps_w = widgets.FloatSlider(
        value=default if eps is None else eps, min=0.0, max=top, step=step, description="ε",
        continuous_update=False, readout_format=".2f",
    )
    norm_w.add_class(f"{CSS_CLASS}-norm")
    eps_w.add_class(f"{CSS_CLASS}-eps")
    out, redraw = _output(OUTPUT_CSS_CLASS, lambda: explore_fn(eps_w.value, norm_w.value, **kwargs))
    state = {"busy": False}

    def on_eps(*_) -> None:
        if not state["busy"]:
            redraw()

    def on_norm(change) -> None:
        _, top, step, default = table[change["new"]]
        state["busy"] = True  # one redraw for the switch, not one per slider trait
        try:
            eps_w.max = max(top, eps_w.min)
            eps_w.step = step
            eps_w.value = default
        finally:
            state["busy"] = False
        redraw()

    norm_w.observe(on_norm, names="value")
    eps_w.observe(on_eps, names="value")
    box = _box_class(text)([widgets.HBox([norm_w, eps_w]), out])
    box.add_class(CSS_CLASS)
    redraw()
    return box


def explorer(norm: str = "Linf", eps: float | None = None, **explore_kwargs):
    """An ipywidgets ε slider + norm selector around :func:`explore`; returns the widget to display.

    Switching the norm resets the slider to that norm's range and default ε (:data:`NORMS`). Every redraw
    shows the figure and then prints :attr:`Exploration.caption`. ``explore_kwargs`` (model, x, y, classes,
    attack, steps, seed) are passed through.
    """
    return _norm_eps_widget(explore, NORMS, norm, eps,
                            "ε/norm explorer (run this cell in a live Jupyter kernel to move the sliders)",
                            explore_kwargs)


def toy_explorer(norm: str = "Linf", eps: float | None = None, **explore_kwargs):
    """The explorer of :func:`explore_toy`: the same widget, CSS classes and caption as :func:`explorer`.

    Ranges and defaults per norm come from :data:`TOY_NORMS`; ``explore_kwargs`` (name, model, x, points,
    attack, steps, seed) are passed through.
    """
    return _norm_eps_widget(explore_toy, TOY_NORMS, norm, eps,
                            "toy ε/norm explorer (run this cell in a live Jupyter kernel to move the sliders)",
                            explore_kwargs)


def balls_explorer(eps: float = 0.15, center: Sequence[float] = (0.5, 0.5)):
    """An ε slider around :func:`draw_balls` (box ``advlab-balls``, slider ``advlab-balls-eps``, output
    ``advlab-balls-output``); every redraw shows the figure and prints :attr:`Balls.caption`."""
    import ipywidgets as widgets

    eps_w = widgets.FloatSlider(value=eps, min=0.0, max=0.6, step=0.01, description="ε", continuous_update=False,
                                readout_format=".2f")
    eps_w.add_class(f"{BALLS_CSS_CLASS}-eps")
    out, redraw = _output(f"{BALLS_CSS_CLASS}-output", lambda: draw_balls(eps_w.value, center))
    eps_w.observe(redraw, names="value")
    box = _box_class("L1/L2/L∞ balls (run this cell in a live Jupyter kernel to move the slider)")([eps_w, out])
    box.add_class(BALLS_CSS_CLASS)
    redraw()
    return box


__all__ = [
    "BALLS_CSS_CLASS",
    "CSS_CLASS",
    "NORMS",
    "OUTPUT_CSS_CLASS",
    "TOY_DEMO",
    "TOY_NORMS",
    "Balls",
    "Exploration",
    "ToyExploration",
    "ball_outline",
    "balls_explorer",
    "demo_index",
    "draw_balls",
    "explore",
    "explore_toy",
    "explorer",
    "norm_name",
    "toy_explorer",
    "toy_plane",
    "toy_setup",
]
