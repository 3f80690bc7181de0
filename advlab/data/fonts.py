"""FONTS: a synthetic letter dataset with a known manifold, after Stutz, Hein & Schiele (2019).

Every image is ``decode(prototype[font, letter], θ)``: a prototype glyph, rendered once from a
TrueType font, moved by a 6-parameter affine transformation θ. Because the generator is known and
differentiable, one can attack *along the manifold* (change θ, keep font and letter) and measure how far
any image is from the manifold (:func:`refit_theta`), which is what the paper's on-manifold adversarial
examples need. Stutz et al. used 1,000 Google Fonts; this offline version uses the fonts that ship with
matplotlib, so it needs no download.

Classes
    The letters ``A`` … ``J`` (10 classes), labels 0 … 9.

Fonts
    Every ``*.ttf`` in ``matplotlib/mpl-data/fonts/ttf`` that has real glyphs for all ten letters. A font
    is kept only when, for every letter, the character map gives a glyph (index ≠ 0), that glyph's
    PostScript name is the letter itself, the ten glyphs are distinct and none renders empty; a font whose
    renders duplicate an already kept font is dropped. With matplotlib 3.11 this keeps 23 fonts:
    DejaVu Sans, DejaVu Sans Mono and DejaVu Serif (each Book, Bold, Oblique/Italic and Bold
    Oblique/Italic: 12), STIXGeneral (Regular, Bold, Italic, Bold Italic: 4) and the Computer Modern
    fonts cmb10, cmmi10 (math italic), cmr10, cmss10, cmsy10 (calligraphic capitals), cmti10 and cmtt10
    (7); :func:`font_names` / :func:`font_files` list what your installation actually uses. It excludes
    DejaVu Sans/Serif Display (no letters), LastResortHE (one placeholder box for every letter),
    STIXNonUnicode and the STIXSize* fonts (no Latin letters), and cmex10 (its A–J code points are
    delimiters and integrals).

Prototypes
    Each (font, letter) glyph is rasterised with FreeType (``matplotlib.ft2font.FT2Font``, no display),
    cropped to its ink, scaled so its longer side is ``GLYPH_FRACTION`` (0.6) of the frame, and centred
    (bounding-box centre) in a ``PROTOTYPE_SIZE`` × ``PROTOTYPE_SIZE`` (64 × 64) grayscale image in [0, 1]
    (ink = 1). Prototypes are rendered once per process and cached (:func:`prototypes`).

Transformation θ = (tx, ty, shx, shy, scale, rotation)
    In the normalised image coordinates of :func:`torch.nn.functional.affine_grid` (x to the right and y
    *down*, both in [−1, 1], so a translation of 0.2 is 10 % of the image width). A point p of the
    prototype moves to ``A p + t`` with ``A = R(rotation) · scale · Sh(shx, shy)``, i.e. first shear
    ``Sh = [[1, shx], [shy, 1]]``, then isotropic scale, then rotation, then translation ``t = (tx, ty)``.
    Positive rotation turns the letter counter-clockwise on screen (radians); positive ty moves it down.

    ============ ================= ==================== =================
    difficulty   translation x, y   shear x, y           scale           rotation
    ============ ================= ==================== =================
    ``"hard"``   ±0.2               ±0.5                  [0.75, 1.15]     ±π/2   (the paper's ranges)
    ``"easy"``   ±0.1               ±0.2                  [0.9, 1.05]      ±π/8
    ============ ================= ==================== =================

    θ is drawn uniformly in these boxes (:func:`sample_theta`).

Splits
    Font, letter and θ are drawn from a seeded generator whose seed is ``2 * seed`` for ``"train"`` and
    ``2 * seed + 1`` for ``"test"``, so the two splits are independent draws (θ is continuous, so no test
    image repeats a training image) and every call with the same arguments returns the same tensors.
    Letters are exactly balanced (n // 10 each, the remainder to the first letters). With
    ``font_split=True`` the fonts are split too: every fifth font (index 4, 9, …) is test-only.
    Sizes: fast profile 2,000 train / 1,000 test; full profile 20,000 / 5,000.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from advlab import config
from advlab.config import AdvlabError

CLASSES: tuple[str, ...] = tuple("ABCDEFGHIJ")
IMAGE_SIZE = 28
PROTOTYPE_SIZE = 64
GLYPH_FRACTION = 0.6
RENDER_PIXELS = 160  # glyph em size (pixels) of the FreeType raster before resizing to the prototype
SPLITS = ("train", "test")
DEFAULT_SIZES = {"fast": {"train": 2000, "test": 1000}, "full": {"train": 20000, "test": 5000}}
THETA_NAMES = ("tx", "ty", "shx", "shy", "scale", "rotation")

THETA_LOW = {
    "hard": torch.tensor([-0.2, -0.2, -0.5, -0.5, 0.75, -math.pi / 2]),
    "easy": torch.tensor([-0.1, -0.1, -0.2, -0.2, 0.9, -math.pi / 8]),
}
THETA_HIGH = {
    "hard": torch.tensor([0.2, 0.2, 0.5, 0.5, 1.15, math.pi / 2]),
    "easy": torch.tensor([0.1, 0.1, 0.2, 0.2, 1.05, math.pi / 8]),
}
IDENTITY_THETA = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0])


class FontsSample(NamedTuple):
    """A generated FONTS split.

    Attributes:
        x: (N, 1, 28, 28) float32 images in [0, 1].
        y: (N,) int64 letter labels (0 = "A" … 9 = "J").
        font: (N,) int64 index into :func:`font_names`.
        theta: (N, 6) float32 transformation parameters (see the module docstring).
        classes: the class names ``("A", …, "J")``.
    """

    x: Tensor
    y: Tensor
    font: Tensor
    theta: Tensor
    classes: tuple[str, ...]


class Refit(NamedTuple):
    """Result of :func:`refit_theta`: the best θ (N, 6) and its reconstruction distance (N,), L2 in pixels."""

    theta: Tensor
    distance: Tensor


# ---------------------------------------------------------------------------------------------- fonts


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _render_glyph(font, letter: str) -> Tensor:
    """FreeType raster (H, W) float in [0, 1] of one glyph at ``RENDER_PIXELS`` per em."""
    font.clear()
    font.set_size(RENDER_PIXELS, 72)  # points at 72 dpi = pixels
    font.set_text(letter)
    font.draw_glyphs_to_bitmap(antialiased=True)
    return torch.from_numpy(np.asarray(font.get_image(), dtype=np.float32) / 255.0)


def _fit_to_frame(raster: Tensor, size: int) -> Tensor:
    """Crop a glyph raster to its ink, scale its longer side to GLYPH_FRACTION·size, centre it; (size, size)."""
    ink = raster > 0
    rows, cols = torch.nonzero(ink.any(1)).flatten(), torch.nonzero(ink.any(0)).flatten()
    glyph = raster[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = glyph.shape
    side = GLYPH_FRACTION * size
    factor = side / max(h, w)
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    small = F.interpolate(glyph[None, None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    out = torch.zeros(size, size)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = small[0, 0]
    return out.clamp(0.0, 1.0)


def _check_font(path: Path) -> tuple[str, list[Tensor]] | None:
    """(name, ten rasters) when the font has real, distinct, non-empty glyphs for A–J, else None."""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(str(path))
    except (OSError, RuntimeError, ValueError):
        return None
    indices = [font.get_char_index(ord(c)) for c in CLASSES]
    if any(i == 0 for i in indices) or len(set(indices)) < len(CLASSES):
        return None  # missing glyph, or every letter mapped to one placeholder (tofu)
    if any(font.get_glyph_name(i) != c for i, c in zip(indices, CLASSES, strict=True)):
        return None  # the code point holds some other symbol (e.g. cmex10's delimiters)
    rasters = [_render_glyph(font, c) for c in CLASSES]
    if any(r.numel() == 0 or r.max() <= 0 for r in rasters):
        return None
    name = f"{font.family_name} {font.style_name}".strip()
    return name, rasters


@functools.cache
def _catalogue(size: int) -> tuple[tuple[str, ...], tuple[str, ...], Tensor]:
    """(font names, file names, prototypes (F, 10, 1, size, size)) of the usable fonts, in file-name order."""
    names, files, protos = [], [], []
    for path in sorted(_font_dir().glob("*.ttf")):
        checked = _check_font(path)
        if checked is None:
            continue
        name, rasters = checked
        images = torch.stack([_fit_to_frame(r, size) for r in rasters])[:, None]
        if any(torch.equal(images, p) for p in protos):
            continue  # the same glyphs as a font already kept
        names.append(name)
        files.append(path.name)
        protos.append(images)
    if not protos:
        raise AdvlabError(
            f"No usable font with the letters A–J in {_font_dir()}; reinstall matplotlib (pip install matplotlib)."
        )
    return tuple(names), tuple(files), torch.stack(protos)


def font_names() -> tuple[str, ...]:
    """Family and style of every font used, in font-index order (e.g. ``"DejaVu Sans Bold"``)."""
    return _catalogue(PROTOTYPE_SIZE)[0]


def font_files() -> tuple[str, ...]:
    """File names (in matplotlib's ``mpl-data/fonts/ttf``) of the fonts used, in font-index order."""
    return _catalogue(PROTOTYPE_SIZE)[1]


def prototypes(size: int = PROTOTYPE_SIZE) -> Tensor:
    """All prototypes, (F, 10, 1, size, size) float32 in [0, 1] on the CPU (a copy of the cached render)."""
    if size < 8:
        raise AdvlabError(f"Prototype size must be at least 8 pixels, got {size}.")
    return _catalogue(size)[2].clone()


def prototypes_for(font: Tensor, y: Tensor, size: int = PROTOTYPE_SIZE) -> Tensor:
    """Prototypes of each sample's (font, letter): font, y (N,) int64 -> (N, 1, size, size) on y's device."""
    protos = _catalogue(size)[2]
    font, y = torch.as_tensor(font).long().flatten(), torch.as_tensor(y).long().flatten()
    if font.shape != y.shape:
        raise AdvlabError(f"font and y must have the same length, got {tuple(font.shape)} and {tuple(y.shape)}.")
    if len(y) and (font.min() < 0 or font.max() >= len(protos) or y.min() < 0 or y.max() >= len(CLASSES)):
        raise AdvlabError(
            f"font must be in [0, {len(protos)}) and y in [0, {len(CLASSES)}); use the indices from generate()."
        )
    return protos[font.cpu(), y.cpu()].to(y.device)


# ------------------------------------------------------------------------------------------ transform


def _check_difficulty(difficulty: str) -> None:
    if difficulty not in THETA_LOW:
        raise AdvlabError(f"Unknown difficulty {difficulty!r}; use 'hard' (the paper's ranges) or 'easy'.")


def theta_bounds(difficulty: str = "hard", device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """(low, high), each (6,): the box θ is drawn from for a difficulty."""
    _check_difficulty(difficulty)
    return THETA_LOW[difficulty].to(device), THETA_HIGH[difficulty].to(device)


def sample_theta(n: int, difficulty: str = "hard", generator: torch.Generator | None = None) -> Tensor:
    """n transformations θ (n, 6) float32, uniform in the difficulty's box (CPU; use ``generator`` to seed)."""
    low, high = theta_bounds(difficulty)
    u = torch.rand(n, 6, generator=generator)
    return low + u * (high - low)


def affine_matrix(theta: Tensor) -> Tensor:
    """The sampling matrix for :func:`F.affine_grid`: θ (M, 6) -> (M, 2, 3).

    The letter is moved by ``p -> A p + t`` with ``A = R(rotation) · scale · Sh(shx, shy)``; affine_grid
    needs the inverse map from output to input, ``p -> A⁻¹ (p − t)``, which is written out in closed form
    so that it is differentiable in θ. Needs ``shx · shy ≠ 1`` and ``scale ≠ 0`` (true inside both boxes).
    """
    tx, ty, shx, shy, scale, rot = theta.unbind(1)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # R(rot) = [[cos, sin], [-sin, cos]] turns counter-clockwise on screen (y points down); R⁻¹ = R(-rot).
    r_inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    det = 1.0 - shx * shy
    one = torch.ones_like(shx)
    sh_inv = torch.stack([torch.stack([one, -shx], -1), torch.stack([-shy, one], -1)], -2) / det[:, None, None]
    a_inv = sh_inv @ r_inv / scale[:, None, None]
    t = torch.stack([tx, ty], -1)[:, :, None]
    return torch.cat([a_inv, -a_inv @ t], dim=2)


def decode(prototypes: Tensor, theta: Tensor, size: int = IMAGE_SIZE) -> Tensor:
    """Transform prototypes by θ and render them at size × size; differentiable in θ (and prototypes).

    Args:
        prototypes: (M, 1, S, S) or (1, 1, S, S) glyphs in [0, 1] (e.g. from :func:`prototypes_for`).
        theta: (M, 6) transformation parameters (the prototypes are moved to its device and dtype).
        size: output side in pixels (default 28).

    Returns:
        (M, 1, size, size) images in [0, 1]: bilinear ``grid_sample`` (zeros outside the prototype,
        ``align_corners=False``) on a 2·size grid, then 2 × 2 average pooling (anti-aliasing).
    """
    if prototypes.ndim != 4 or prototypes.shape[1] != 1:
        raise AdvlabError(f"prototypes must be (M, 1, S, S), got {tuple(prototypes.shape)}.")
    if theta.ndim != 2 or theta.shape[1] != 6:
        raise AdvlabError(f"theta must be (M, 6) = (tx, ty, shx, shy, scale, rotation), got {tuple(theta.shape)}.")
    m = len(theta)
    if len(prototypes) not in (1, m):
        raise AdvlabError(f"Got {len(prototypes)} prototypes for {m} transformations; pass one each, or one for all.")
    protos = prototypes.to(theta.device, theta.dtype).expand(m, -1, -1, -1)
    matrix = affine_matrix(theta)
    grid = F.affine_grid(matrix, [m, 1, 2 * size, 2 * size], align_corners=False)
    fine = F.grid_sample(protos, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(fine, 2).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- data


def _split_seed(split: str, seed: int) -> int:
    if split not in SPLITS:
        raise AdvlabError(f"Unknown split {split!r}; use 'train' or 'test'.")
    if seed < 0:
        raise AdvlabError(f"seed must be >= 0, got {seed}.")
    return 2 * seed + SPLITS.index(split)


def generate(
    split: str = "train",
    n: int | None = None,
    difficulty: str = "hard",
    seed: int = 0,
    *,
    font_split: bool = False,
    batch_size: int = 4096,
    profile: str | None = None,
) -> FontsSample:
    """Generate a FONTS split with its latent variables (see the module docstring for splits and θ).

    Args:
        split: ``"train"`` or ``"test"``.
        n: number of images; default 2,000 / 1,000 (fast profile) or 20,000 / 5,000 (full).
        difficulty: ``"hard"`` (the paper's θ ranges) or ``"easy"``.
        seed: dataset seed (≥ 0); the split picks an independent stream from it.
        font_split: if True, fonts 4, 9, 14, … are used only in the test split, the others only in train.
        batch_size: images decoded at once (memory only; the result does not depend on it).
        profile: ``"fast"`` or ``"full"`` for the default n; default :func:`advlab.profile`.

    Returns:
        :class:`FontsSample` (x, y, font, theta, classes), all on the CPU.
    """
    _check_difficulty(difficulty)
    g = torch.Generator().manual_seed(_split_seed(split, seed))
    if n is None:
        profile = profile or config.profile()
        if profile not in DEFAULT_SIZES:
            raise AdvlabError(f"Unknown profile {profile!r}; use one of {tuple(DEFAULT_SIZES)}.")
        n = DEFAULT_SIZES[profile][split]
    if n < 1:
        raise AdvlabError(f"n must be a positive number of images, got {n}.")
    num_fonts = len(font_names())
    allowed = torch.arange(num_fonts)
    if font_split:
        if num_fonts < 5:
            raise AdvlabError(f"font_split needs at least 5 fonts, only {num_fonts} are available.")
        is_test = allowed % 5 == 4
        allowed = allowed[is_test] if split == "test" else allowed[~is_test]
    y = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    font = allowed[torch.randint(len(allowed), (n,), generator=g)]
    theta = sample_theta(n, difficulty, generator=g)
    x = torch.empty(n, 1, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            x[sl] = decode(prototypes_for(font[sl], y[sl]), theta[sl])
    return FontsSample(x, y, font, theta, CLASSES)


def load(
    split: str = "train",
    n: int | None = None,
    *,
    difficulty: str = "hard",
    seed: int = 0,
    font_split: bool = False,
    profile: str | None = None,
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """The FONTS split as ``(x, y, classes)``: x (N, 1, 28, 28) float32 in [0, 1], y (N,) int64.

    Same arguments as :func:`generate`, which also returns each image's font and θ.
    """
    sample = generate(split, n, difficulty, seed, font_split=font_split, profile=profile)
    return sample.x, sample.y, sample.classes


# ------------------------------------------------------------------------------------ manifold distance


def _blur(x: Tensor, sigma: float = 1.5) -> Tensor:
    """Gaussian blur of (N, 1, H, W) images (zero padding), differentiable: ``B x Bᵀ`` with B Gaussian (H, H)."""
    size = x.shape[-1]
    t = torch.arange(size, device=x.device, dtype=x.dtype)
    b = torch.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma) ** 2)
    b = b / b.sum(1, keepdim=True).max()
    return b @ x @ b.T


def refit_theta(
    prototypes: Tensor,
    x: Tensor,
    theta0: Tensor,
    steps: int = 200,
    lr: float = 0.02,
    bounds: tuple[Tensor, Tensor] | None = None,
    coarse_fraction: float = 0.5,
) -> Refit:
    """Fit θ so that ``decode(prototypes, θ)`` reconstructs x: a per-sample distance to the manifold.

    Minimises the squared L2 reconstruction error of every sample independently (the batch loss is a
    sum, and Adam's update is element-wise) from ``theta0``, clamping θ into ``bounds`` after each step,
    and keeps each sample's best iterate (judged on the unblurred error). The first ``coarse_fraction``
    of the steps compare Gaussian-blurred images (σ = 1.5 px), which widens the basin of attraction: thin
    strokes that do not overlap give no gradient otherwise. The fit is local: a start far from the
    true θ (e.g. rotated by ~π) can end in a wrong local minimum, so the distance is an upper bound.

    Args:
        prototypes: (N, 1, S, S) the (font, letter) glyph to fit each image with (or (1, 1, S, S) for all).
        x: (N, 1, 28, 28) images in [0, 1].
        theta0: (N, 6) starting transformations.
        steps: Adam steps.
        lr: Adam learning rate.
        bounds: (low, high) each (6,); default the "hard" box, the largest θ range of the dataset.
        coarse_fraction: share of the steps spent on the blurred (coarse) objective.

    Returns:
        :class:`Refit` (theta (N, 6), distance (N,) = ‖decode(prototypes, θ) − x‖₂ in pixel units).
    """
    if x.ndim != 4 or x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise AdvlabError(f"x must be (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) images, got {tuple(x.shape)}.")
    if theta0.shape != (len(x), 6):
        raise AdvlabError(f"theta0 must be ({len(x)}, 6), one start per image, got {tuple(theta0.shape)}.")
    if steps < 0:
        raise AdvlabError(f"steps must be >= 0, got {steps}.")
    low, high = bounds if bounds is not None else theta_bounds("hard")
    low, high = low.to(x.device, x.dtype), high.to(x.device, x.dtype)
    protos = prototypes.to(x.device, x.dtype).detach()
    target = x.detach()
    theta = theta0.detach().to(x.device, x.dtype).clamp(low, high).clone().requires_grad_(True)
    best_theta = theta.detach().clone()
    best = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
    opt = torch.optim.Adam([theta], lr=lr)
    coarse_steps = int(coarse_fraction * steps)
    target_blur = _blur(target)
    with torch.enable_grad():
        for step in range(steps + 1):
            recon = decode(protos, theta)
            err = (recon - target).flatten(1).pow(2).sum(1)
            better = err.detach() < best
            best = torch.where(better, err.detach(), best)
            best_theta = torch.where(better[:, None], theta.detach(), best_theta)
            if step == steps:
                break
            loss = (_blur(recon) - target_blur).flatten(1).pow(2).sum(1) if step < coarse_steps else err
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                theta.copy_(torch.maximum(torch.minimum(theta, high), low))
    return Refit(best_theta, best.sqrt())


__all__ = [
    "CLASSES",
    "THETA_HIGH",
    "THETA_LOW",
    "THETA_NAMES",
    "FontsSample",
    "Refit",
    "affine_matrix",
    "decode",
    "font_files",
    "font_names",
    "generate",
    "load",
    "prototypes",
    "prototypes_for",
    "refit_theta",
    "sample_theta",
    "theta_bounds",
]
