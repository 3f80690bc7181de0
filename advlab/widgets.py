"""The ε/norm explorer: how big must a perturbation be, in which norm, to change a prediction?

Two layers, so that the notebook works without a live kernel and tests run headless:

* :func:`explore` — a plain function. With no arguments it attacks the demo image (the first ``7`` of
  the MNIST test split that the zoo's ``"mnist-cnn"`` classifies correctly with confidence ≥ 0.9) with
  10-step PGD at the default ε of the chosen norm, draws clean image | perturbation δ | adversarial
  image | confidence bars, and returns an :class:`Exploration` with the numbers.
* :func:`explorer` — an ipywidgets wrapper: an ε slider and a norm selector (L∞, L2, L1) that redraw
  through :func:`explore`. The output area carries the CSS class ``advlab-explorer-output`` (the whole
  widget ``advlab-explorer``), so browser tests can find it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
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
_ALIASES = {"inf": "Linf", "linf": "Linf", "l∞": "Linf", "∞": "Linf", "l2": "L2", "2": "L2", "l1": "L1", "1": "L1"}
ATTACKS = ("pgd", "fgsm")
CSS_CLASS = "advlab-explorer"
OUTPUT_CSS_CLASS = "advlab-explorer-output"


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
    dev = next(model.parameters()).device
    probs = attacks.predict(model, x.to(dev)).softmax(1).cpu()
    conf, pred = probs.max(1)
    ok = ((y.cpu() == label) & (pred == label) & (conf >= min_conf)).nonzero().flatten()
    if ok.numel() == 0:
        raise AdvlabError(f"No image of class {label} is classified correctly with confidence >= {min_conf}.")
    return int(ok[0])


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
    name = norm_name(norm)
    p, _, _, default_eps = NORMS[name]
    eps = default_eps if eps is None else float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise AdvlabError(f"eps must be a finite number >= 0, got {eps!r}.")
    if attack not in ATTACKS:
        raise AdvlabError(f"Unknown attack {attack!r} for the explorer; use one of {ATTACKS}.")
    if x is None:
        d_model, x, y, d_classes = _default_setup()
        model = d_model if model is None else model
        classes = classes or d_classes
    elif model is None:
        raise AdvlabError("Pass the model to attack together with your own image x (and its label y).")
    if y is None:
        raise AdvlabError("Pass the true label y of your image x.")
    dev = next(model.parameters()).device
    xb = x.reshape(1, *x.shape[-3:]).to(dev)
    yb = torch.as_tensor(y).reshape(1).long().to(dev)
    if attack == "pgd":
        gen = torch.Generator().manual_seed(seed)  # a CPU stream: the same start on every device
        res = attacks.pgd(model, xb, yb, eps, norm=p, steps=steps, generator=gen)
    else:
        res = attacks.fgsm(model, xb, yb, eps, norm=p)
    probs = attacks.predict(model, torch.cat([xb, res.x_adv])).softmax(1).cpu()
    n_classes = probs.shape[1]
    names = tuple(classes) if classes is not None else tuple(str(k) for k in range(n_classes))
    (c_conf, a_conf), (c_pred, a_pred) = probs.max(1)
    out = Exploration(
        eps=eps,
        norm=name,
        distance=float(res.norms[0]),
        label=int(yb[0]),
        clean_pred=int(c_pred),
        clean_conf=float(c_conf),
        adv_pred=int(a_pred),
        adv_conf=float(a_conf),
        clean_probs=probs[0],
        adv_probs=probs[1],
        x=xb[0].cpu(),
        x_adv=res.x_adv[0].cpu(),
        classes=names,
    )
    if not plot:
        return out
    sym = {"Linf": "∞", "L2": "2", "L1": "1"}[name]
    fig = viz.attack_figure(
        out.x, out.x_adv, out.clean_probs, out.adv_probs, names, true=out.label,
        perturbation_title=f"δ, ε = {eps:.3g}, ‖δ‖$_{{{sym}}}$ = {out.distance:.3g}",
    )
    fig.suptitle(f"{attack.upper()} in the L{sym} ball", fontsize=10, y=1.02)
    return dataclasses.replace(out, figure=fig)


@functools.cache
def _explorer_class():
    """``Explorer``: a VBox whose plain-text form (shown where no widget can render) says what to do."""
    import ipywidgets as widgets

    class Explorer(widgets.VBox):
        def __repr__(self) -> str:
            return "ε/norm explorer (run this cell in a live Jupyter kernel to move the sliders)"

    return Explorer


def explorer(norm: str = "Linf", eps: float | None = None, **explore_kwargs):
    """An ipywidgets ε slider + norm selector around :func:`explore`; returns the widget to display.

    Switching the norm resets the slider to that norm's range and default ε (:data:`NORMS`). Every redraw
    shows the figure and then prints :attr:`Exploration.caption`. ``explore_kwargs`` (model, x, y, classes,
    attack, steps, seed) are passed through.
    """
    import ipywidgets as widgets

    name = norm_name(norm)
    _, top, step, default = NORMS[name]
    norm_w = widgets.ToggleButtons(
        options=[("L∞", "Linf"), ("L2", "L2"), ("L1", "L1")], value=name, description="norm",
        style={"button_width": "60px"},
    )
    eps_w = widgets.FloatSlider(
        value=default if eps is None else eps, min=0.0, max=top, step=step, description="ε",
        continuous_update=False, readout_format=".2f",
    )
    out = widgets.Output()
    out.add_class(OUTPUT_CSS_CLASS)
    norm_w.add_class(f"{CSS_CLASS}-norm")
    eps_w.add_class(f"{CSS_CLASS}-eps")
    state = {"busy": False}

    def redraw(*_) -> None:
        if state["busy"]:
            return
        with out:
            out.clear_output(wait=True)
            result = explore(eps_w.value, norm_w.value, **explore_kwargs)
            plt.show()
            plt.close(result.figure)
            print(result.caption)

    def on_norm(change) -> None:
        _, top, step, default = NORMS[change["new"]]
        state["busy"] = True  # one redraw for the switch, not one per slider trait
        try:
            eps_w.max = max(top, eps_w.min)
            eps_w.step = step
            eps_w.value = default
        finally:
            state["busy"] = False
        redraw()

    norm_w.observe(on_norm, names="value")
    eps_w.observe(redraw, names="value")
    box = _explorer_class()([widgets.HBox([norm_w, eps_w]), out])
    box.add_class(CSS_CLASS)
    redraw()
    return box


__all__ = ["CSS_CLASS", "NORMS", "OUTPUT_CSS_CLASS", "Exploration", "demo_index", "explore", "explorer", "norm_name"]
