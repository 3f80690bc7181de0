"""Run-time configuration: device, seeding, profile and cache.

This is the only module that reads ``ADVLAB_*`` environment variables:

============== ==========================================================
ADVLAB_DEVICE  force a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``)
ADVLAB_PROFILE ``fast`` (default: CPU-sized, offline) or ``full`` (paper-sized)
ADVLAB_CACHE   cache directory for models and downloads (``~/.cache/advlab``)
ADVLAB_DATA    a folder that already holds dataset files (checked first)
ADVLAB_OFFLINE ``1`` forbids every download attempt
ADVLAB_SEED    the course's base seed (default 0): :func:`seed`, :func:`generator`, :func:`seed_everything`
ADVLAB_JITTER  relative noise added to the weights of every zoo model and every model :func:`advlab.train.fit`
               starts from (default 0: none), e.g. ``1e-6``: it moves the last bits of the arithmetic
============== ==========================================================

The last two exist to test the course, not to use it. ``make test`` runs the notebooks once more with
``ADVLAB_JITTER=1e-6`` (every checked output must reproduce exactly: an output that flips sits on a rounding
edge and would flip on another CPU) and once with ``ADVLAB_SEED=1`` (only the notebooks' claims, their
asserts, must hold).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.utils.deterministic  # (its flag is one of the global flags seed_everything sets)

PROFILES = ("fast", "full")
_profile_override: str | None = None


class AdvlabError(ValueError):
    """An error caused by how advlab was called; the message says what to do."""


def device() -> torch.device:
    """The device to compute on: ``ADVLAB_DEVICE``, else cuda, else mps, else cpu."""
    forced = os.environ.get("ADVLAB_DEVICE", "").strip()
    if forced:
        try:
            return torch.device(forced)
        except RuntimeError as err:
            raise AdvlabError(f"ADVLAB_DEVICE={forced!r} is not a torch device; use cpu, cuda, cuda:0 or mps.") from err
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _env_number(name: str, cast: type, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return cast(value)
    except ValueError as err:
        example = cast(default)
        raise AdvlabError(f"{name}={value!r} is not a {cast.__name__}; unset it or give e.g. {example!r}.") from err


def seed(offset: int = 0) -> int:
    """The course's seed ``ADVLAB_SEED`` (default 0) plus ``offset``.

    The notebooks derive every seed they use from this one, so that the whole course can be re-run with other
    random starts, noise draws and training runs (``ADVLAB_SEED=1``) to check that its claims do not hang on one
    draw.
    """
    return _course_seed() + int(offset)


def _course_seed() -> int:
    return int(_env_number("ADVLAB_SEED", int, 0))


def generator(offset: int = 0) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with :func:`seed` ``(offset)``.

    Attacks draw their random starts on the CPU from it, so a seeded call gives the same result on every device.
    """
    return torch.Generator().manual_seed(seed(offset))


def weight_jitter() -> float:
    """``ADVLAB_JITTER``: the relative weight noise of :func:`jitter_weights` (0, the default, means none)."""
    rel = float(_env_number("ADVLAB_JITTER", float, 0.0))
    if not (math.isfinite(rel) and 0.0 <= rel <= 1e-2):
        raise AdvlabError(f"ADVLAB_JITTER={rel!r}: give a relative noise level in [0, 0.01], e.g. 1e-6, or unset it.")
    return rel


