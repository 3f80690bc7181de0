"""APGD and the Square Attack: exact oracles, properties, gradient-free behaviour, parity with torchattacks and
adv-lib."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab import AdvlabError, zoo
from advlab.attacks import apgd, pgd, square
from advlab.attacks.apgd import checkpoints
from advlab.attacks.core import targeted_dlr_loss
from advlab.attacks.square import p_schedule
from advlab.attacks.tensors import lp_norm
from advlab.defenses.masking import InputQuantization


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ linear oracle
def _unbreakable_linear(d: int = 30, n: int = 12, seed: int = 0):
    """A 3-class linear model whose class 0 wins everywhere in the box (a large bias): no attack can succeed, so
    APGD's best iterate is the maximiser of its objective, which for class 1's logit is linear in x."""
    g = gen(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1].copy_(torch.randn(d, generator=g))
        model[1].bias.copy_(torch.tensor([1e3, 0.0, -1e3]))
    x = (0.2 + 0.6 * torch.rand(n, 1, d, generator=g)).clamp(0, 1)
    x[:, :, :5] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.02])  # saturated pixels: the box binds
    return model.eval(), x, torch.zeros(n, dtype=torch.long), model[1].weight[1].detach().clone()


def _linear_max_l2(w: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """max <w, δ> over ||δ||_2 <= ε and -x <= δ <= 1 - x, in float64, by bisection on t of δ = clip(t w, -x, 1-x)."""
    w64, x64 = w.double(), x.flatten(1).double()
    lo = torch.zeros(len(x64), dtype=torch.float64)
    hi = torch.full_like(lo, 1e6)
    for _ in range(200):
        mid = (lo + hi) / 2
        delta = torch.maximum(torch.minimum(mid[:, None] * w64, 1 - x64), -x64)
        ok = delta.norm(dim=1) <= eps
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return (torch.maximum(torch.minimum(lo[:, None] * w64, 1 - x64), -x64) @ w64).float()


@pytest.mark.parametrize("norm", [math.inf, 2.0])
def test_apgd_reaches_the_exact_optimum_of_a_linear_objective(norm):
    model, x, y, w = _unbreakable_linear()
    eps = 0.1 if math.isinf(norm) else 0.8
    objective = lambda logits, _y: logits[:, 1]  # noqa: E731 - linear in x: its maximiser over ball ∩ box is known
    res = apgd(model, x, y, eps, norm=norm, steps=50, loss=objective, generator=gen())
    got = ((res.x_adv - x).flatten(1) @ w)
    if math.isinf(norm):
        best = torch.maximum(torch.minimum(eps * w.sign(), 1 - x.flatten(1)), -x.flatten(1)) @ w
    else:
        best = _linear_max_l2(w, x, eps)
    assert not res.success.any()
    assert torch.allclose(got, best, rtol=1e-4, atol=1e-4), (got - best).abs().max()
    assert (lp_norm(res.x_adv - x, norm) <= eps + 1e-5).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_checkpoints_follow_autoattack_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_targeted_dlr_matches_its_formula():
    logits = torch.tensor([[5.0, 3.0, 1.0, 0.0, -1.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # sorted: 5, 3, 1, 0 -> scale 5 - (1 + 0) / 2 = 4.5; value -(5 - 1) / 4.5
    assert targeted_dlr_loss(logits, y, t).item() == pytest.approx(-4.0 / 4.5)


# ----------------------------------------------------------------------------------- on the trained MNIST CNNs
@pytest.fixture(scope="module")
def robust_batch(mnist_test):
    x, y = mnist_test
    return zoo.load("mnist-cnn-pgd", progress=False), x[:96], y[:96]


def _robust_acc(res) -> float:
    return 1 - res.success.float().mean().item()


def test_apgd_is_feasible_and_stronger_with_more_steps_on_aggregate(robust_batch):
    model, x, y = robust_batch
    short = apgd(model, x, y, 0.3, steps=10, generator=gen())
    long = apgd(model, x, y, 0.3, steps=100, generator=gen())
    for res in (short, long):
        assert (lp_norm(res.x_adv - x, math.inf) <= 0.3 + 1e-6).all()
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert _robust_acc(long) <= _robust_acc(short) + 2 / len(x)


def test_apgd_per_sample_eps(robust_batch):
    model, x, y = robust_batch
    eps = torch.linspace(0, 0.3, len(x))
    res = apgd(model, x, y, eps, steps=20, generator=gen())
    assert (lp_norm(res.x_adv - x, math.inf) <= eps + 1e-6).all()
    assert torch.equal(res.x_adv[0], x[0])  # ε = 0: nothing moves


def test_apgd_t_attacks_the_most_likely_other_classes(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:64], y[:64]
    res = apgd(mnist_cnn, x, y, 0.15, steps=30, n_target_classes=3, generator=gen(), early_stop=True)
    ce = apgd(mnist_cnn, x, y, 0.15, steps=30, generator=gen(), early_stop=True)
    assert res.success_rate >= 0.8 and res.success_rate >= ce.success_rate - 2 / len(x)
    # success means: not the true label (APGD-T needs y to be the true label)
    with torch.no_grad():
        assert torch.equal(res.success, mnist_cnn(res.x_adv).argmax(1) != y)


def test_apgd_and_square_reject_bad_input(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:4], y[:4]
    for call in (
        lambda: apgd(mnist_cnn, x, y, 0.1, loss="hinge"),
        lambda: apgd(mnist_cnn, x, y, 0.1, n_target_classes=10),
        lambda: apgd(mnist_cnn, x, y, 0.1, norm=1),
        lambda: apgd(mnist_cnn, x, y, 0.1, steps=0),
        lambda: square(mnist_cnn, x, y, 0.1, queries=0),
        lambda: square(mnist_cnn, x, y, 0.1, norm=1),
        lambda: square(mnist_cnn, x.flatten(1), y, 0.1),
    ):
        with pytest.raises(AdvlabError):
            call()


def test_apgd_t_needs_four_classes():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(AdvlabError, match="4 classes"):
        apgd(model, torch.rand(2, 4), torch.tensor([0, 1]), 0.1, n_target_classes=1)


def test_probability_models_get_the_softmax_warning(mnist_cnn, mnist_test):
    x, y = mnist_test
    probs = nn.Sequential(mnist_cnn, nn.Softmax(dim=1)).eval()
    for call in (lambda: apgd(probs, x[:4], y[:4], 0.1, steps=2), lambda: square(probs, x[:4], y[:4], 0.1, queries=2)):
        with pytest.warns(UserWarning, match="probabilities"):
            call()


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this model must not be differentiated")


class NoGradients(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(_NoBackward.apply(x))


@pytest.mark.parametrize("norm,eps", [(math.inf, 0.3), (2.0, 3.0)])
def test_square_never_uses_gradients_and_breaks_the_standard_cnn(mnist_cnn, mnist_test, norm, eps):
    x, y = mnist_test
    x, y = x[:48], y[:48]
    res = square(NoGradients(mnist_cnn).eval(), x.requires_grad_(False), y, eps, norm=norm, queries=300,
                 generator=gen())
    assert res.success_rate >= (0.9 if math.isinf(norm) else 0.6)  # measured here: 1.0 and 0.75
    assert (lp_norm(res.x_adv - x, norm) <= eps + 1e-5).all() and res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_square_is_reproducible_and_per_sample_eps(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:16], y[:16]
    eps = torch.linspace(0, 0.2, 16)
    a = square(mnist_cnn, x, y, eps, queries=50, generator=gen(3))
    b = square(mnist_cnn, x, y, eps, queries=50, generator=gen(3))
    assert torch.equal(a.x_adv, b.x_adv)
    assert (lp_norm(a.x_adv - x, math.inf) <= eps + 1e-6).all()
    assert not a.success[0]


def test_p_schedule_halves_at_the_papers_fractions():
    assert p_schedule(0.8, 0, 10_000) == 0.8
    assert p_schedule(0.8, 11, 10_000) == 0.4
    assert p_schedule(0.8, 9_999, 10_000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 100, 1000) == pytest.approx(0.8 / 16)  # 100/1000 of the budget = 1,000 of 10,000


def test_square_breaks_input_quantization_that_gradient_attacks_cannot(mnist_cnn, mnist_test):
    x, y = mnist_test
    x, y = x[:48], y[:48]
    defended = InputQuantization(mnist_cnn, levels=2).eval()
    with torch.no_grad():
        keep = defended(x).argmax(1) == y
    x, y = x[keep], y[keep]
    grad_res = pgd(defended, x, y, 0.3, steps=20, generator=gen())
    sq = square(defended, x, y, 0.3, queries=500, generator=gen())
    assert grad_res.success_rate <= 0.2, "rounding leaves gradient attacks no gradient"
    assert sq.success_rate >= grad_res.success_rate + 0.5


# --------------------------------------------------------------------------------------- parity with torchattacks
def test_parity_with_torchattacks_on_the_robust_cnn(robust_batch):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = robust_batch
    ours = {
        "apgd-ce": _robust_acc(apgd(model, x, y, 0.3, steps=50, generator=gen())),
        "apgd-t": _robust_acc(apgd(model, x, y, 0.3, steps=50, n_target_classes=3, generator=gen())),
        "square": _robust_acc(square(model, x, y, 0.3, queries=300, generator=gen())),
    }
    ref_attacks = {
        "apgd-ce": torchattacks.APGD(model, eps=0.3, steps=50, loss="ce", seed=0),
        "apgd-t": torchattacks.APGDT(model, eps=0.3, steps=50, n_classes=4, seed=0),  # 3 target classes
        "square": torchattacks.Square(model, eps=0.3, n_queries=300, seed=0),
    }
    for name, attack in ref_attacks.items():
        with torch.no_grad():
            theirs = (model(attack(x, y)).argmax(1) == y).float().mean().item()
        # same strength within a few images; never clearly weaker
        assert ours[name] <= theirs + 3 / len(x), (name, ours[name], theirs)
        assert ours[name] >= theirs - 8 / len(x), (name, ours[name], theirs)


def _import_adv_lib():
    """adv-lib 0.2.8 (Rony et al.), installed with --no-deps: its only use of visdom is a plotting logger, and
    visdom's source release no longer builds with current setuptools, so a stand-in module is enough to import it."""
    import sys
    import types

    sys.modules.setdefault("visdom", types.SimpleNamespace(Visdom=object))
    return pytest.importorskip("adv_lib.attacks")


