"""Toy problems whose answers are known in closed form, for the theory parts of the course.

Three toys, each with data, a model and the quantity the paper is about:

* **Robustness vs. accuracy** (Tsipras et al., 2019, "Robustness may be at odds with accuracy"):
  :func:`tsipras_data`, exact robust loss and accuracy of linear models under ℓ∞
  (:func:`linear_robust_loss`, :func:`accuracy`), standard vs. robust training (:func:`train_linear`)
  and the theorem's bound (:func:`tsipras_bound`).
* **Adversarial spheres** (Gilmer et al., 2018): two concentric spheres (:func:`spheres_data`), the
  quadratic network (:class:`QuadraticNet`, :func:`train_spheres`), its error rate on each sphere
  (:func:`sphere_error_rate`) and the nearest error found by an attack that stays on the sphere
  (:func:`nearest_error_on_sphere`).
* **Practical vs consistent adversarial examples** (section ② of the survey): the 2-D toys of
  :mod:`advlab.data.toy2d` know their true hypothesis h*; :class:`TrueHypothesis` turns it into a classifier and
  :func:`toy2d_mlp` trains a small MLP on a few of their points in about a second.
* **Boundary tilting** (Tanay & Griffin, 2016): classes separated along one direction, the data flat
  (low variance) in all others (:func:`boundary_tilting_data`); :func:`boundary_angle` and
  :func:`distance_to_boundary` measure how far a learned linear boundary is tilted away from the true
  one and how close it comes to the data.

Binary labels are ±1 floats (N,) for the linear toys and {0, 1} int64 for the spheres (the
:class:`QuadraticNet` returns two logits, so any attack in :mod:`advlab.attacks` applies to it).
Everything is a pure function of tensors on their own device; pass a ``torch.Generator`` for
reproducible data (CPU generators only: data are drawn on the CPU).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import config
from advlab.config import AdvlabError

__all__ = [
    "LinearModel",
    "NearestError",
    "QuadraticNet",
    "accuracy",
    "boundary_angle",
    "boundary_tilting_data",
    "distance_to_boundary",
    "linear_robust_loss",
    "nearest_error_on_sphere",
    "robust_margin",
    "sphere_error_rate",
    "spheres_data",
    "TrueHypothesis",
    "toy2d_mlp",
    "train_linear",
    "train_spheres",
    "tsipras_bound",
    "tsipras_data",
    "tsipras_eta",
]


class LinearModel(NamedTuple):
    """A linear classifier ``sign(wᵀx + b)``: w (D,), b () — both detached tensors."""

    w: Tensor
    b: Tensor


def _check_pm1(y: Tensor) -> None:
    if not bool(((y == 1) | (y == -1)).all()):
        raise AdvlabError("Labels for the linear toys must be ±1 (e.g. y = 2 * y01 - 1).")


def _check_xy(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.shape != (len(x),):
        raise AdvlabError(f"Expected x (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}.")
    _check_pm1(y)


# ------------------------------------------------------------------------- Tsipras et al. (2019)


def tsipras_eta(d: int) -> float:
    """The default mean of the weak features, η = 3/√d (every weak feature alone is ~56 % accurate)."""
    return 3.0 / math.sqrt(d)


def tsipras_data(
    n: int, d: int = 1000, p: float = 0.95, eta: float | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Tsipras et al.'s distribution: one robust, mostly right feature and d weak, non-robust ones.

    y is ±1 with equal probability; x₁ = y with probability p, else −y; x₂ … x_{d+1} ~ N(η y, 1).

    Args:
        n: number of samples.
        d: number of weak features (x has d + 1 columns).
        p: accuracy of the robust feature x₁, in (0.5, 1).
        eta: mean of the weak features; default :func:`tsipras_eta` (3/√d), so that averaging them
            classifies with ~99.9 % accuracy while an ℓ∞ perturbation of ε = 2η flips every one of them.
        generator: CPU random generator.

    Returns:
        x (n, d + 1) float32 and y (n,) float32 in {−1, +1}.
    """
    if n < 1 or d < 1:
        raise AdvlabError(f"n and d must be positive, got n={n}, d={d}.")
    if not 0.5 < p < 1.0:
        raise AdvlabError(f"p must be in (0.5, 1) (the robust feature's accuracy), got {p}.")
    eta = tsipras_eta(d) if eta is None else eta
    y = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    agree = torch.rand(n, generator=generator) < p
    x1 = torch.where(agree, y, -y)
    weak = eta * y[:, None] + torch.randn(n, d, generator=generator)
    return torch.cat([x1[:, None], weak], dim=1), y


