"""The checks and tensor helpers that every layer above the attacks uses: input validation, per-sample ε, norm names,
eval mode, batched logits and devices.

Devices: every public entry point that takes a model and tensors is decorated with :func:`on_model_device`. It runs
the call on the model's device (:func:`model_device`) and hands the tensors of the result back on the caller's
device, the device of ``x``: a CPU batch from ``data.load`` attacks a model on ``cuda`` and comes back on the CPU.
Parts that need float64 compute on :func:`float64_device` (the CPU where the device has none, Apple's ``mps``).

Shapes: ``x`` is (N, *) in [0, 1] pixel space, ``y`` (N,) integer labels, ``eps`` a scalar or (N,) radius in pixel
units of the norm, ``p`` one of ``math.inf``, ``2.0``, ``1.0``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from advlab.config import AdvlabError

NORMS = {"inf": math.inf, "linf": math.inf, "2": 2.0, "l2": 2.0, "1": 1.0, "l1": 1.0}


def parse_norm(norm: str | float | int) -> float:
    """Canonical p for a norm name: ``"inf"``/``"linf"``/``inf`` -> inf, ``2``/``"l2"`` -> 2., ``1`` -> 1."""
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        if float(norm) in (1.0, 2.0, math.inf):
            return float(norm)
    elif isinstance(norm, str) and norm.strip().lower() in NORMS:
        return NORMS[norm.strip().lower()]
    raise AdvlabError(f"Unknown norm {norm!r}; use 'inf', 2 or 1.")


def lp_norm(delta: Tensor, p: float) -> Tensor:
    """Per-sample ``||delta||_p`` of a (N, *) tensor; returns (N,)."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=p, dim=1)


def as_eps(eps: float | Tensor, x: Tensor) -> Tensor:
    """ε as a (N,) float tensor on x's device: a scalar, a (1,) or a (N,) tensor; rejects ε < 0, NaN and ∞.

    An infinite radius has no steps (2.5·ε/steps), no random start and no projection; the whole box around any x
    is reached with ε = 1 (L∞), sqrt(d) (L2) or d (L1).
    """
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps_t.ndim > 1 or (eps_t.ndim == 1 and eps_t.numel() not in (1, len(x))):
        raise AdvlabError(f"eps has shape {tuple(eps_t.shape)} for a batch of {len(x)}; pass a scalar, or a (N,) "
                          f"tensor with one radius per sample (N = {len(x)}).")
    eps_t = eps_t.reshape(-1).expand(len(x)) if eps_t.numel() == 1 else eps_t
    if torch.isnan(eps_t).any() or (eps_t < 0).any():
        raise AdvlabError(f"eps must be >= 0 (got min {eps_t.min().item():g}); it is a radius in pixel units.")
    if torch.isinf(eps_t).any():
        raise AdvlabError("eps must be finite; to allow any perturbation inside the box use eps = 1 for L∞, "
                          "sqrt(d) for L2 or d for L1 (d = pixels per input).")
    return eps_t.clone()


def check_inputs(x: Tensor, y: Tensor | None = None, *, name_y: str = "y") -> tuple[Tensor, Tensor | None]:
    """Validate a batch: x is (N, *) floating in [0, 1], y is (N,) integer labels.

    Returns ``(x.detach(), y)``; raises :class:`AdvlabError` with a hint on bad input.
    """
    if not isinstance(x, Tensor):
        raise AdvlabError(f"x must be a torch.Tensor, got {type(x).__name__}; use torch.as_tensor(x).")
    if x.ndim < 2:
        raise AdvlabError(
            f"x must be a batch shaped (N, C, H, W) or (N, D), got shape {tuple(x.shape)}; "
            "add a batch dimension with x[None]."
        )
    if len(x) == 0:
        raise AdvlabError("The batch is empty (N = 0); pass at least one input.")
    if not x.is_floating_point():
        raise AdvlabError(f"x must be floating point in [0, 1], got {x.dtype}; for uint8 images use x.float() / 255.")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1 or math.isnan(lo):
        raise AdvlabError(
            f"x must lie in [0, 1] pixel space (got min {lo:.3g}, max {hi:.3g}); "
            "undo any normalization and put it inside the model (advlab.models.Normalize)."
        )
    if y is not None:
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y)
        if y.ndim != 1 or len(y) != len(x):
            raise AdvlabError(
                f"{name_y} must be shaped (N,) = ({len(x)},), got {tuple(y.shape)}; one integer label per input."
            )
        if y.is_floating_point() or y.dtype == torch.bool:
            raise AdvlabError(f"{name_y} must hold integer class labels, got {y.dtype}; use {name_y}.long().")
        y = y.to(x.device, torch.long)
    return x.detach(), y


