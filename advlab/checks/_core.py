"""The checks' machinery: the task registry, the [PASS]/[FAIL]/[TODO] report, and small tensor helpers."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.config import preserved_random_state

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
        # torch.manual_seed also seeds CUDA: the caller's CPU and CUDA streams are restored afterwards (on Colab too)
        with preserved_random_state(), torch.enable_grad():
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


