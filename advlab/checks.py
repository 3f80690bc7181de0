"""Exercise checks: run a learner's function against a reference and print ``[PASS]``, ``[FAIL]`` or ``[TODO]``.

Every exercise notebook ends each task with one line such as ``check_fgsm_step(fgsm_step)``. A check

* calls the learner's function on small, freshly seeded CPU tensors (a few cases per task: per-sample ε,
  ε = 0, pixels at exactly 0 and 1, inputs already feasible, ...), never touching the learner's random state;
* compares the result with advlab's own implementation or a short reference kept here, within a tolerance;
* prints one line ``[PASS] <task>: ...`` or ``[FAIL] <task>: <what went wrong>`` followed by a specific hint,
  and returns True / False. A stub that still raises ``NotImplementedError`` prints ``[TODO] <task>: not
  implemented yet ...``; any other exception prints ``[FAIL]`` with its type and message. No traceback is
  ever printed.

Adding a task: write ``def check_<name>(fn)`` whose body raises :class:`Mismatch` (what, hint) on the first problem
and returns a one-line summary on success, and decorate it with :func:`register`. :data:`TASKS` is the registry
(name -> :class:`Task`); :func:`check` looks a check up by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TASKS",
    "Mismatch",
    "Task",
    "check",
    "check_certified_radius",
    "check_certify_counts",
    "check_cw_margin",
    "check_deepfool_l2",
    "check_fgsm_step",
    "check_pgd_at_batch",
    "check_pgd_linf",
    "check_project_l2",
    "check_project_linf",
    "check_spectral_norm",
    "check_targeted_fgsm",
    "register",
]

_RESHAPE_HINT = "eps is a (N,) tensor: reshape it with eps.view(-1, *[1] * (x.ndim - 1)) so that it broadcasts."


# ------------------------------------------------------------------------------------------------------- registry
class Mismatch(Exception):
    """Raised inside a check body: ``what`` went wrong and a ``hint`` on how to fix it."""

    def __init__(self, what: str, hint: str) -> None:
        super().__init__(what)
        self.what, self.hint = what, hint


@dataclass(frozen=True)
class Task:
    """One exercise task: its registry ``name``, a human ``title``, the course ``section`` and its ``check``."""

    name: str
    title: str
    section: str
    check: Callable[[Callable], bool]


TASKS: dict[str, Task] = {}


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 200 else line[:197] + "..."


def _report(title: str, body: Callable[[Callable], str], fn: Callable, on_error: str) -> bool:
    if not callable(fn):
        print(f"[FAIL] {title}: expected your function, got a {type(fn).__name__}.\n"
              "       Hint: pass the function itself, without calling it: check_x(my_function).")
        return False
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            summary = body(fn)
    except NotImplementedError:
        print(f"[TODO] {title}: not implemented yet — replace the `raise NotImplementedError(...)` line with your "
              "code (in this function or one it calls) and run the cell again.")
        return False
    except Mismatch as m:
        print(f"[FAIL] {title}: {m.what}\n       Hint: {m.hint}")
        return False
    except Exception as err:  # the learner's code failed: report it without a traceback
        print(f"[FAIL] {title}: your function raised {type(err).__name__}: {_short(err)}\n       Hint: {on_error}")
        return False
    print(f"[PASS] {title}: {summary}")
    return True


def register(name: str, title: str, section: str, on_error: str) -> Callable:
    """Decorator: turn a check body ``body(fn) -> summary`` into a check ``check(fn) -> bool`` and register it.

    ``on_error`` is the hint printed when the learner's function raises an exception other than
    ``NotImplementedError``.
    """

    def decorate(body: Callable[[Callable], str]) -> Callable[[Callable], bool]:
        @functools.wraps(body)
        def run_check(fn: Callable) -> bool:
            return _report(title, body, fn, on_error)

        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = Task(name, title, section, run_check)
        return run_check

    return decorate


def check(name: str, fn: Callable) -> bool:
    """Run the check of task ``name`` on ``fn`` (see :data:`TASKS` for the names)."""
    if name not in TASKS:
        raise KeyError(f"No check named {name!r}; known: {', '.join(sorted(TASKS))}.")
    return TASKS[name].check(fn)


# -------------------------------------------------------------------------------------------------------- helpers
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _col(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _images(n: int, shape: tuple[int, ...], g: torch.Generator, dtype=torch.float64, saturate: float = 0.3) -> Tensor:
    """(n, *shape) pixels in [0, 1], a fraction ``saturate`` of them exactly 0 or exactly 1."""
    x = torch.rand((n, *shape), generator=g, dtype=dtype)
    u = torch.rand((n, *shape), generator=g, dtype=dtype)
    x = torch.where(u < saturate / 2, torch.zeros_like(x), x)
    return torch.where(u > 1 - saturate / 2, torch.ones_like(x), x)


def _tensor(out, what: str) -> Tensor:
    if isinstance(out, Tensor):
        return out.detach().cpu()
    if isinstance(out, (np.ndarray, float, int, np.floating)):
        return torch.as_tensor(np.asarray(out))
    if out is None:
        raise Mismatch(f"{what} returned None.", "did you forget the `return` statement?")
    raise Mismatch(f"{what} returned a {type(out).__name__}, not a tensor.", "return a torch.Tensor.")


def _shape(out: Tensor, shape: tuple[int, ...], what: str, hint: str = "") -> None:
    if tuple(out.shape) != tuple(shape):
        raise Mismatch(f"{what} has shape {tuple(out.shape)}, expected {tuple(shape)}.",
                       hint or "return one value per input, shaped like the input.")


def _unchanged(before: list[Tensor], after: list[Tensor], names: str) -> None:
    for b, a in zip(before, after):
        if not torch.equal(b, a.detach().cpu()):
            raise Mismatch(f"your function modified its input ({names}) in place.",
                           "build a new tensor (x + step, .clamp(...)) instead of in-place ops such as x += ... or "
                           ".clamp_() on the inputs.")


def _close(a: Tensor, b: Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and bool((a.double() - b.double()).abs().max() <= atol)


def _in_box(x_adv: Tensor, what: str = "x_adv") -> None:
    if not bool(torch.isfinite(x_adv).all()):
        raise Mismatch(f"{what} contains NaN or inf.", "check for divisions by zero (use .clamp_min(1e-12)).")
    if bool((x_adv < 0).any()) or bool((x_adv > 1).any()):
        raise Mismatch(f"your perturbation leaves the [0, 1] box ({what} ranges over "
                       f"[{x_adv.min().item():.3g}, {x_adv.max().item():.3g}]).",
                       "pixels must stay valid: clip the result with .clamp(0, 1).")


def _in_linf_ball(delta: Tensor, eps: Tensor, tol: float = 1e-7,
                  hint: str = "project back onto the ε-ball after every step (each sample has its own ε).") -> None:
    worst = delta.flatten(1).abs().amax(1) - eps.to(delta.dtype)
    if bool((worst > tol).any()):
        i = int(worst.argmax())
        raise Mismatch(f"sample {i} moved by {delta[i].abs().max().item():.4g} in L∞, more than its "
                       f"ε = {eps[i].item():.4g}.", hint)


class _Probe(nn.Module):
    """Identity layer that records ``self.training`` at every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return x