def check_logits(logits: Tensor, y: Tensor | None = None) -> None:
    """Check a model's output on a batch: (N, K) logits, labels < K; warn if it looks like probabilities."""
    if isinstance(logits, (tuple, list)):
        raise AdvlabError(f"The model returned a {type(logits).__name__} of {len(logits)} items; attacks need one "
                          "(N, K) logits tensor. Wrap it in an nn.Module whose forward returns only the logits.")
    if not isinstance(logits, Tensor):
        raise AdvlabError(f"The model returned a {type(logits).__name__}; attacks need an (N, K) logits tensor.")
    if logits.ndim != 2:
        raise AdvlabError(f"The model must return logits shaped (N, K), got {tuple(logits.shape)}.")
    if y is not None and len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise AdvlabError(f"Labels must lie in [0, {logits.shape[1] - 1}] for a model with {logits.shape[1]} outputs.")
    rows = logits.detach().float()
    if (rows >= 0).all() and torch.allclose(rows.sum(1), torch.ones(len(rows), device=rows.device), atol=1e-4):
        warnings.warn(
            "The model's outputs are non-negative and sum to 1: it looks like it returns probabilities. "
            "Attacks need logits; remove the final softmax, or the gradients will vanish.",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------------------- devices
CPU = torch.device("cpu")


def model_device(model: object, default: torch.device | None = CPU) -> torch.device | None:
    """The device of a model's first parameter or buffer: where it computes. ``default`` (the CPU) for a module
    with neither (e.g. a true hypothesis) and for anything that is not an ``nn.Module``."""
    if isinstance(model, nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):
            return t.device
    return default


def _has_float64(device: torch.device) -> bool:
    return device.type != "mps"  # Apple's Metal backend has no float64


def float64_device(device: torch.device | str) -> torch.device:
    """Where to compute in float64 for data on ``device``: ``device`` itself, or the CPU where it has no float64
    (``mps``). Move the float64 result back with ``.to(device, dtype)``."""
    device = torch.device(device)
    return device if _has_float64(device) else CPU


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t.to(device)``, with an :class:`AdvlabError` that says what to do when the move is impossible."""
    try:
        return t.to(device)
    except (RuntimeError, TypeError, NotImplementedError) as err:
        what = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (f"{device.type} has no float64: use float32 inputs (x.float())" if t.dtype == torch.float64
                and not _has_float64(device) else "put the model and the inputs on one device yourself, e.g. "
                "model.to(x.device)")
        raise AdvlabError(f"advlab runs a call on the model's device and moves its inputs there, but moving a "
                          f"{t.dtype} tensor from {t.device} to {device} failed ({what}); {hint}.") from err


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it: in tuples (named ones too), lists, dicts and dataclass
    instances, recursively. Containers without a changed tensor are returned as they are (the same object)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        items = [_map_tensors(v, fn) for v in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        if isinstance(obj, list):
            return items
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        mapped = {k: _map_tensors(v, fn) for k, v in obj.items()}
        return obj if all(mapped[k] is v for k, v in obj.items()) else mapped
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changed = {}
        for f in dataclasses.fields(obj):
            if f.init:
                v = getattr(obj, f.name)
                w = _map_tensors(v, fn)
                if w is not v:
                    changed[f.name] = w
        return dataclasses.replace(obj, **changed) if changed else obj
    return obj


def _tensors(obj: Any) -> Iterator[Tensor]:
    """Every tensor in ``obj``, in order, searched like :func:`_map_tensors` (lazily: callers may stop early)."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.init:
                yield from _tensors(getattr(obj, f.name))


def _first_device(obj: Any) -> torch.device | None:
    """The device of the first tensor in ``obj``, or None."""
    return next((t.device for t in _tensors(obj)), None)


def _elsewhere(obj: Any, device: torch.device) -> bool:
    """True when some tensor in ``obj`` is not on ``device``."""
    return any(t.device != device for t in _tensors(obj))


def _usable_device(fn_name: str, name: str, model: object) -> torch.device | None:
    """:func:`model_device` of one model (None without parameters); AdvlabError for weights on the meta device."""
    dev = model_device(model, None)
    if dev is not None and dev.type == "meta":
        raise AdvlabError(f"{fn_name}: the {name}'s parameters are on the meta device, so they hold no values; "
                          "load its weights first (e.g. model.to_empty(device='cpu'), then load_state_dict).")
    return dev


def _shared_device(fn_name: str, models: Sequence[tuple[str, object]]) -> torch.device | None:
    """The one device of the named models (None when none has parameters); AdvlabError when they disagree."""
    seen: list[tuple[str, torch.device]] = []
    for name, m in models:
        dev = _usable_device(fn_name, name, m)
        if dev is None:
            continue
        if seen and dev != seen[0][1]:
            first, where = seen[0]
            raise AdvlabError(f"{fn_name}: the {first} is on {where} and the {name} on {dev}; put them on one device: "
                              f"{name}.to({str(where)!r}).")
        seen.append((name, dev))
    return seen[0][1] if seen else None


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def on_model_device(fn: _Fn | None = None, *, model: str | Sequence[str] = "model", x: str = "x") -> Any:
    """Decorator for a public function that takes a model and tensors: run it on the model's device and return its
    tensors on the caller's.

    The model is the argument named ``model`` (several names: models that must share one device, else
    :class:`AdvlabError`); its device is :func:`model_device`. A model without parameters or buffers runs where
    its inputs are (nothing moves). Every tensor argument, also inside tuples, lists, dicts and dataclasses, is
    moved to that device; every tensor of the result that is on it (in the same containers, e.g. an
    :class:`~advlab.attacks.result.AttackResult`) is moved back to the caller's device: the device of the
    argument named ``x`` (or of the first tensor argument). Tensors that the function put elsewhere on purpose
    (a float64 part on the CPU) stay there. Generators are not touched: draws from a CPU generator are made on the
    CPU and then moved (see :func:`advlab.attacks.core.random_start`). When all tensors are already on the model's
    device the call goes straight through, so nested decorated calls cost nothing.
    """
    if fn is None:
        return functools.partial(on_model_device, model=model, x=x)
    names = (model,) if isinstance(model, str) else tuple(model)
    sig = inspect.signature(fn)
    positional = [n for n, p in sig.parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for name in (*names, x):
        if name not in sig.parameters:
            raise TypeError(f"on_model_device: {fn.__qualname__} has no argument {name!r}")

    index = {n: positional.index(n) if n in positional else math.inf for n in (*names, x)}

    def arg(args: tuple, kwargs: dict, name: str) -> Any:
        i = index[name]
        return args[i] if i < len(args) else kwargs.get(name)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(names) == 1:  # the common case, without building a list
            dev = _usable_device(fn.__name__, names[0], arg(args, kwargs, names[0]))
        else:
            dev = _shared_device(fn.__name__, [(n, arg(args, kwargs, n)) for n in names])
        if dev is None or not (_elsewhere(args, dev) or _elsewhere(kwargs, dev)):
            return fn(*args, **kwargs)
        caller = _first_device(arg(args, kwargs, x))
        caller = _first_device((args, kwargs)) if caller is None else caller
        args, kwargs = _map_tensors((args, kwargs), lambda t: to_device(t, dev))
        out = fn(*args, **kwargs)
        if caller is None or caller == dev:
            return out
        return _map_tensors(out, lambda t: to_device(t, caller) if t.device == dev else t)

    wrapper.on_model_device = names  # type: ignore[attr-defined]  # marks the entry point (see tests/test_devices.py)
    return wrapper


@contextlib.contextmanager
def eval_mode(model: nn.Module, warn: bool = True) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode (dropout off, batch-norm running statistics), restoring every submodule's mode
    afterwards: the one eval-mode helper of the package.

    Parameters are also frozen (``requires_grad=False``) inside the block so that gradients are taken with respect
    to the input only; their flags are restored on exit. ``warn``: say so when the model was in train mode (an
    attack on a model in train mode is a common mistake; a bound computed from the weights is not).
    """
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"model must be a torch.nn.Module, got a {type(model).__name__}; wrap a function f in a "
                          "module: class M(nn.Module): def forward(self, x): return f(x).")
    was_training = model.training
    if was_training and warn:
        warnings.warn(
            "The model was in train mode; advlab attacks it in eval mode (dropout off, batch-norm "
            "running statistics) and puts it back in train mode afterwards. Call model.eval() first "
            "to silence this.",
            stacklevel=3,
        )
    flags = [p.requires_grad for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]  # each submodule's own flag (a wrapper may hold an eval model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


# ------------------------------------------------------------------------------------------------------ chunks
CPU_CHUNK_ELEMENTS = 1 << 18
"""Most input elements per forward/backward on a CPU: 334 MNIST images, 85 CIFAR images. Above a few hundred MNIST
images (a hundred CIFAR images) a model's work no longer stays in the CPU's caches and costs more per image; below,
the time per image is flat. A batch larger than this is split into equal chunks (1,000 MNIST images: 3 of 334;
256 CIFAR images: 4 of 64), measured in ``python benchmarks/chunks.py`` (docs/chunks.md). A fixed rule, not a
timing-based autotune: which chunk runs must not depend on the machine's load."""

GPU_CHUNK_ELEMENTS = 1 << 23
"""Most input elements per pass on a GPU: 10,700 MNIST images, 2,730 CIFAR images. A GPU is fastest on large batches,
so it gets the whole batch up to this bound, which keeps the activations of a ResNet-18 backward within a few GB (a
16 GB Colab GPU)."""


def chunk_size(x: Tensor, chunk: int | None = None) -> int:
    """Samples per forward/backward pass for the batch ``x`` (N, *): the per-device default or ``chunk``.

    Args:
        x: (N, *) the batch; its device and per-sample size set the default.
        chunk: ``None`` for the default: the batch split into the fewest equal chunks of at most
            :data:`CPU_CHUNK_ELEMENTS` input elements on a CPU, :data:`GPU_CHUNK_ELEMENTS` elsewhere (on a GPU that
            is the whole batch of any usual size, which is what a GPU is fast at), at least one sample each; ``0``
            for the whole batch; ``k >= 1`` for ``k`` samples.

    Chunking changes where the work is split, never the result: every per-sample quantity is computed from that
    sample alone (models are attacked in eval mode), and random draws are made for the whole batch.
    """
    n = max(len(x), 1)
    if chunk is None:
        budget = CPU_CHUNK_ELEMENTS if x.device.type == "cpu" else GPU_CHUNK_ELEMENTS
        cap = max(1, budget // max(x[0].numel() if len(x) else 1, 1))
        return -(-n // -(-n // cap))  # ceil(n / ceil(n / cap)): equal chunks, none above the cap
    if isinstance(chunk, bool) or int(chunk) != chunk or chunk < 0:
        raise AdvlabError(f"chunk must be None (the device's default), 0 (the whole batch) or a positive number of "
                          f"samples, got {chunk!r}.")
    return n if chunk == 0 else min(n, int(chunk))


def chunk_slices(n: int, size: int) -> list[slice]:
    """The consecutive slices of ``range(n)`` of length ``size`` (the last one shorter)."""
    return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


@on_model_device
@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor, chunk: int | None = None) -> Tensor:
    """Logits (N, K) of ``model`` on ``x``, computed in chunks (:func:`chunk_size`) without gradients (the model's
    mode is left as is: attacks call it inside :func:`eval_mode`). A model that cannot take ``x``'s shape gets a
    clear error."""
    if not callable(model):
        raise AdvlabError(f"model must be a torch.nn.Module, got a {type(model).__name__}.")
    size = chunk_size(x, chunk)
    try:
        outs = [model(x[s]) for s in chunk_slices(len(x), size)]
    except RuntimeError as err:
        if "shape" not in str(err) and "size" not in str(err) and "dimension" not in str(err):
            raise
        raise AdvlabError(f"The model cannot take inputs shaped {tuple(x.shape)} ({str(err).splitlines()[0]}). "
                          "Give it the shape it was built for, e.g. (N, 1, 28, 28) images for an MNIST CNN, not "
                          "flat (N, 784) vectors: x.view(-1, 1, 28, 28).") from err
    if len(outs) > 1 and not all(isinstance(o, Tensor) for o in outs):
        check_logits(outs[0])
    return outs[0] if len(outs) == 1 else torch.cat(outs)