def test_parity_with_adv_lib_apgd_on_the_robust_cnn(robust_batch):
    # A second, independent APGD implementation: same budgets, same losses; robust accuracy within a few images.
    adv_lib = _import_adv_lib()
    model, x, y = robust_batch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # adv-lib draws its random starts from the global stream
        ref = {
            "apgd-ce": adv_lib.apgd(model, x, y, eps=0.3, norm=float("inf"), n_iter=50, loss_function="ce"),
            "apgd-dlr": adv_lib.apgd(model, x, y, eps=0.3, norm=float("inf"), n_iter=50, loss_function="dlr"),
            "apgd-t": adv_lib.apgd_targeted(model, x, y, eps=0.3, norm=float("inf"), n_iter=50, num_targets=3),
        }
    ours = {
        "apgd-ce": _robust_acc(apgd(model, x, y, 0.3, steps=50, loss="ce", generator=gen())),
        "apgd-dlr": _robust_acc(apgd(model, x, y, 0.3, steps=50, loss="dlr", generator=gen())),
        "apgd-t": _robust_acc(apgd(model, x, y, 0.3, steps=50, n_target_classes=3, generator=gen())),
    }
    for name, x_ref in ref.items():
        assert (x_ref - x).abs().amax() <= 0.3 + 1e-6
        with torch.no_grad():
            theirs = (model(x_ref).argmax(1) == y).float().mean().item()
        assert ours[name] <= theirs + 3 / len(x), (name, ours[name], theirs)
        assert ours[name] >= theirs - 8 / len(x), (name, ours[name], theirs)