def robust_margin(w: Tensor, b: Tensor, x: Tensor, y: Tensor, eps: float | Tensor = 0.0) -> Tensor:
    """Worst-case margin of a linear model in an ℓ∞ ball: ``y (wᵀx + b) − ε ‖w‖₁``, shape (N,).

    Exact: ``min_{‖δ‖∞ ≤ ε} y wᵀ(x + δ) = y wᵀx − ε ‖w‖₁``, attained at ``δ = −ε y sign(w)`` (Hölder).
    No [0, 1] box applies here: the toy features are unbounded. ``eps`` is a scalar or (N,).
    """
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if bool((eps < 0).any()):
        raise AdvlabError("eps must be >= 0.")
    return y * (x @ w + b) - eps * w.abs().sum()


def linear_robust_loss(w: Tensor, b: Tensor, x: Tensor, y: Tensor, eps: float | Tensor = 0.0) -> Tensor:
    """Exact ℓ∞-robust logistic loss of a linear model, averaged over the batch (a scalar).

    ``mean log(1 + exp(−m))`` with m the worst-case margin of :func:`robust_margin`: the logistic loss
    decreases in the margin, so its maximum over the ball is at the margin's minimum. ``eps = 0`` gives the
    standard logistic loss. x (N, D), y (N,) ±1, w (D,), b ().
    """
    _check_xy(x, y)
    return F.softplus(-robust_margin(w, b, x, y, eps)).mean()


def train_linear(
    x: Tensor,
    y: Tensor,
    eps: float = 0.0,
    epochs: int = 300,
    lr: float = 0.05,
    weight_decay: float = 0.0,
) -> LinearModel:
    """Train a linear model on the (robust, for eps > 0) logistic loss, full batch.

    Adam with a cosine learning-rate decay to 0 (so the weights settle instead of oscillating around the
    kink of ‖w‖₁), from w = 0, b = 0. ``eps = 0`` is standard training; ``eps > 0`` is exact ℓ∞
    adversarial training (:func:`linear_robust_loss`). ``weight_decay`` adds ``weight_decay/2 · ‖w‖₂²``.

    Args:
        x: (N, D) features.
        y: (N,) labels ±1.
        eps: ℓ∞ radius to train against.
        epochs: full-batch steps.
        lr: initial Adam learning rate.
        weight_decay: L2 penalty on w.

    Returns:
        :class:`LinearModel` (w (D,), b ()) on x's device.
    """
    _check_xy(x, y)
    if eps < 0 or epochs < 1:
        raise AdvlabError(f"eps must be >= 0 and epochs >= 1, got eps={eps}, epochs={epochs}.")
    w = torch.zeros(x.shape[1], device=x.device, dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), device=x.device, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    with torch.enable_grad():
        for _ in range(epochs):
            loss = linear_robust_loss(w, b, x, y, eps) + 0.5 * weight_decay * w.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return LinearModel(w.detach(), b.detach())


def accuracy(w: Tensor, b: Tensor, x: Tensor, y: Tensor, eps: float | Tensor = 0.0) -> float:
    """Fraction of samples whose worst-case margin in the ℓ∞ ball of radius eps is > 0 (eps = 0: clean)."""
    _check_xy(x, y)
    return (robust_margin(w, b, x, y, eps) > 0).float().mean().item()


def tsipras_bound(p: float, delta: float) -> float:
    """Tsipras et al. (2019), Theorem 2.1: the most robust accuracy allowed at a given standard accuracy.

    Statement used: on the distribution of :func:`tsipras_data`, *any* classifier that attains standard
    accuracy at least 1 − δ has robust accuracy at most ``p / (1 − p) · δ`` against an ℓ∞-bounded
    adversary with ε ≥ 2η. (Both accuracies are over the data distribution, so a finite test set checks
    it only up to sampling error.) Returns ``min(1, p δ / (1 − p))``.
    """
    if not 0.5 < p < 1.0 or not 0.0 <= delta <= 1.0:
        raise AdvlabError(f"Need 0.5 < p < 1 and 0 <= delta <= 1, got p={p}, delta={delta}.")
    return min(1.0, p / (1.0 - p) * delta)


# -------------------------------------------------------------------- Gilmer et al. (2018) spheres


def _on_sphere(n: int, d: int, radius: Tensor, generator: torch.Generator | None) -> Tensor:
    z = torch.randn(n, d, generator=generator)
    return z / torch.linalg.vector_norm(z, dim=1, keepdim=True) * radius[:, None]