def _linear(d: int, k: int, g: torch.Generator, dtype=torch.float64, scale: float = 1.0, probe: bool = False
            ) -> nn.Sequential:
    lin = nn.Linear(d, k).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn((k, d), generator=g, dtype=dtype) * scale)
        lin.bias.copy_(torch.randn((k,), generator=g, dtype=dtype) * 0.1)
    layers = ([_Probe()] if probe else []) + [nn.Flatten(), lin]
    return nn.Sequential(*layers).eval()


def _mlp(d: int, k: int, g: torch.Generator, width: int = 16, scale: float = 1.0, dtype=torch.float64
         ) -> nn.Sequential:
    l1, l2 = nn.Linear(d, width).to(dtype), nn.Linear(width, k).to(dtype)
    with torch.no_grad():
        for lin in (l1, l2):
            fan_in = lin.weight.shape[1]
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=dtype) * scale / math.sqrt(fan_in))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=dtype) * 0.1)
    return nn.Sequential(nn.Flatten(), l1, nn.Tanh(), l2).eval()


def _params_untouched(model: nn.Module) -> None:
    if any(p.grad is not None for p in model.parameters()):
        raise Mismatch("the model's parameters received gradients (p.grad is set) while attacking.",
                       "take the gradient w.r.t. the input only: grad, = torch.autograd.grad(loss, x_adv) "
                       "instead of loss.backward().")


def _input_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    xg = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    return g