@torch.no_grad()
def jitter_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Multiply every floating-point parameter and buffer of ``model`` by ``1 + ε·z`` (z ~ N(0, 1), ε =
    :func:`weight_jitter`), in place; a no-op when ``ADVLAB_JITTER`` is unset.

    A test switch: it changes the last bits of every computation the way another CPU's kernels would (float32
    has a relative precision of 6e-8, so ε = 1e-6 moves each weight by a few units in the last place). The noise
    comes from a private generator with a fixed seed, so jittered runs are reproducible and the caller's random
    state is untouched.
    """
    rel = weight_jitter()
    if rel == 0.0:
        return model
    gen = torch.Generator().manual_seed(20_261_205)
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.numel():
            z = torch.randn(tensor.shape, generator=gen, dtype=torch.float64)
            tensor.mul_((1.0 + rel * z).to(device=tensor.device, dtype=tensor.dtype))
    return model


def seed_everything(seed: int | None = None, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels.

    For a notebook's or a script's first cell. Library functions that call it are decorated with :func:`isolated`,
    so that they leave the caller's random state and flags as they found them.

    ``seed=None`` takes the course's seed, :func:`seed` ``()`` (``ADVLAB_SEED``, default 0). Returns a CPU
    ``torch.Generator`` seeded with the same value for code that wants its own stream.
    """
    if seed is None:
        seed = _course_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the legacy global stream on purpose
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # that mode also writes NaN into every new tensor (a guard against kernels that read memory they never
        # wrote): one more pass per allocation, 2-6 % of a PGD-AT epoch on a CPU, while no op of advlab's reads such
        # memory (training and attacks are bit-identical without it, tests/test_config.py)
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block that may seed and draw from the global RNGs and flip the determinism flags; afterwards the
    caller's Python, NumPy and torch (CPU and, where available, CUDA) random states, the deterministic-algorithms
    flags (with their uninitialized-memory fill), cuDNN's flags and ``CUBLAS_WORKSPACE_CONFIG`` are exactly as they
    were, whatever the block did or raised.
    """
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()  # noqa: NPY002
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    det, det_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    bench, cudnn_det = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)  # noqa: NPY002
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, cudnn_det
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


F = TypeVar("F", bound=Callable[..., Any])


def isolated(fn: F) -> F:
    """Decorator for library functions that seed the global RNGs (:func:`seed_everything`) to be reproducible:
    the call runs inside :func:`preserved_random_state`, so the caller's random state and flags survive it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with preserved_random_state():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def profile() -> str:
    """The active profile: ``"fast"`` (default) or ``"full"``.

    :func:`set_profile` wins over ``ADVLAB_PROFILE``.
    """
    name = _profile_override or os.environ.get("ADVLAB_PROFILE", "fast").strip().lower() or "fast"
    if name not in PROFILES:
        raise AdvlabError(f"Unknown profile {name!r}; set ADVLAB_PROFILE to one of {PROFILES}.")
    return name


def set_profile(name: str | None) -> str:
    """Set the profile for this process (``None`` returns to ``ADVLAB_PROFILE``); returns it."""
    global _profile_override
    if name is not None and name not in PROFILES:
        raise AdvlabError(f"Unknown profile {name!r}; choose one of {PROFILES}.")
    _profile_override = name
    return profile()


def cache_dir() -> Path:
    """The cache directory (``ADVLAB_CACHE``, default ``~/.cache/advlab``), created on demand."""
    path = Path(os.environ.get("ADVLAB_CACHE") or Path.home() / ".cache" / "advlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path | None:
    """A user-provided folder of dataset files (``ADVLAB_DATA``), or ``None``."""
    value = os.environ.get("ADVLAB_DATA", "").strip()
    return Path(value).expanduser() if value else None


def offline() -> bool:
    """True when ``ADVLAB_OFFLINE`` forbids downloads."""
    return os.environ.get("ADVLAB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}


# --------------------------------------------------------------------------------------- version and registrations
#: The package's version (``advlab.__version__``). It lives here, at the bottom layer, because the zoo hashes it
#: into every checkpoint key and the zoo must not import the package's top level.
VERSION = "0.1.0"

# Registration from above. A lower layer (the zoo) lists what upper layers (defenses, eval, vae, the cached results)
# register with it and never imports them. The package's top level, which sits above every layer, leaves here the
# function that imports the registering modules (advlab/__init__.py), and the lower layer calls
# :func:`complete_registrations` before it first looks anything up.
_pending_registrations: list[Callable[[], None]] = []
_registering = False


def defer_registration(register: Callable[[], None]) -> None:
    """Run ``register`` (it imports modules that register with a lower layer) at the first
    :func:`complete_registrations`, not now: importing ``advlab`` stays cheap."""
    _pending_registrations.append(register)


def complete_registrations() -> None:
    """Run the registrations left by :func:`defer_registration`, once (a no-op afterwards and while they run)."""
    global _registering
    if _registering:
        return
    _registering = True
    try:
        while _pending_registrations:
            _pending_registrations[0]()
            _pending_registrations.pop(0)
    finally:
        _registering = False