def spheres_data(
    n: int, d: int, r_inner: float = 1.0, r_outer: float = 1.3, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Points uniform on two concentric spheres in R^d: y = 0 on radius r_inner, y = 1 on r_outer.

    Returns x (n, d) float32 and y (n,) int64, with the two classes balanced (n // 2 each, the odd one
    inner) in a random order.
    """
    if n < 1 or d < 2:
        raise AdvlabError(f"Need n >= 1 and d >= 2, got n={n}, d={d}.")
    if not 0 < r_inner < r_outer:
        raise AdvlabError(f"Need 0 < r_inner < r_outer, got {r_inner}, {r_outer}.")
    y = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]
    radius = torch.where(y == 1, torch.tensor(r_outer), torch.tensor(r_inner))
    return _on_sphere(n, d, radius, generator), y


class QuadraticNet(nn.Module):
    """Gilmer et al.'s quadratic network: ``z(x) = aᵀ (W x)² + b``, logits ``(−z/2, z/2)``.

    Class 1 (outer sphere) when z > 0. Its decision boundary ``xᵀ Wᵀ diag(a) W x = −b`` is a quadric, so the
    ideal boundary (a sphere between the two) is representable; with ``W = I`` it is ``Σ aᵢ xᵢ² = −b``.

    Args:
        d: input dimension.
        hidden: rows of W (default d).
    """

    def __init__(self, d: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or d
        self.W = nn.Parameter(torch.randn(hidden, d) / math.sqrt(d))
        self.a = nn.Parameter(torch.full((hidden,), 1.0 / hidden))
        self.b = nn.Parameter(torch.tensor(-1.0))

    def score(self, x: Tensor) -> Tensor:
        """The scalar score z (N,) of inputs x (N, d)."""
        return (x @ self.W.T).pow(2) @ self.a + self.b

    def forward(self, x: Tensor) -> Tensor:
        z = self.score(x)
        return torch.stack([-z / 2, z / 2], dim=1)


def train_spheres(
    model: nn.Module,
    d: int,
    steps: int = 1000,
    batch_size: int = 50,
    lr: float = 1e-3,
    r_inner: float = 1.0,
    r_outer: float = 1.3,
    seed: int = 0,
) -> nn.Module:
    """Train a classifier on fresh sphere samples each step (cross-entropy, Adam), like Gilmer et al.

    Returns the model in eval mode, on the device of its parameters.
    """
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    config.jitter_weights(model)  # ADVLAB_JITTER (a test switch; no-op by default)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    with torch.enable_grad():
        for _ in range(steps):
            x, y = spheres_data(batch_size, d, r_inner, r_outer, generator=g)
            loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def sphere_error_rate(
    model: nn.Module, d: int, n: int = 10000, r_inner: float = 1.0, r_outer: float = 1.3, seed: int = 1
) -> tuple[float, float]:
    """Monte-Carlo error rates (inner sphere, outer sphere) of a classifier, from n uniform points each."""
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    rates = []
    for label, r in ((0, r_inner), (1, r_outer)):
        x = _on_sphere(n, d, torch.full((n,), float(r)), g).to(dev)
        rates.append((model(x).argmax(1) != label).float().mean().item())
    model.train(was_training)
    return rates[0], rates[1]


class NearestError(NamedTuple):
    """Result of :func:`nearest_error_on_sphere`.

    Attributes:
        x_err: (N, d) the closest misclassified point found, on x's sphere (x itself where none was found).
        success: (N,) bool, an error was found.
        distance: (N,) Euclidean ‖x_err − x‖₂ (inf where no error was found).
    """

    x_err: Tensor
    success: Tensor
    distance: Tensor


def _slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Points at fraction t (N,) along the great circle from a to b (N, d), both on the same sphere."""
    r = torch.linalg.vector_norm(a, dim=1, keepdim=True)
    ua, ub = a / r, b / torch.linalg.vector_norm(b, dim=1, keepdim=True)
    omega = torch.arccos((ua * ub).sum(1).clamp(-1.0, 1.0))[:, None]
    s = torch.sin(omega).clamp_min(1e-12)
    t = t[:, None]
    out = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / s
    out = torch.where(omega < 1e-6, ua, out)
    return out * r


def nearest_error_on_sphere(
    model: nn.Module, x: Tensor, y: Tensor, steps: int = 200, step_size: float = 0.01, bisection: int = 25
) -> NearestError:
    """Find a close misclassified point on the sphere through each x (an attack that stays on the sphere).

    1. Steepest ascent of the margin loss ``z_wrong − z_true`` along the sphere: the input gradient is
       projected on the tangent plane, a step of ``step_size · ‖x‖`` is taken along it and the point is
       put back on the sphere. A sample stops at its first misclassified iterate.
    2. Bisection (``bisection`` halvings) along the great circle from x to that iterate for the boundary
       crossing closest to x.

    The result is an upper bound on the distance from x to the nearest error on its sphere; it is the exact
    nearest error whenever the steepest-ascent path is the shortest geodesic to the error region (e.g. for
    a boundary ``|x₁| = c``). Gradients are taken with respect to the input only, the model is in eval mode.

    Args:
        model: classifier returning (N, 2) logits.
        x: (N, d) points (each defines its own sphere, radius ‖x‖).
        y: (N,) int64 true labels.
        steps: ascent steps (the path can go up to ``steps · step_size`` radians).
        step_size: step length as a fraction of the radius (radians).
        bisection: halvings of the geodesic segment.

    Returns:
        :class:`NearestError` (x_err, success, distance).
    """
    from advlab.attacks.tensors import eval_mode

    if x.ndim != 2 or y.shape != (len(x),):
        raise AdvlabError(f"Expected x (N, d) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}.")
    y = y.to(x.device).long()
    x = x.detach()
    radius = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    with eval_mode(model):
        with torch.no_grad():
            found = model(x).argmax(1) != y
        x_err = x.clone()
        cur = x.clone()
        for _ in range(steps):
            cur.requires_grad_(True)
            with torch.enable_grad():
                logits = model(cur)
                true = logits.gather(1, y[:, None]).squeeze(1)
                other = logits.scatter(1, y[:, None], -math.inf).amax(1)
                (grad,) = torch.autograd.grad((other - true).sum(), cur)
            with torch.no_grad():
                u = cur / radius
                tangent = grad - (grad * u).sum(1, keepdim=True) * u
                tangent = tangent / torch.linalg.vector_norm(tangent, dim=1, keepdim=True).clamp_min(1e-12)
                nxt = cur + step_size * radius * tangent
                nxt = nxt / torch.linalg.vector_norm(nxt, dim=1, keepdim=True) * radius
                nxt = torch.where(found[:, None], cur, nxt)  # finished samples stay put
                wrong = model(nxt).argmax(1) != y
                new = wrong & ~found
                x_err = torch.where(new[:, None], nxt, x_err)
                found = found | wrong
                cur = nxt.detach()
        with torch.no_grad():
            lo = torch.zeros(len(x), device=x.device, dtype=x.dtype)  # correct (or x itself)
            hi = torch.ones_like(lo)  # misclassified
            for _ in range(bisection):
                mid = (lo + hi) / 2
                wrong = model(_slerp(x, x_err, mid)).argmax(1) != y
                hi = torch.where(wrong, mid, hi)
                lo = torch.where(wrong, lo, mid)
            best = _slerp(x, x_err, hi)
            best = torch.where(found[:, None], best, x)
            distance = torch.linalg.vector_norm(best - x, dim=1)
            distance = torch.where(found, distance, torch.full_like(distance, math.inf))
    return NearestError(best, found, distance)


# ------------------------------------------------------------------ Tanay & Griffin (2016) tilting


def boundary_tilting_data(
    n: int, d: int = 2, sigma: float = 0.02, gap: float = 0.05, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Two classes separated along x₁, lying flat (variance σ²) in the other d − 1 directions.

    y is ±1 (balanced, random order); x₁ = y · U(gap, 1); x₂ … x_d ~ N(0, σ²). The true boundary is the
    hyperplane x₁ = 0 (normal e₁): every point is at least ``gap`` from it. Because the data hardly vary
    along x₂ … x_d, a linear classifier can tilt its boundary towards those directions (Tanay & Griffin's
    *boundary tilting*) at no cost in accuracy, while the boundary comes much closer to the data; see
    :func:`boundary_angle` and :func:`distance_to_boundary`.

    Returns:
        x (n, d) float32 and y (n,) float32 in {−1, +1}.
    """
    if n < 1 or d < 2:
        raise AdvlabError(f"Need n >= 1 and d >= 2, got n={n}, d={d}.")
    if not 0 <= gap < 1 or sigma < 0:
        raise AdvlabError(f"Need 0 <= gap < 1 and sigma >= 0, got gap={gap}, sigma={sigma}.")
    y = ((torch.arange(n) % 2) * 2 - 1)[torch.randperm(n, generator=generator)].float()
    x1 = y * (gap + (1 - gap) * torch.rand(n, generator=generator))
    rest = sigma * torch.randn(n, d - 1, generator=generator)
    return torch.cat([x1[:, None], rest], dim=1), y


def boundary_angle(w: Tensor, normal: Tensor | None = None) -> float:
    """Tilt of a linear boundary: the angle in degrees between its normal w (D,) and the true normal.

    ``normal`` defaults to e₁ (the true normal of :func:`boundary_tilting_data`). The angle is taken
    between the lines (sign ignored), in [0°, 90°]: 0° is the true boundary, 90° a boundary orthogonal to it.
    """
    if normal is None:
        normal = torch.zeros_like(w)
        normal[0] = 1.0
    if w.shape != normal.shape or w.ndim != 1:
        raise AdvlabError(
            f"w and normal must be vectors of the same length, got {tuple(w.shape)}, {tuple(normal.shape)}."
        )
    denom = torch.linalg.vector_norm(w) * torch.linalg.vector_norm(normal)
    if denom == 0:
        raise AdvlabError("w and normal must be non-zero vectors.")
    cos = ((w @ normal).abs() / denom).clamp(0.0, 1.0)
    return math.degrees(torch.arccos(cos).item())


def distance_to_boundary(w: Tensor, b: Tensor | float, x: Tensor) -> Tensor:
    """Euclidean distance (N,) of points x (N, D) to the hyperplane ``wᵀx + b = 0``: ``|wᵀx + b| / ‖w‖₂``.

    For a linear model this is exactly the smallest ℓ₂ perturbation that reaches the boundary.
    """
    norm = torch.linalg.vector_norm(w)
    if norm == 0:
        raise AdvlabError("w must be non-zero: a zero weight vector has no boundary.")
    return (x @ w + b).abs() / norm


# ------------------------------------------------------------- 2-D toys with a known true hypothesis (section ②)


class TrueHypothesis(nn.Module):
    """The true hypothesis h* of a 2-D toy (:mod:`advlab.data.toy2d`) as a classifier without parameters.

    Logits (N, 2) are ``scale · (−s, s)`` with s the toy's signed true score, so ``argmax`` is exactly
    ``toy2d.true_label(name, x)``. Inputs x: (N, 2). Created in eval mode.
    """

    def __init__(self, name: str = "circle", scale: float = 100.0) -> None:
        super().__init__()
        from advlab.data import toy2d

        if name not in toy2d.CLASSES:
            raise AdvlabError(f"Unknown toy dataset {name!r}; choose one of {sorted(toy2d.CLASSES)}.")
        self.name, self.scale = name, float(scale)
        self.eval()  # nothing to train: attacks find it in eval mode

    def forward(self, x: Tensor) -> Tensor:
        from advlab.data import toy2d

        s = toy2d.true_score(self.name, x)
        return torch.stack([-s, s], dim=1) * self.scale

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def toy2d_mlp(
    name: str = "circle", n_train: int = 100, hidden: int = 32, steps: int = 300, lr: float = 0.01, seed: int = 0
) -> tuple[nn.Module, Tensor, Tensor]:
    """Train a small ReLU MLP (2 → hidden → hidden → 2) on ``n_train`` points of a 2-D toy.

    Full-batch Adam on the cross-entropy, ``steps`` steps, on the CPU (a few thousand parameters: the CPU is
    faster than a GPU here) and in one thread (so the result does not depend on the core count). The global
    random state is left alone: the initialisation is seeded with ``seed`` inside a forked RNG, the points are
    the toy's training sample with that seed. With the defaults (circle, 100 points, 300 steps) training takes
    about a second and the learned boundary visibly differs from the true one between the training points.

    Returns:
        (model in eval mode on the CPU, x_train (n_train, 2), y_train (n_train,) int64).
    """
    from advlab import models
    from advlab.data import toy2d

    if n_train < 2 or hidden < 1 or steps < 1:
        raise AdvlabError(f"Need n_train >= 2, hidden >= 1, steps >= 1; got {n_train}, {hidden}, {steps}.")
    x, y = toy2d.sample(name, n_train, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # inputs are uniform in [0, 1]²: mean 0.5, standard deviation 1/√12 ≈ 0.29 per coordinate
        model = models.mlp(in_shape=(2,), classes=2, hidden=hidden, depth=2, mean=(0.5, 0.5), std=(0.29, 0.29))
    config.jitter_weights(model)  # ADVLAB_JITTER (a test switch; no-op by default)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead, and one thread gives the same bits anywhere
    try:
        with torch.enable_grad():
            for _ in range(steps):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval(), x, y