def _linf_corner(model: nn.Sequential, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
    """Exact maximiser of the CE of a 2-class linear model over the L∞ ball ∩ box (a corner, clipped)."""
    w = model[-1].weight.detach()
    direction = (w[1 - y] - w[y]).sign().view_as(x)  # CE(y) grows with (w_other - w_y)·x
    return (x + (_col(eps, x) * direction).clamp(min=-x, max=1 - x)).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ section 04 tasks
@register("fgsm_step", "FGSM step", "04", _RESHAPE_HINT)
def check_fgsm_step(fn: Callable) -> str:
    """``fgsm_step(x, grad, eps) -> x_adv = clip(x + ε·sign(grad), 0, 1)``; x, grad (N, *), eps (N,)."""
    g = _gen(4)
    cases = [(_images(6, (1, 4, 4), g, torch.float32), torch.tensor([0.1, 0.3, 0.0, 0.05, 0.2, 1.0])),
             (_images(5, (7,), g, torch.float32), torch.full((5,), 0.25))]
    for x, eps in cases:
        grad = torch.randn(x.shape, generator=g)
        grad.view(len(x), -1)[:, 0] = 0.0  # a zero gradient: sign(0) = 0, the pixel must not move
        x0, g0, e0 = x.clone(), grad.clone(), eps.clone()
        out = _tensor(fn(x, grad, eps), "fgsm_step")
        _unchanged([x0, g0, e0], [x, grad, eps], "x, grad or eps")
        _shape(out, x.shape, "x_adv", _RESHAPE_HINT)
        ref = (x + _col(eps, x) * grad.sign()).clamp(0, 1)
        _in_box(out)
        if _close(out, ref, 1e-6):
            continue
        zero = eps == 0
        if zero.any() and not _close(out[zero], x[zero], 1e-7):
            raise Mismatch("a sample with ε = 0 was changed.", "with ε = 0 the input must come back unchanged.")
        if _close(out, (x + _col(eps, x) * grad).clamp(0, 1), 1e-6):
            raise Mismatch("you step along the raw gradient.",
                           "FGSM moves every pixel by exactly ±ε: use grad.sign(), not grad (eq. 6 with the sign).")
        if _close(out, (x - _col(eps, x) * grad.sign()).clamp(0, 1), 1e-6):
            raise Mismatch("your step goes down the loss.", "an untargeted attack ascends the loss: x + ε·sign(grad).")
        _in_linf_ball(out - x, eps, 1e-6)
        raise Mismatch("x_adv differs from clip(x + ε·sign(grad), 0, 1).",
                       "one ε per sample, multiplied by grad.sign(), then .clamp(0, 1).")
    return "matches clip(x + ε·sign(∇L), 0, 1) with per-sample ε, ε = 0, zero gradients and pixels at 0 and 1."


@register("project_linf", "L∞ ball ∩ box projection", "04", _RESHAPE_HINT)
def check_project_linf(fn: Callable) -> str:
    """``project_linf(z, x, eps) -> δ``: exact projection of z onto {||δ||∞ <= ε} ∩ [-x, 1 - x]."""
    from advlab.attacks.core import project_linf

    g = _gen(5)
    x = _images(7, (1, 3, 3), g, saturate=0.4)
    z = torch.randn(x.shape, generator=g, dtype=x.dtype) * 0.4
    eps = torch.tensor([0.1, 0.3, 0.0, 0.05, 0.5, 2.0, 0.2], dtype=x.dtype)
    inside = 3  # sample 3: z already feasible, it must not move
    z[inside] = project_linf(z[inside:inside + 1] * 0.5, x[inside:inside + 1], eps[inside:inside + 1])[0]
    for xx, zz, ee in [(x, z, eps), (x.flatten(1)[:4], z.flatten(1)[:4], eps[:4])]:
        x0, z0, e0 = xx.clone(), zz.clone(), ee.clone()
        out = _tensor(fn(zz, xx, ee), "project_linf")
        _unchanged([x0, z0, e0], [xx, zz, ee], "z, x or eps")
        _shape(out, zz.shape, "δ")
        _in_box(xx + out, "x + δ")
        _in_linf_ball(out, ee, hint="also clamp δ to [-ε, ε] (each sample has its own ε).")
        ref = project_linf(zz, xx, ee)
        if not _close(out, ref, 1e-7):
            if not _close(out[inside], zz[inside], 1e-7):
                raise Mismatch("a perturbation that was already feasible was moved.",
                               "the projection of a feasible point is the point itself.")
            raise Mismatch("δ is feasible but not the closest feasible point to z.",
                           "clamp each coordinate on its own: δ_i = clip(z_i, max(-ε, -x_i), min(ε, 1 - x_i)).")
    return "exact on 2 batches (per-sample ε, ε = 0, saturated pixels, feasible points kept)."


@register("project_l2", "L2 ball ∩ box projection", "04", _RESHAPE_HINT)
def check_project_l2(fn: Callable) -> str:
    """``project_l2(z, x, eps) -> δ``: exact projection onto {||δ||_2 <= ε} ∩ [-x, 1 - x] (compare core.project_l2)."""
    from advlab.attacks.core import project_l2

    g = _gen(6)
    x = _images(8, (1, 4, 4), g, saturate=0.5)
    z = torch.randn(x.shape, generator=g, dtype=x.dtype) * 0.5
    eps = torch.tensor([0.5, 1.0, 0.0, 0.3, 5.0, 1.5, 0.8, 2.0], dtype=x.dtype)
    # sample 7: point inside the ball (and box) must stay; sample 6 pushes hard against saturated pixels
    z[7] = project_l2(z[7:8], x[7:8], eps[7:8] * 0.5)[0]
    z[6] = torch.where(x[6] == 1, 1.0, torch.where(x[6] == 0, -1.0, 0.3 * z[6]))
    for xx, zz, ee in [(x, z, eps), (x.flatten(1)[3:], z.flatten(1)[3:], eps[3:])]:
        x0, z0, e0 = xx.clone(), zz.clone(), ee.clone()
        out = _tensor(fn(zz, xx, ee), "project_l2")
        _unchanged([x0, z0, e0], [xx, zz, ee], "z, x or eps")
        _shape(out, zz.shape, "δ")
        _in_box(xx + out, "x + δ")
        norms = out.flatten(1).norm(dim=1)
        if bool((norms > ee * (1 + 1e-6) + 1e-9).any()):
            i = int((norms - ee).argmax())
            raise Mismatch(f"sample {i} has ||δ||_2 = {norms[i].item():.4g} > ε = {ee[i].item():.4g}.",
                           "the L2 norm is per sample: delta.flatten(1).norm(dim=1), and every sample must end "
                           "inside its own ball.")
        ref = project_l2(zz, xx, ee)
        if _close(out, ref, 1e-5):
            continue
        if bool((ee == 0).any()) and not _close(out[ee == 0], torch.zeros_like(out[ee == 0]), 1e-9):
            raise Mismatch("a sample with ε = 0 got a non-zero δ.", "with ε = 0 the only feasible δ is 0.")
        scaled = zz * _col((ee / zz.flatten(1).norm(dim=1).clamp_min(1e-30)).clamp(max=1), zz)
        if _close(out, torch.maximum(torch.minimum(scaled, 1 - xx), -xx), 1e-6):
            raise Mismatch("δ is feasible but not the closest feasible point to z: scale-then-clip leaves ε budget "
                           "unused on saturated pixels.",
                           "use δ = clip(z / (1 + λ), -x, 1 - x) with the smallest λ >= 0 such that ||δ||_2 <= ε, "
                           "found per sample by bisection.")
        if bool((norms < ref.flatten(1).norm(dim=1) - 1e-6).any()):
            raise Mismatch("δ leaves part of the ε budget unused on some samples (||δ||_2 < ε although z is "
                           "outside the ball).",
                           "λ is per sample (norms with .flatten(1).norm(dim=1)); run the bisection long enough "
                           "(e.g. 50 halvings) to make ||clip(z / (1 + λ), -x, 1 - x)||_2 = ε.")
        raise Mismatch("δ is feasible but not the closest feasible point to z.",
                       "δ = clip(z / (1 + λ), -x, 1 - x), the same λ >= 0 for all coordinates of a sample.")
    return "matches advlab.attacks.core.project_l2 (per-sample ε, ε = 0, saturated pixels, points inside)."


@register("pgd_linf", "PGD loop with random start", "04",
          "x_adv must be a leaf that requires grad when you differentiate: x_adv = x_adv.detach().requires_grad_(); "
          + _RESHAPE_HINT)
def check_pgd_linf(fn: Callable) -> str:
    """``pgd_linf(model, x, y, eps, alpha, steps) -> x_adv``: eq. 7 with a uniform random start, L∞, eps (N,)."""
    from advlab.attacks.fgsm import fgsm

    g = _gen(7)
    # (a) linear 2-class model: the maximiser over ball ∩ box is a clipped corner that PGD must reach
    x = _images(6, (1, 2, 4), g)
    model = _linear(8, 2, g)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    eps = torch.tensor([0.1, 0.3, 0.0, 0.05, 0.2, 0.25], dtype=x.dtype)
    x0, e0 = x.clone(), eps.clone()
    out = _tensor(fn(model, x, y, eps, 0.1, 10), "pgd_linf")
    _unchanged([x0, e0], [x, eps], "x or eps")
    _shape(out, x.shape, "x_adv", _RESHAPE_HINT)
    _params_untouched(model)
    _in_linf_ball(out - x, eps)
    _in_box(out)
    if not _close(out, _linf_corner(model, x, y, eps), 1e-6):
        raise Mismatch("on a linear model PGD does not reach the exact maximiser of the loss over the ball ∩ box "
                       "(the corner x + ε·sign(∇L), clipped to [0, 1]).",
                       "step from the current iterate: x_adv + α·sign(∇L(x_adv)), then project onto the ball and "
                       "the box; repeat `steps` times.")
    # (b) a model with zero gradient everywhere: PGD stays at its random start, which must be uniform in the ball
    flat = _linear(16, 3, g, scale=0.0)
    xc = torch.full((256, 16), 0.5, dtype=torch.float64)
    ec = torch.rand(256, generator=g, dtype=torch.float64) * 0.3 + 0.1
    ec[0] = 0.0
    out = _tensor(fn(flat, xc, torch.zeros(256, dtype=torch.long), ec, 0.05, 3), "pgd_linf")
    _in_box(out)
    _in_linf_ball(out - xc, ec)
    u = (out - xc)[1:] / ec[1:, None]
    if bool((u.abs() < 1e-12).all()):
        raise Mismatch("with a zero gradient your PGD returns x itself: there is no random start.",
                       "start from x + δ0 with δ0 uniform in [-ε, ε] (torch.rand_like(x) * 2 - 1) * ε, clipped to "
                       "the box (Madry et al.).")
    if abs(u.abs().mean().item() - 0.5) > 0.05 or (u.abs() > 0.99).float().mean().item() > 0.05 \
            or abs(u.mean().item()) > 0.05:
        raise Mismatch("the random start is not uniform in the ε-ball (|δ|/ε should be uniform on [0, 1]).",
                       "δ0 = (2·torch.rand_like(x) - 1) · ε with ε reshaped per sample; not randn, not ±ε.")
    # (c) a small nonlinear model: PGD must beat FGSM on average
    net = _mlp(10, 3, _gen(8), scale=3.0)
    xn = _images(32, (10,), g, saturate=0.1)
    yn = net(xn).argmax(1).detach()
    en = torch.full((32,), 0.1, dtype=xn.dtype)
    out = _tensor(fn(net, xn, yn, en, 0.025, 10), "pgd_linf")
    _in_box(out)
    _in_linf_ball(out - xn, en)
    with torch.no_grad():
        loss_pgd = F.cross_entropy(net(out), yn).item()
        loss_fgsm = F.cross_entropy(net(fgsm(net, xn, yn, en).x_adv), yn).item()
    if loss_pgd < loss_fgsm:
        raise Mismatch("on a small MLP your PGD reaches a lower loss than a single FGSM step.",
                       "ascend the loss (+α·sign(grad)) from the current iterate, recomputing the gradient at every "
                       "step.")
    return "stays in ball ∩ box, starts uniformly in the ball, reaches the exact optimum on a linear model, beats FGSM."


@register("targeted_fgsm", "targeted step (eq. 3)", "04", _RESHAPE_HINT)
def check_targeted_fgsm(fn: Callable) -> str:
    """``targeted_fgsm(model, x, target, eps) -> clip(x - ε·sign(∇_x CE(h(x), target)), 0, 1)``."""
    g = _gen(9)
    x = _images(8, (1, 3, 3), g)
    model = _linear(9, 4, g)
    target = torch.tensor([1, 2, 3, 0, 2, 1, 0, 3])
    eps = torch.tensor([0.05, 0.1, 0.0, 0.2, 0.03, 0.1, 0.05, 0.3], dtype=x.dtype)
    x0, t0, e0 = x.clone(), target.clone(), eps.clone()
    out = _tensor(fn(model, x, target, eps), "targeted_fgsm")
    _unchanged([x0, t0, e0], [x, target, eps], "x, target or eps")
    _shape(out, x.shape, "x_adv")
    _params_untouched(model)
    _in_box(out)
    _in_linf_ball(out - x, eps, 1e-7)
    grad = _input_grad(model, x, target)
    ref = (x - _col(eps, x) * grad.sign()).clamp(0, 1)
    if _close(out, ref, 1e-7):
        return "x - ε·sign(∇ L(target)) decreases the target's loss; per-sample ε, ε = 0 and the box respected."
    with torch.no_grad():
        before = F.cross_entropy(model(x), target, reduction="none")
        after = F.cross_entropy(model(out), target, reduction="none")
    if bool((after[eps > 0] > before[eps > 0]).any()):
        raise Mismatch("your step increases the cross-entropy of the target class.",
                       "the targeted step must DEcrease the loss of the target (eq. 3 is an argmin): "
                       "x - ε·sign(∇_x L(y_a, h(x))).")
    raise Mismatch("x_adv differs from clip(x - ε·sign(∇_x L(target)), 0, 1).",
                   "take the gradient of the cross-entropy w.r.t. the target labels, move by exactly ε per pixel.")


@register("cw_margin", "CW margin loss", "04",
          "use logits.gather(1, y[:, None]) for z_y and logits.scatter(1, y[:, None], float('-inf')) for the others.")
def check_cw_margin(fn: Callable) -> str:
    """``cw_margin(logits, y, kappa=0.0) -> (N,) max(z_y - max_{j != y} z_j, -κ)`` (Carlini & Wagner's f)."""
    from advlab.attacks.cw import margin_loss

    g = _gen(10)
    z = torch.randn((8, 5), generator=g) * 3
    y = torch.tensor([0, 4, 2, 2, 1, 3, 0, 4])
    z[1] = -50.0 - torch.rand(5, generator=g)  # all logits negative, the true one largest: masking matters
    z[1, 4] = -40.0
    z[5] = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])  # a tie
    cases = [(z, y, 0.0), (z, y, 2.0), (torch.randn((6, 2), generator=g) * 2, torch.tensor([0, 1, 1, 0, 0, 1]), 0.5)]
    for logits, labels, kappa in cases:
        l0, y0 = logits.clone(), labels.clone()
        out = _tensor(fn(logits, labels, kappa), "cw_margin")
        _unchanged([l0, y0], [logits, labels], "logits or y")
        _shape(out, (len(logits),), "the margin",
               "return one value per sample, shaped (N,): no .mean() or .sum() over the batch.")
        ref = margin_loss(logits, labels, targeted=False, confidence=kappa)
        if _close(out, ref, 1e-5):
            continue
        true = logits.gather(1, labels[:, None]).squeeze(1)
        other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
        if _close(out, (other - true).clamp_min(-kappa), 1e-5) or _close(out, other - true, 1e-5):
            raise Mismatch("your margin has the wrong sign.",
                           "CW's f is z_y - max_{j≠y} z_j: positive while the model is still right, and the attack "
                           "minimises it.")
        if _close(out, (true - logits.amax(1)).clamp_min(-kappa), 1e-5) or \
                _close(out, (true - (logits * (1 - F.one_hot(labels, logits.shape[1]))).amax(1)).clamp_min(-kappa),
                       1e-5):
            raise Mismatch("the maximum over the other classes still sees the true class (or a 0 in its place).",
                           "mask the true class with -inf before the max: logits.scatter(1, y[:, None], "
                           "float('-inf')).amax(1); multiplying by a one-hot leaves a 0 that wins when all other "
                           "logits are negative.")
        if kappa > 0 and _close(out, true - other, 1e-5):
            raise Mismatch("κ is ignored.", "floor the margin at -κ: (z_y - max_other).clamp_min(-kappa).")
        raise Mismatch(f"the margin differs from max(z_y - max_(j≠y) z_j, -κ) (κ = {kappa}).",
                       "z_y - max over the other classes, then .clamp_min(-kappa); one value per sample.")
    return "matches max(z_y - max_{j≠y} z_j, -κ) incl. all-negative logits, ties, κ > 0 and 2 classes."


