"""Devices: every public entry point that takes a model and tensors runs on the model's device and answers on x's.

This machine has only a CPU, so a second device is simulated. ``Far`` tensors are CPU tensors that say they live on
``FAR`` (``cpu:0``, which is not ``torch.device("cpu")``), and while :class:`SecondDevice` is active

* a factory call with ``device=FAR`` and ``t.to(FAR)`` give Far tensors, ``t.to("cpu")`` / ``t.cpu()`` plain ones;
* an op that mixes a Far tensor with a plain one (of more than 0 dimensions) fails like PyTorch's device mismatch;
* with ``no_float64``, a float64 Far tensor fails like it does on Apple's mps.

The caller's inputs are Far (a CPU batch from ``data.load`` on Colab) and the model's parameters plain (the GPU). An
entry point that forgot ``on_model_device`` hands Far inputs to the model and fails; one that forgot to move its
result back returns plain tensors. :func:`test_every_entry_point_is_covered` fails when a new public function that
takes a model is neither decorated nor exercised here.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from advlab import attacks, eval, features, lipschitz, manifold, properties, smoothing, vae, widgets
from advlab.attacks import tensors
from advlab.attacks.deepfool import deepfool_trace
from advlab.attacks.result import AttackResult
from advlab.config import AdvlabError
from advlab.data import fonts

FAR = torch.device("cpu", 0)
CPU = torch.device("cpu")


class Far(Tensor):
    """A CPU tensor that lives, for the test, on the other device ``FAR``."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return FAR


def plain(t: Tensor) -> Tensor:
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(Tensor)


def far(t: Tensor) -> Tensor:
    return plain(t).as_subclass(Far)


def _to_parts(args: tuple, kwargs: dict) -> tuple[torch.device | None, torch.dtype | None]:
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    for a in args:
        if isinstance(a, (str, torch.device)):
            device = a
        elif isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
    return (None if device is None else torch.device(device)), dtype


_NO_MIX_CHECK = {Tensor.__getitem__, Tensor.__setitem__}  # a CUDA tensor may be indexed with CPU indices


class SecondDevice(TorchFunctionMode):
    """The simulated second device (see the module docstring)."""

    def __init__(self, no_float64: bool = False) -> None:
        super().__init__()
        self.no_float64 = no_float64

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is Tensor.to or func is Tensor.cpu:
            dev, dtype = (CPU, None) if func is Tensor.cpu else _to_parts(args[1:], kwargs)
            if dev in (FAR, CPU):
                out = plain(args[0])
                out = out if dtype is None else out.to(dtype)
                return self._checked(func, out.as_subclass(Far) if dev == FAR else out)
        on_far = kwargs.get("device") is not None and torch.device(kwargs["device"]) == FAR
        if on_far:
            kwargs["device"] = CPU
        if func not in _NO_MIX_CHECK:
            leaves = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
            if any(isinstance(t, Far) for t in leaves) and any(not isinstance(t, Far) and t.dim() > 0 for t in leaves):
                raise RuntimeError(f"Expected all tensors to be on the same device, but {func.__name__} got tensors "
                                   "on the caller's device (simulated cpu:0) and on the model's (cpu).")
        out = func(*args, **kwargs)
        if on_far:
            out = pytree.tree_map(lambda t: far(t) if isinstance(t, Tensor) else t, out)
        return self._checked(func, out)

    def _checked(self, func, out):
        if self.no_float64:
            for t in pytree.tree_leaves(out):
                if isinstance(t, Far) and plain(t).dtype == torch.float64:
                    raise TypeError(f"{func.__name__}: cannot make a float64 tensor on the simulated device: it has "
                                    "no float64 (like mps).")
        return out


def _tensors(obj) -> list[Tensor]:
    found: list[Tensor] = []
    tensors._map_tensors(obj, lambda t: found.append(t) or t)
    return found


# ------------------------------------------------------------------------------------------------------- models
class Probe(nn.Module):
    """Identity that counts its calls and the inputs that were still on the caller's device."""

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.far_inputs = 0, 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.far_inputs += isinstance(x, Far)
        return x

    def lipschitz(self, in_shape) -> float:
        return 1.0


