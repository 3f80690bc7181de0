"""Headless tests of the 2-D toy explorer and the Lp-balls demo (advlab.widgets), and of the toy helpers they use."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from advlab import toy, widgets
from advlab.config import AdvlabError
from advlab.data import toy2d

CAPTION = re.compile(
    r"^plotted eps = [0-9.e+-]+ \| norm = (Linf|L2|L1) \| clean: (inside|outside) \((0|1)\.\d\d\) \| "
    r"adversarial: (inside|outside) \((0|1)\.\d\d\)$"
)


@pytest.fixture(scope="module")
def setup():
    return widgets.toy_setup("circle")


def test_toy_model_fits_its_points_and_differs_from_the_truth(setup):
    model, x, y = setup
    assert x.shape == (100, 2) and torch.equal(y, toy2d.true_label("circle", x))
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all(), "the MLP should fit its 100 training points"
        grid = torch.rand(20000, 2, generator=torch.Generator().manual_seed(3))
        disagree = (model(grid).argmax(1) != toy2d.true_label("circle", grid)).float().mean().item()
    assert 0.005 < disagree < 0.15, "the learned boundary should be close to, but not equal to, the true one"
    again, _, _ = toy.toy2d_mlp("circle")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_toy_model_leaves_the_global_random_state_and_threads_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    toy.toy2d_mlp("sine", n_train=20, steps=5)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads


def test_true_hypothesis_is_h_star():
    h = toy.TrueHypothesis("xor")
    x = torch.rand(500, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(h(x).argmax(1), toy2d.true_label("xor", x)) and not h.training
    with pytest.raises(AdvlabError, match="circle"):
        toy.TrueHypothesis("square")


@pytest.mark.parametrize("norm", list(widgets.TOY_NORMS))
def test_zero_eps_keeps_and_max_eps_changes_the_prediction(agg, norm):
    zero = widgets.explore_toy(0.0, norm, plot=False)
    assert zero.adv_pred == zero.clean_pred == zero.label == 1 and not zero.changed
    assert zero.distance == 0.0 and torch.equal(zero.x_adv, zero.x)
    assert not zero.practical and not zero.consistent
    top = widgets.TOY_NORMS[norm][1]
    big = widgets.explore_toy(top, norm, plot=False)
    assert big.changed and big.practical, f"at the slider's maximum the demo point must flip ({norm})"
    assert big.distance <= top + 1e-5
    # the truth of x̃ is recorded, and the consistent test follows from it
    assert big.true_adv == int(toy2d.true_label("circle", big.x_adv[None])[0])
    assert big.consistent == (big.adv_pred != big.true_adv)


def test_defaults_land_between_the_boundaries_and_are_deterministic():
    for norm in widgets.TOY_NORMS:
        r = widgets.explore_toy(None, norm, plot=False)
        assert r.eps == widgets.TOY_NORMS[norm][3]
        assert r.practical and r.consistent, f"the default ε should put x̃ between ĥ's and h*'s boundary ({norm})"
        again = widgets.explore_toy(None, norm, plot=False)
        assert again.caption == r.caption and torch.equal(again.x_adv, r.x_adv)


def test_caption_format_and_norm_switch(agg):
    seen = {}
    for given, name in (("inf", "Linf"), (2, "L2"), ("l1", "L1"), (math.inf, "Linf")):
        r = widgets.explore_toy(0.2, given, plot=False)
        assert r.norm == name and CAPTION.match(r.caption), r.caption
        assert r.caption.startswith(f"plotted eps = 0.2 | norm = {name} | clean: inside (")
        assert f"adversarial: {r.classes[r.adv_pred]} ({r.adv_conf:.2f})" in r.caption
        seen[name] = r
    delta = seen["Linf"].x_adv - seen["Linf"].x
    assert delta.abs().max() <= 0.2 + 1e-6
    assert (seen["L2"].x_adv - seen["L2"].x).norm() <= 0.2 + 1e-6
    assert (seen["L1"].x_adv - seen["L1"].x).abs().sum() <= 0.2 + 1e-6
    with pytest.raises(AdvlabError, match="Linf"):
        widgets.explore_toy(0.1, "L3", plot=False)
    with pytest.raises(AdvlabError, match="eps"):
        widgets.explore_toy(-0.1, "L2", plot=False)
    with pytest.raises(AdvlabError, match="one point"):
        widgets.explore_toy(0.1, x=[0.1, 0.2, 0.3], plot=False)


def test_custom_model_and_point(agg):
    h = toy.TrueHypothesis("circle")  # a model without parameters
    r = widgets.explore_toy(0.2, "L2", model=h, x=(0.5, 0.25), plot=False)
    # the true hypothesis itself: x̃ can change h*'s prediction (practical) but never disagrees with h* (consistent)
    assert r.label == 1 and r.changed and r.practical and not r.consistent


def test_figure_shows_plane_and_bars(agg):
    r = widgets.explore_toy(plot=True)
    assert r.figure is not None and len(r.figure.axes) == 2
    title = r.figure.axes[1].get_title()
    assert "practical: yes" in title and "consistent: yes" in title
    agg.close(r.figure)


def test_ball_outlines_lie_on_their_spheres():
    c = (0.3, 0.6)
    for name, p in (("Linf", math.inf), ("L2", 2), ("L1", 1)):
        ring = widgets.ball_outline(c, 0.2, name)
        norms = np.linalg.norm(ring - np.array(c), ord=p, axis=1)
        if name == "L2":
            assert np.allclose(norms, 0.2)
        else:  # polygon vertices; the edges in between lie on the sphere as well
            mids = (ring[1:] + ring[:-1]) / 2
            assert np.allclose(norms, 0.2) and np.allclose(np.linalg.norm(mids - np.array(c), ord=p, axis=1), 0.2)
        assert np.allclose(ring[0], ring[-1]), "the outline must be closed"


def test_draw_balls(agg):
    b = widgets.draw_balls(0.1, (0.2, 0.7))
    assert b.areas == pytest.approx({"L1": 0.02, "L2": math.pi * 0.01, "Linf": 0.04})
    assert b.caption == "plotted eps = 0.1 | centre = (0.20, 0.70) | areas: L1 0.020, L2 0.031, Linf 0.040"
    assert b.figure is not None
    agg.close(b.figure)
    with pytest.raises(AdvlabError, match="center"):
        widgets.draw_balls(0.1, (0.1, 0.2, 0.3), plot=False)


def test_toy_widget_has_the_explorer_classes(agg, setup, capsys):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        box = widgets.toy_explorer()
        (norm_w, eps_w), out = box.children[0].children, box.children[1]
        assert widgets.CSS_CLASS in box._dom_classes and widgets.OUTPUT_CSS_CLASS in out._dom_classes
        assert f"{widgets.CSS_CLASS}-norm" in norm_w._dom_classes and f"{widgets.CSS_CLASS}-eps" in eps_w._dom_classes
        assert [v for _, v in norm_w.options] == ["Linf", "L2", "L1"] and norm_w.options[0][0] == "L∞"
        assert eps_w.max == widgets.TOY_NORMS["Linf"][1] and eps_w.value == widgets.TOY_NORMS["Linf"][3]
        norm_w.value = "L1"
        assert eps_w.max == widgets.TOY_NORMS["L1"][1] and eps_w.value == widgets.TOY_NORMS["L1"][3]
        eps_w.value = 0.0
    assert "toy ε/norm explorer" in repr(box)
    agg.close("all")


def test_balls_widget_has_its_classes(agg):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*")
        box = widgets.balls_explorer()
        eps_w, out = box.children
        assert widgets.BALLS_CSS_CLASS in box._dom_classes and f"{widgets.BALLS_CSS_CLASS}-output" in out._dom_classes
        eps_w.value = 0.3
    assert "balls" in repr(box)
    agg.close("all")