def _deepfool_variant(model: nn.Module, x: Tensor, y: Tensor, overshoot: float, max_iter: int, mode: str) -> Tensor:
    """Short reference DeepFool (L2, all classes) and two classic mistakes: ``mode`` is total | none | last."""
    k = model(x[:1]).shape[1]
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    active = torch.ones(len(x), dtype=torch.bool)
    for _ in range(max_iter):
        xa = x_adv.clone().requires_grad_(True)
        logits = model(xa)
        active = logits.argmax(1) == y
        if not bool(active.any()):
            break
        z_y = logits.gather(1, y[:, None])
        ws, fs = [], []
        for j in range(k):
            (w,) = torch.autograd.grad((logits[:, j] - z_y[:, 0]).sum(), xa, retain_graph=True)
            ws.append(w.flatten(1))
            fs.append((logits[:, j] - z_y[:, 0]).detach())
        w, f = torch.stack(ws, 1), torch.stack(fs, 1)
        wn = w.norm(dim=2).clamp_min(1e-12)
        dist = (f.abs() / wn).scatter(1, y[:, None], math.inf)
        best = dist.argmin(1)
        rows = torch.arange(len(x))
        r_i = (dist[rows, best] + 1e-4)[:, None] * w[rows, best] / wn[rows, best][:, None]
        r_i = torch.where(active[:, None], r_i, torch.zeros_like(r_i)).view_as(x)
        r_tot = r_tot + r_i
        scale = {"total": 1 + overshoot, "none": 1.0, "last": 1.0}[mode]
        extra = overshoot * r_i if mode == "last" else 0.0
        x_adv = (x + scale * r_tot + extra).clamp(0, 1).detach()
    return x_adv