def _classifier(seed: int, side: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(Probe(), nn.Flatten(), nn.Linear(side * side, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


class ProbedVAE(vae.VAE):
    def __init__(self) -> None:
        torch.manual_seed(5)
        super().__init__((1, 8, 8), latent=2, hidden=8, classes=10)
        self.probe = Probe()
        self.eval()

    def encode(self, x, y=None):
        return super().encode(self.probe(x), y)

    def decode_logits(self, z, y=None):
        return super().decode_logits(self.probe(z), y)


class Ctx:
    """One set of models (plain: on the 'model device') and inputs (Far: on the caller's device)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.model, self.other = _classifier(1), _classifier(2)
        self.fonts_model = _classifier(3, side=28)
        self.vae = ProbedVAE()
        self.x_cpu = torch.rand(4, 1, 8, 8, generator=g)
        self.y_cpu = torch.tensor([0, 1, 2, 3])
        self.x, self.y = far(self.x_cpu), far(self.y_cpu)
        self.x2 = far(torch.rand(4, 1, 8, 8, generator=g))
        self.pred = far(self.model(self.x_cpu).argmax(1))  # labels the untrained model gets right
        s = fonts.generate("test", 4, seed=3)
        self.sample = fonts.FontsSample(far(s.x), far(s.y), far(s.font), far(s.theta), s.classes)
        self.protos = fonts.prototypes_for(s.font, s.y)
        self.probes = [m[0] for m in (self.model, self.other, self.fonts_model)] + [self.vae.probe]

    def gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(0)


def _small_chain():
    return eval.autoattack_attacks(steps=2, n_target_classes=1, queries=4)


# name -> (call, what the result's tensors are on: "caller" (Far) or "cpu" (documented CPU results))
ENTRY = {
    "attacks.pgd": lambda c: attacks.pgd(c.model, c.x, c.y, 0.1, steps=2, generator=c.gen()),
    "attacks.bim": lambda c: attacks.bim(c.model, c.x, c.y, 0.1, steps=2),
    "attacks.fgsm": lambda c: attacks.fgsm(c.model, c.x, c.y, 0.1),
    "attacks.apgd": lambda c: attacks.apgd(c.model, c.x, c.y, 0.1, steps=2, n_target_classes=1, generator=c.gen()),
    "attacks.square": lambda c: attacks.square(c.model, c.x, c.y, 0.1, queries=3, generator=c.gen()),
    "attacks.cw_l2": lambda c: attacks.cw_l2(c.model, c.x, c.y, binary_search_steps=1, steps=2),
    "attacks.deepfool": lambda c: attacks.deepfool(c.model, c.x, c.y, max_iter=2),
    "attacks.deepfool_trace": lambda c: deepfool_trace(c.model, c.x, c.y, max_iter=2),
    "attacks.lbfgs": lambda c: attacks.lbfgs(c.model, c.x, c.y, search_steps=1, max_iter=2),
    "attacks.one_pixel": lambda c: attacks.one_pixel(c.model, c.x, c.y, population=6, generations=1),
    "attacks.greedy_pixels": lambda c: attacks.greedy_pixels(c.model, c.x, c.y, 2),
    "attacks.vat": lambda c: attacks.vat(c.model, c.x, 0.5, generator=c.gen()),
    "attacks.vat_direction": lambda c: attacks.vat_direction(c.model, c.x, generator=c.gen()),
    "attacks.least_likely": lambda c: attacks.least_likely(c.model, c.x),
    "attacks.logits_of": lambda c: attacks.logits_of(c.model, c.x),
    "attacks.transfer": lambda c: attacks.transfer(attacks.fgsm, c.other, c.model, c.x, c.y, eps=0.1),
    "eval.robust_accuracy": lambda c: eval.robust_accuracy(c.model, c.x, c.y, 0.1, attacks=_small_chain()),
    "eval.robustness_record": lambda c: eval.robustness_record(c.model, c.x, c.y, 1.0),
    "eval.pgd_accuracy": lambda c: eval.pgd_accuracy(c.model, c.x, c.y, 0.1, steps=2),
    "eval.random_noise": lambda c: eval.random_noise(c.model, c.x, c.y, 0.1, draws=2, generator=c.gen()),
    "eval.sanity_checks": lambda c: eval.sanity_checks(c.model, c.x, c.y, 0.1, surrogate=c.other, steps=(1, 2),
                                                       draws=2, queries=2),
    "smoothing.sample_counts": lambda c: smoothing.sample_counts(c.model, c.x, 0.25, 8, batch_size=16, seed=0),
    "smoothing.predict": lambda c: smoothing.predict(c.model, c.x, 0.25, n=8, seed=0),
    "smoothing.certify": lambda c: smoothing.certify(c.model, c.x, 0.25, n0=4, n=16, seed=0),
    "lipschitz.certify": lambda c: lipschitz.certify(c.model, c.x),
    "lipschitz.certified_accuracy": lambda c: lipschitz.certified_accuracy(c.model, c.x, c.y, [0.0, 0.1],
                                                                           pairwise=True),
    "properties.rarity": lambda c: properties.rarity(c.model, c.x, c.y, c.x2, draws=2, generator=c.gen()),
    "properties.boundary_distances": lambda c: properties.boundary_distances(c.model, c.x, search_steps=1, steps=2),
    "properties.linearity": lambda c: properties.linearity(c.model, c.x, c.y, eps=(0.0, 0.1), generator=c.gen()),
    "properties.transfer_matrix": lambda c: properties.transfer_matrix({"a": c.model, "b": c.other}, c.x, c.y,
                                                                       only_correct=False),
    "properties.large_eps_examples": lambda c: properties.large_eps_examples(c.model, c.x, c.y, steps=2),
    "features.invert_representation": lambda c: features.invert_representation(
        features.penultimate(c.model), c.x, c.x2, steps=2),
    "features.representation_dataset": lambda c: features.representation_dataset(c.model, c.x, c.y, steps=2,
                                                                                 generator=c.gen()),
    "features.robust_dataset": lambda c: features.robust_dataset(c.model, c.x, c.y, steps=2),
    "features.nonrobust_dataset": lambda c: features.nonrobust_dataset(c.model, c.x, c.y, steps=2),
    "features.adversarial_dataset": lambda c: features.adversarial_dataset(c.model, c.x, c.y, steps=2, keep="all",
                                                                           generator=c.gen()),
    "features.evaluate": lambda c: features.evaluate(c.model, c.x, c.y, 0.5, steps=2),
    "manifold.theta_attack": lambda c: manifold.theta_attack(c.fonts_model, c.protos, c.sample.theta, c.sample.y,
                                                             steps=2, generator=c.gen()),
    "manifold.fonts_attack": lambda c: manifold.fonts_attack(c.fonts_model, c.sample, steps=2),
    "manifold.off_manifold": lambda c: manifold.off_manifold(c.model, c.x, c.y, steps=2),
    "manifold.latent_attack": lambda c: manifold.latent_attack(c.model, c.vae, c.x, c.y, steps=2, generator=c.gen()),
    "manifold.latent_distance": lambda c: manifold.latent_distance(c.vae, c.x, c.y, steps=2),
    "vae.elbo_loss": lambda c: vae.elbo_loss(c.vae, c.x, c.y),
    "vae.elbo_at_mean": lambda c: vae.elbo_at_mean(c.vae, c.x, c.y),
    "vae.latent_attack": lambda c: vae.latent_attack(c.vae, c.x, c.x2, steps=2, y=c.y, y_target=c.y),
    "vae.vae_loss_attack": lambda c: vae.vae_loss_attack(c.vae, c.x, c.x2, steps=2, y=c.y, y_target=c.y),
    "widgets.demo_index": lambda c: widgets.demo_index(c.model, c.x, c.pred, label=int(plain(c.pred)[0]),
                                                       min_conf=0.0),
    "widgets.explore": lambda c: widgets.explore(0.1, model=c.model, x=c.x[0], y=c.y[0], steps=2, plot=False),
}
CPU_RESULTS = {"widgets.explore", "properties.transfer_matrix"}  # documented: their tensors are on the CPU


@pytest.fixture(scope="module")
def ctx() -> Ctx:
    with torch.random.fork_rng(devices=[]):  # the models are seeded: leave the other tests' random state alone
        return Ctx()


@pytest.mark.parametrize("name", sorted(ENTRY))
def test_entry_point_runs_on_the_model_device_and_answers_on_the_callers(name, ctx):
    for p in ctx.probes:
        p.calls, p.far_inputs = 0, 0
    with SecondDevice():
        out = ENTRY[name](ctx)
    assert sum(p.calls for p in ctx.probes) > 0, f"{name} never called the model"
    assert sum(p.far_inputs for p in ctx.probes) == 0, f"{name} gave the model inputs on the caller's device"
    want = CPU if name in CPU_RESULTS else FAR
    found = _tensors(out)
    wrong = [tuple(t.shape) for t in found if t.device != want]
    assert not wrong, f"{name} returned tensors shaped {wrong} that are not on {want}"


def _public_functions():
    modules = {"attacks": attacks, "eval": eval, "smoothing": smoothing, "lipschitz": lipschitz,
               "properties": properties, "features": features, "manifold": manifold, "vae": vae, "widgets": widgets}
    for prefix, mod in modules.items():
        for attr in getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]:
            fn = getattr(mod, attr)
            if inspect.isfunction(fn) and (prefix == "attacks" or fn.__module__ == mod.__name__):
                yield f"{prefix}.{attr}", fn
    yield "attacks.deepfool_trace", deepfool_trace


MODEL_ARGS = {"model", "vae", "g", "target", "surrogate", "robust_model", "standard_model", "models"}
# public functions that take a model but no tensor for it to run on, or that train it on its own device
NO_INPUTS = {"eval.autoattack_attacks", "eval.pgd_attacks", "lipschitz.layer_bounds", "lipschitz.network_lipschitz",
             "lipschitz.layer_lipschitz",
             "features.penultimate", "features.experiment", "manifold.train_fonts", "manifold.learned_perturb",
             "manifold.n_sweep", "vae.fit_vae", "attacks.eval_mode", "widgets.toy_plane", "widgets.explore_toy",
             "widgets.explorer", "widgets.toy_explorer", "smoothing.train_under_noise"}


def test_every_entry_point_is_covered():
    seen = set()
    for name, fn in _public_functions():
        params = set(inspect.signature(fn).parameters)
        if not params & MODEL_ARGS or name in NO_INPUTS:
            continue
        seen.add(name)
        assert name in ENTRY, f"{name} takes a model: add it to ENTRY (and decorate it with on_model_device)"
    assert seen == set(ENTRY), f"ENTRY lists functions that are not public entry points: {set(ENTRY) - seen}"


DELEGATES = {"properties.transfer_matrix", "properties.large_eps_examples", "manifold.fonts_attack",
             "widgets.explore", "widgets.demo_index"}  # several models, a sample, the CPU: they call decorated ones


def test_entry_points_are_decorated():
    undecorated = [name for name, fn in _public_functions()
                   if name in ENTRY and name not in DELEGATES and not hasattr(fn, "on_model_device")]
    assert not undecorated


# -------------------------------------------------------------------------------------------- helpers, errors
def test_model_device_and_float64_device():
    assert tensors.model_device(nn.Linear(2, 2)) == CPU
    bn_only = nn.BatchNorm1d(2, affine=False)  # buffers only
    assert tensors.model_device(bn_only) == CPU
    assert tensors.model_device(nn.Flatten()) == CPU
    assert tensors.model_device(nn.Flatten(), None) is None
    assert tensors.model_device(lambda x: x, None) is None
    assert tensors.model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert tensors.float64_device("mps") == CPU
    assert tensors.float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert tensors.float64_device("cpu") == CPU


def test_results_come_back_as_the_same_kind_of_object(ctx):
    with SecondDevice():
        res = attacks.pgd(ctx.model, ctx.x, ctx.y, 0.1, steps=2)
        cert = smoothing.certify(ctx.model, ctx.x, 0.25, n0=4, n=16, seed=0)
        curves = properties.linearity(ctx.model, ctx.x, ctx.y, eps=(0.0, 0.1))
    assert isinstance(res, AttackResult) and res.norm == math.inf
    x_adv, success, norms = res  # still unpacks
    assert x_adv.device == success.device == norms.device == FAR
    assert isinstance(cert, smoothing.Certificate) and cert.p_a.dtype == torch.float64
    assert isinstance(curves, properties.LinearityCurves) and curves.logits_gradient.device == FAR


def test_a_cpu_generator_gives_the_same_random_start_on_either_device(ctx):
    """The random start is drawn from the caller's CPU generator and then moved: same attack on any device."""
    same = attacks.pgd(ctx.model, ctx.x_cpu, ctx.y_cpu, 0.2, steps=0, generator=torch.Generator().manual_seed(7))
    with SecondDevice():
        moved = attacks.pgd(ctx.model, ctx.x, ctx.y, 0.2, steps=0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(plain(moved.x_adv), same.x_adv) and not torch.equal(same.x_adv, ctx.x_cpu)


def test_the_callers_random_state_is_untouched(ctx):
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    with SecondDevice():
        attacks.pgd(ctx.model, ctx.x, ctx.y, 0.1, steps=1, generator=ctx.gen())
    assert torch.equal(torch.rand(2), expected)


def test_nothing_moves_when_the_model_is_where_x_is(ctx, monkeypatch):
    def no_move(t, device):
        raise AssertionError("moved a tensor")

    monkeypatch.setattr(tensors, "to_device", no_move)
    attacks.pgd(ctx.model, ctx.x_cpu, ctx.y_cpu, 0.1, steps=1)
    attacks.pgd(nn.Flatten().eval(), ctx.x_cpu.flatten(1)[:, :10], ctx.y_cpu, 0.1, steps=1)  # no parameters


def test_a_model_without_weights_is_a_clear_error(ctx):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10, device="meta"))
    with pytest.raises(AdvlabError, match="meta device"):
        attacks.pgd(model, ctx.x_cpu, ctx.y_cpu, 0.1)
    with pytest.raises(AdvlabError, match="meta device"):
        eval.robust_accuracy(model, ctx.x_cpu, ctx.y_cpu, 0.1)


def test_models_on_two_devices_are_a_clear_error(ctx, monkeypatch):
    real = tensors.model_device

    def fake(model, default=CPU):
        return torch.device("cuda", 1) if model is ctx.vae else real(model, default)

    monkeypatch.setattr(tensors, "model_device", fake)
    with pytest.raises(AdvlabError, match=r"vae\.to\('cpu'\)"):
        manifold.latent_attack(ctx.model, ctx.vae, ctx.x_cpu, ctx.y_cpu, steps=1)


def test_an_impossible_move_is_a_clear_error():
    with pytest.raises(AdvlabError, match="one device"):
        tensors.to_device(torch.zeros(2, device="meta"), CPU)


# ------------------------------------------------------------------------------------------------ mps: no float64
class FarLinear(nn.Module):
    """A classifier that lives on the simulated device (no parameters: its weights are Far constants)."""

    def __init__(self, d: int = 64, k: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.w = far(torch.randn(d, k, generator=g) / 8)
        self.b = far(torch.randn(k, generator=g) / 10)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.w + self.b


@pytest.fixture
def no_float64(monkeypatch):
    monkeypatch.setattr(tensors, "_has_float64", lambda device: device != FAR and device.type != "mps")
    return SecondDevice(no_float64=True)


def test_the_simulated_device_refuses_float64(no_float64):
    with no_float64, pytest.raises(TypeError, match="no float64"):
        far(torch.zeros(2)).double()
    with no_float64, pytest.raises(TypeError, match="no float64"):
        torch.zeros(2, dtype=torch.float64, device=FAR)


def test_float64_parts_run_on_the_cpu_where_the_device_has_none(ctx, no_float64):
    model, x, y = FarLinear().eval(), ctx.x, ctx.y
    with no_float64:
        basis = properties.pca(far(torch.rand(20, 6)))
        cert = smoothing.certify(model, x, 0.25, n0=4, n=16, seed=0)
        bound = smoothing.lower_confidence_bound(far(torch.tensor([3, 16])), 16, 0.01)
        res = attacks.lbfgs(model, x, y, search_steps=2, max_iter=3)
        radius = lipschitz.certified_radius(model(x), 2.0)
    assert basis.components.device == FAR and basis.components.dtype == torch.float32
    assert torch.allclose(plain(basis.components) @ plain(basis.components).T, torch.eye(6), atol=1e-5)
    assert cert.pred.device == cert.radius.device == FAR and cert.p_a.device == CPU
    assert bound.dtype == torch.float64 and bound.device == CPU
    assert res.x_adv.device == FAR and radius.dtype == torch.float32
