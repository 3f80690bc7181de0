"""Run-time configuration: device, seeding, profile and cache.

This is the only module that reads ``ADVLAB_*`` environment variables:

============== ==========================================================
ADVLAB_DEVICE  force a device (``cpu``, ``cuda``, ``cuda:1``, ``mps``)
ADVLAB_PROFILE ``fast`` (default: CPU-sized, offline) or ``full`` (paper-sized)
ADVLAB_CACHE   cache directory for models and downloads (``~/.cache/advlab``)
ADVLAB_DATA    a folder that already holds dataset files (checked first)
ADVLAB_OFFLINE ``1`` forbids every download attempt
============== ==========================================================
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

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


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels.

    Returns a CPU ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the legacy global stream on purpose
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return torch.Generator().manual_seed(seed)


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