@register("deepfool_l2", "DeepFool (L2)", "04",
          "one backward per class k ≠ y (retain_graph=True), distances |f_k| / ||w_k||, no loop over samples.")
def check_deepfool_l2(fn: Callable) -> str:
    """``deepfool_l2(model, x, y, overshoot=0.02, max_iter=50) -> x_adv`` (Moosavi-Dezfooli et al., eq. 2)."""
    from advlab.attacks.deepfool import deepfool_trace

    g = _gen(11)
    # (a) linear model: one step lands on the closest boundary; the overshoot scales the total perturbation
    lin = _linear(6, 3, g, scale=2.0)
    x = 0.4 + 0.2 * torch.rand((6, 6), generator=g, dtype=torch.float64)
    y = lin(x).argmax(1).detach()
    y[5] = (y[5] + 1) % 3  # already misclassified: must come back unchanged
    # (b) a curved model: several steps, so where the overshoot goes matters
    net = _mlp(6, 3, _gen(12), width=16, scale=10.0)
    xn = 0.3 + 0.4 * torch.rand((12, 6), generator=_gen(3), dtype=torch.float64)
    yn = net(xn).argmax(1).detach()
    for model, xx, yy, os_ in [(lin, x, y, 0.0), (lin, x, y, 0.5), (net, xn, yn, 0.02), (net, xn, yn, 0.1)]:
        x0, y0 = xx.clone(), yy.clone()
        out = _tensor(fn(model, xx, yy, overshoot=os_, max_iter=50), "deepfool_l2")
        _unchanged([x0, y0], [xx, yy], "x or y")
        _shape(out, xx.shape, "x_adv")
        _params_untouched(model)
        _in_box(out)
        ref = deepfool_trace(model, xx, yy, norm=2, overshoot=os_, max_iter=50, candidates=3).x_adv
        if _close(out, ref, 5e-4):  # loose enough for where exactly the 1e-4 push goes
            continue
        wrong = model(xx).argmax(1) != yy
        if bool(wrong.any()) and not _close(out[wrong], xx[wrong], 1e-9):
            raise Mismatch("a sample that is already misclassified was moved.",
                           "stop (r_i = 0) for samples whose prediction is no longer y, from the first iteration on.")
        if os_ > 0 and _close(out, _deepfool_variant(model, xx, yy, os_, 50, "none"), 1e-6):
            raise Mismatch("the overshoot is missing.",
                           "after every step query x + (1 + overshoot)·r_tot, and return that point.")
        if os_ > 0 and _close(out, _deepfool_variant(model, xx, yy, os_, 50, "last"), 1e-6):
            raise Mismatch("the overshoot is applied to the last step only.",
                           "the overshoot multiplies the TOTAL perturbation: x + (1 + overshoot)·r_tot.")
        raise Mismatch(f"x_adv differs from DeepFool's (overshoot = {os_}).",
                       "r_i = (|f_l| / ||w_l|| + 1e-4)·w_l / ||w_l|| towards the closest linearised boundary l, "
                       "r_tot += r_i, query x + (1 + overshoot)·r_tot; on a linear model one step lands on the "
                       "boundary.")
    return "lands on the linear boundary in one step, overshoot on the total, matches advlab's deepfool on an MLP."


@register("pgd_at_batch", "PGD adversarial-training batch", "04",
          "craft with your pgd_linf (eps as a (N,) tensor), return (x_adv, y).")
def check_pgd_at_batch(fn: Callable) -> str:
    """``pgd_at_batch(model, xb, yb, eps, alpha, steps) -> (x_adv, yb)``: the inner max of eq. 8, eval mode."""
    g = _gen(13)
    model = _linear(8, 2, g, probe=True)
    xb = _images(10, (1, 2, 4), g)
    yb = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    with torch.no_grad():
        yb[:3] = 1 - model(xb[:3]).argmax(1)  # some labels disagree with the prediction
    model.train()
    probe = model[0]
    probe.modes.clear()
    x0, y0 = xb.clone(), yb.clone()
    out = fn(model, xb, yb, 0.2, 0.1, 8)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"pgd_at_batch returned a {type(out).__name__}, not a pair.", "return (x_adv, y).")
    x_adv, labels = out
    if isinstance(x_adv, Tensor) and (x_adv.requires_grad or x_adv.grad_fn is not None):
        raise Mismatch("x_adv is still attached to the attack's autograd graph.",
                       "return x_adv.detach(): the training step must not backpropagate into the attack.")
    x_adv, labels = _tensor(x_adv, "pgd_at_batch"), _tensor(labels, "pgd_at_batch")
    _unchanged([x0, y0], [xb, yb], "xb or yb")
    _shape(x_adv, xb.shape, "x_adv")
    if not torch.equal(labels, yb):
        raise Mismatch("the labels of the training batch changed.",
                       "adversarial training keeps the true labels: return (x_adv, yb).")
    _params_untouched(model)
    if not probe.modes or any(probe.modes):
        raise Mismatch("the model was in train mode while the attack ran.",
                       "craft in eval mode (model.eval(); batch norm and dropout behave as at test time) and put the "
                       "model back in train mode afterwards.")
    if not model.training:
        raise Mismatch("the model is left in eval mode.", "restore the mode you found: model.train(was_training).")
    _in_box(x_adv)
    _in_linf_ball(x_adv - xb, torch.full((len(xb),), 0.2, dtype=xb.dtype))
    eps = torch.full((len(xb),), 0.2, dtype=xb.dtype)
    if not _close(x_adv, _linf_corner(model, xb, yb, eps), 1e-6):
        with torch.no_grad():
            pred = model(xb).argmax(1)
        if _close(x_adv, _linf_corner(model, xb, pred, eps), 1e-6):
            raise Mismatch("you attacked the model's predictions instead of the true labels.",
                           "craft with the true labels yb (the inner max of eq. 8 is over L(y, h(x̃))).")
        raise Mismatch("x_adv is not the maximiser of the loss on a linear model (PGD should reach it).",
                       "run your PGD (random start, `steps` steps of size alpha, projection) on (xb, yb).")
    return "eval mode while crafting, train mode restored, true labels kept, x_adv detached and in the ball ∩ box."


# ------------------------------------------------------------------------------------ Lipschitz and smoothing tasks
@register("spectral_norm", "power iteration for the spectral norm", "05",
          "v must have W.shape[1] entries: iterate v <- Wᵀ(W v) / ||Wᵀ(W v)||.")
def check_spectral_norm(fn: Callable) -> str:
    """``spectral_norm(W, iters=100) -> σ_max(W)`` (float or 0-dim tensor) by power iteration on WᵀW."""
    g = _gen(14)

    def with_singular_values(s: list[float], m: int, n: int, dtype=torch.float64) -> Tensor:
        u, _ = torch.linalg.qr(torch.randn((m, m), generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn((n, n), generator=g, dtype=torch.float64))
        d = torch.zeros((m, n), dtype=torch.float64)
        idx = torch.arange(len(s))
        d[idx, idx] = torch.tensor(s, dtype=torch.float64)
        return (u @ d @ v.T).to(dtype)

    mats = [with_singular_values([7, 4, 2, 1, 0.5, 0.1], 6, 9),
            with_singular_values([3, 1], 5, 2),
            torch.randn((1, 5), generator=g, dtype=torch.float64),
            torch.outer(torch.randn(4, generator=g), torch.randn(6, generator=g)),  # rank 1, float32
            with_singular_values([50, 20, 5], 4, 4, torch.float32)]  # large σ: overflows without normalising
    for w in mats:
        w0 = w.clone()
        out = _tensor(fn(w, iters=100), "spectral_norm").double()
        _unchanged([w0], [w], "W")
        if out.numel() != 1:
            raise Mismatch(f"spectral_norm returned {out.numel()} values.", "return one number, σ_max = ||W v||.")
        sigma = out.reshape(()).item()
        true = torch.linalg.matrix_norm(w.double(), ord=2).item()
        if math.isfinite(sigma) and abs(sigma - true) <= 1e-3 * true:
            continue
        if not math.isfinite(sigma) or sigma > 1.5 * true:
            raise Mismatch(f"your estimate is {sigma:.4g} for a matrix whose σ_max is {true:.4g}.",
                           "normalise v after every step (v = v / v.norm()), and return ||W v|| for a unit v.")
        if abs(sigma - torch.linalg.matrix_norm(w.double()).item()) <= 1e-3 * true:
            raise Mismatch("you return the Frobenius norm ||W||_F, which is >= σ_max.",
                           "the spectral norm is max ||W v|| over unit v: iterate v <- WᵀW v / ||WᵀW v||.")
        raise Mismatch(f"your estimate is {sigma:.4g}, σ_max is {true:.4g}.",
                       "iterate v <- WᵀW v / ||WᵀW v|| `iters` times and return ||W v|| (or sqrt of vᵀWᵀW v).")
    return "agrees with torch.linalg.matrix_norm(W, ord=2) to 1e-3 on 5 matrices (non-square, rank 1, large σ)."


@register("certified_radius", "Lipschitz certificate", "05",
          "logits.topk(2, dim=1).values gives the top two logits of every sample.")
def check_certified_radius(fn: Callable) -> str:
    """``certified_radius(logits, L) -> (N,) (z_top - z_runner_up) / (√2·L)`` (compare advlab.lipschitz)."""
    from advlab.lipschitz import certified_radius

    g = _gen(15)
    z = torch.randn((7, 5), generator=g) * 2
    z[2] = torch.tensor([1.0, 3.0, 3.0, 0.0, -1.0])  # a tie: radius 0
    cases = [(z, 2.5), (torch.randn((4, 2), generator=g), 0.7), (z[:3], 1.0)]
    for logits, L in cases:
        l0 = logits.clone()
        out = _tensor(fn(logits, L), "certified_radius")
        _unchanged([l0], [logits], "logits")
        _shape(out, (len(logits),), "the radius", "one radius per sample, shaped (N,).")
        ref = certified_radius(logits, L)
        if _close(out, ref, 1e-5):
            continue
        if _close(out, ref * math.sqrt(2), 1e-5):
            raise Mismatch("your radius is √2 too large.",
                           "closing a gap between two logits needs a logit change of gap/√2 in L2: divide by √2·L.")
        if bool((out < -1e-7).any()):
            raise Mismatch("a radius is negative.", "the margin is top logit minus runner-up, which is >= 0.")
        raise Mismatch("your radius differs from (z_top - z_second) / (√2·L).",
                       "use the gap between the two largest logits of each sample (not the true class).")
    return "matches margin / (√2·L) incl. ties and 2 classes."


@register("certify_counts", "randomized-smoothing CERTIFY bound", "05",
          "scipy.stats.beta.ppf(alpha, n_a, n - n_a + 1) is the one-sided lower bound; scipy.stats.norm.ppf is Φ⁻¹.")
def check_certify_counts(fn: Callable) -> str:
    """``certify_counts(n_a, n, alpha, sigma) -> (p_a, radius)``: one-sided Clopper–Pearson, abstain at p_a <= 1/2."""
    from scipy import stats

    from advlab.smoothing import lower_confidence_bound

    for n, alpha, sigma in [(100, 0.001, 0.25), (1000, 0.05, 0.5)]:
        n_a = torch.tensor([0, 10, 50, 52, 60, 75, 90, 99, n * 99 // 100, n])
        k0 = n_a.clone()
        out = fn(n_a, n, alpha, sigma)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mismatch(f"certify_counts returned a {type(out).__name__}, not a pair.", "return (p_a, radius).")
        p_a = _tensor(out[0], "certify_counts").double()
        rad = _tensor(out[1], "certify_counts").double()
        _unchanged([k0], [n_a], "n_a")
        _shape(p_a, n_a.shape, "p_a", "one lower bound per sample, shaped (N,).")
        _shape(rad, n_a.shape, "radius", "one radius per sample, shaped (N,).")
        ref_p = lower_confidence_bound(n_a, n, alpha).double().cpu()
        if not bool(torch.isfinite(p_a).all()):
            raise Mismatch("p_a contains NaN (at n_a = 0 the Beta quantile is undefined).",
                           "the lower bound is 0 when n_a = 0: torch.where(n_a > 0, bound, 0).")
        if not _close(p_a, ref_p, 1e-7):
            k = n_a.numpy()
            two = torch.as_tensor(np.where(k > 0, stats.beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0))
            if _close(p_a, two, 1e-7):
                raise Mismatch("your lower bound is two-sided (it spends α/2 on each side).",
                               "CERTIFY needs only a lower bound: put the whole α on one side, Beta(α; n_a, n-n_a+1).")
            if _close(p_a, n_a.double() / n, 1e-7):
                raise Mismatch("p_a is the point estimate n_a / n.",
                               "use the Clopper–Pearson lower confidence bound, so the certificate holds w.p. 1 - α.")
            raise Mismatch("p_a differs from the one-sided Clopper–Pearson lower bound.",
                           "p_a = Beta quantile at α with parameters (n_a, n - n_a + 1), 0 when n_a = 0.")
        ok = ref_p > 0.5
        if bool((rad < 0).any()):
            raise Mismatch("a radius is negative.", "abstain (radius 0) when p_a <= 1/2 instead of σ·Φ⁻¹(p_a) < 0.")
        if bool((rad[~ok] != 0).any()):
            raise Mismatch("you certify a sample whose lower bound p_a <= 1/2.", "abstain (radius 0) when p_a <= 1/2.")
        ref_r = torch.where(ok, sigma * torch.as_tensor(stats.norm.ppf(ref_p.clamp(0.5, 1).numpy())),
                            torch.zeros_like(ref_p))
        if bool((rad[ok] == 0).any()):
            raise Mismatch("you abstain although p_a > 1/2.", "abstain only when p_a <= 1/2.")
        if not _close(rad, ref_r, 1e-7 + 1e-6 * sigma):
            raise Mismatch("the radius differs from σ·Φ⁻¹(p_a).", "radius = sigma * scipy.stats.norm.ppf(p_a).")
    return "one-sided Clopper–Pearson bound, radius σ·Φ⁻¹(p_A), abstains exactly when p_A <= 1/2."
