"""Properties of adversarial examples (survey section ③), each as a small measurement on a batch.

================================ ===================================================================
function                         property
================================ ===================================================================
:func:`rarity`                   rare: random noise of the same norm as an adversarial perturbation
                                 almost never fools the model (Szegedy et al., 2013)
:func:`boundary_distances`       close to many class boundaries: distance to every class (N, C)
:func:`linearity`                locally linear: the loss along sign(∇) vs a random sign direction
                                 (Goodfellow et al., 2014)
:func:`transfer_matrix`          transferable across architectures (Papernot et al., 2016)
:func:`pca` / :func:`pca_energy` low-variance directions of the data (Tanay & Griffin, 2016)
:func:`large_eps_examples`       large-ε targeted examples of robust models look like the target class
                                 (Tsipras et al., 2018)
================================ ===================================================================

The toy models of Tsipras et al., Gilmer et al.'s spheres and boundary tilting are in :mod:`advlab.toy`.
Inputs are (N, C, H, W) images in [0, 1]; every model is used in eval mode with input gradients only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.attacks import pgd
from advlab.attacks.result import AttackResult
from advlab.attacks.tensors import (
    as_eps,
    check_inputs,
    eval_mode,
    float64_device,
    logits_of,
    lp_norm,
    on_model_device,
    parse_norm,
)
from advlab.config import AdvlabError

Attack = Callable[[nn.Module, Tensor, Tensor], AttackResult]


def _norm_key(p: float) -> str:
    return "Linf" if math.isinf(p) else f"L{p:g}"


def _view(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


# ---------------------------------------------------------------------------------------------------------- rarity


def random_surface(x: Tensor, radius: Tensor, norm: str | float = 2, generator: torch.Generator | None = None
                   ) -> Tensor:
    """δ (N, *) uniform on the surface of the p-ball of per-sample ``radius`` (N,) in R^d (box ignored).

    * L2: a Gaussian direction scaled to the sphere of radius r.
    * L∞: uniform on the surface of the cube [-r, r]^d: one coordinate (a face, all faces have the same area)
      is set to ±r, the others are uniform in [-r, r].
    """
    p = parse_norm(norm)
    n, d = len(x), x[0].numel()
    dev = generator.device if generator is not None else x.device
    r = radius.to(x.dtype).reshape(n, 1)
    if p == 2.0:
        g = torch.randn((n, d), generator=generator, device=dev, dtype=x.dtype).to(x.device)
        delta = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30) * r
    elif math.isinf(p):
        u = torch.rand((n, d), generator=generator, device=dev, dtype=x.dtype).to(x.device)
        delta = (2 * u - 1) * r
        face = torch.randint(0, d, (n, 1), generator=generator, device=dev).to(x.device)
        sign = torch.where(torch.rand((n, 1), generator=generator, device=dev) < 0.5, -1.0, 1.0).to(x)
        delta = delta.scatter(1, face, sign * r)
    else:
        raise AdvlabError(f"random_surface supports norm 2 and 'inf', got {norm!r}.")
    return delta.view_as(x)


class Rarity(NamedTuple):
    """Adversarial vs random perturbations of the same Lp norm.

    Attributes:
        norm: p (2.0 or inf).
        index: (M,) indices of the inputs where the model was right and the adversarial example fooled it.
        radius: (M,) ``||x_adv - x||_p`` of those perturbations (pixel units).
        adversarial_error: fraction of the correctly classified inputs the adversarial perturbation fools.
        noise_error: (M,) per input, the fraction of ``draws`` random perturbations on the sphere / box surface of
            the same radius (clipped to [0, 1]) that fool the model.
    """

    norm: float
    index: Tensor
    radius: Tensor
    adversarial_error: float
    noise_error: Tensor

    @property
    def noise_error_rate(self) -> float:
        """Mean error under random noise over the successful inputs and draws (nan if there are none)."""
        return self.noise_error.mean().item() if self.noise_error.numel() else math.nan


@on_model_device
def rarity(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_adv: Tensor,
    norms: Sequence[str | float] = (2, "inf"),
    draws: int = 20,
    generator: torch.Generator | None = None,
) -> dict[str, Rarity]:
    """How rare adversarial examples are: random noise at the adversarial perturbation's norm (Szegedy et al.).

    For each input that the model classifies correctly and whose ``x_adv`` fools it, ``draws`` random
    perturbations are drawn uniformly on the sphere (L2) or the cube surface (L∞) whose radius is the norm of
    that input's own adversarial perturbation, measured in the same norm, and clipped to [0, 1].

    Args:
        x: (N, *) clean inputs; y: (N,) labels; x_adv: (N, *) adversarial inputs (any attack).
        norms: the norms to compare in (one :class:`Rarity` each).

    Returns:
        ``{"L2": Rarity, "Linf": Rarity}`` (keys follow ``norms``).
    """
    x, y = check_inputs(x, y)
    x_adv, _ = check_inputs(x_adv)
    if x_adv.shape != x.shape:
        raise AdvlabError(f"x_adv {tuple(x_adv.shape)} must have the shape of x {tuple(x.shape)}.")
    if int(draws) != draws or draws < 1:
        raise AdvlabError(f"draws must be a positive integer, got {draws!r}.")
    out: dict[str, Rarity] = {}
    with eval_mode(model):
        correct = logits_of(model, x).argmax(1) == y
        fooled = logits_of(model, x_adv).argmax(1) != y
        hit = correct & fooled
        adv_err = (hit.sum() / correct.sum().clamp_min(1)).item()
        idx = hit.nonzero().squeeze(1)
        xs, ys = x[idx], y[idx]
        for norm in norms:
            p = parse_norm(norm)
            radius = lp_norm(x_adv[idx] - xs, p)
            errors = torch.zeros(len(idx), device=x.device)
            if len(idx):
                for _ in range(int(draws)):
                    xn = (xs + random_surface(xs, radius, p, generator)).clamp(0, 1)
                    errors += (logits_of(model, xn).argmax(1) != ys).float()
            out[_norm_key(p)] = Rarity(p, idx, radius, adv_err, errors / int(draws))
    return out


# ------------------------------------------------------------------------------------------------------ boundaries


@on_model_device
def boundary_distances(
    model: nn.Module,
    x: Tensor,
    eps_max: float = 10.0,
    search_steps: int = 10,
    steps: int = 40,
    classes: int | None = None,
    batch_size: int = 2000,
) -> Tensor:
    """(N, C) L2 distance from each input to the region where the model predicts each class.

    For every pair (input i, class c) with c not the model's prediction on x_i, targeted L2 PGD
    (:func:`advlab.attacks.pgd`, no random start) is run inside radius ε, and ε is bisected on ``[0, eps_max]``
    (one PGD call per bisection step for all pairs at once, ε per pair). The entry is the smallest L2 norm of a
    perturbation found that makes the model predict c: an upper bound on the true distance (PGD may miss closer
    points). The column of the predicted class is 0 (so for a correctly classified input its true-class column is
    0); ``inf`` means no perturbation of norm ``<= eps_max`` reached c.
    """
    x, _ = check_inputs(x)
    if not eps_max > 0 or not math.isfinite(eps_max):
        raise AdvlabError(f"eps_max must be a positive finite L2 radius, got {eps_max!r}.")
    if int(search_steps) != search_steps or search_steps < 0:
        raise AdvlabError(f"search_steps must be a non-negative integer, got {search_steps!r}.")
    with eval_mode(model):
        logits = logits_of(model, x)
    n, k = logits.shape
    classes = k if classes is None else int(classes)
    pred = logits.argmax(1)
    cls = torch.arange(classes, device=x.device)
    pairs = (cls[None, :] != pred[:, None]).nonzero()  # (P, 2): (input, class)
    dist = torch.zeros(n, classes, dtype=x.dtype, device=x.device)
    if len(pairs) == 0:
        return dist
    xi, target = pairs[:, 0], pairs[:, 1]
    best = torch.full((len(pairs),), math.inf, dtype=x.dtype, device=x.device)
    lo = torch.zeros_like(best)
    hi = torch.full_like(best, float(eps_max))

    def attack(eps: Tensor) -> tuple[Tensor, Tensor]:
        succ, norms = [], []
        for s in range(0, len(pairs), int(batch_size)):
            sl = slice(s, s + int(batch_size))
            res = pgd(model, x[xi[sl]], target[sl], eps[sl], norm=2, steps=steps, targeted=True, random_start=False)
            succ.append(res.success)
            norms.append(res.norms)
        return torch.cat(succ), torch.cat(norms)

    succ, norms = attack(hi)
    best = torch.where(succ, norms, best)
    for _ in range(int(search_steps)):
        mid = 0.5 * (lo + hi)
        succ, norms = attack(mid)
        best = torch.where(succ, torch.minimum(best, norms), best)
        hi = torch.where(succ, mid, hi)
        lo = torch.where(succ, lo, mid)
    dist[xi, target] = best
    return dist


# ------------------------------------------------------------------------------------------------------- linearity


class LinearityCurves(NamedTuple):
    """Loss and error along two directions, for each step size.

    Attributes:
        eps: (S,) step sizes (L∞ radius of the step, pixel units).
        loss_gradient / loss_random: (S,) mean cross-entropy at ``clip(x + ε·d)`` for d = sign(∇_x loss) and for
            a random sign vector (one per input).
        error_gradient / error_random: (S,) error rates at the same points.
        logits_gradient: (N, S, K) the logits along the gradient-sign direction (Goodfellow et al.'s Figure 4).
    """

    eps: Tensor
    loss_gradient: Tensor
    loss_random: Tensor
    error_gradient: Tensor
    error_random: Tensor
    logits_gradient: Tensor


@on_model_device
def linearity(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Sequence[float] | Tensor = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3),
    clip: bool = True,
    generator: torch.Generator | None = None,
) -> LinearityCurves:
    """The loss along the gradient-sign (FGSM) direction vs a random sign direction, over step sizes ε.

    If the model is locally linear, the loss grows about linearly in ε along sign(∇) (by ``ε·||∇||_1``) while a
    random sign direction, nearly orthogonal to ∇ in high dimension, barely changes it. ε may be negative.

    Args:
        x: (N, *) inputs in [0, 1]; y: (N,) labels.
        eps: (S,) step sizes; clip: clamp each point into [0, 1].
    """
    x, y = check_inputs(x, y)
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).flatten()
    if eps_t.numel() == 0 or not torch.isfinite(eps_t).all():
        raise AdvlabError("eps must be a non-empty sequence of finite step sizes.")
    with eval_mode(model):
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xg)
        dev = generator.device if generator is not None else x.device
        rnd = torch.where(torch.rand(x.shape, generator=generator, device=dev) < 0.5, -1.0, 1.0).to(x)
        curves: dict[str, list[Tensor]] = {"lg": [], "lr": [], "eg": [], "er": [], "zg": []}
        for e in eps_t:
            for key, d in (("g", grad.sign()), ("r", rnd)):
                xp = x + e * d
                xp = xp.clamp(0, 1) if clip else xp
                z = logits_of(model, xp)
                curves["l" + key].append(F.cross_entropy(z, y))
                curves["e" + key].append((z.argmax(1) != y).float().mean())
                if key == "g":
                    curves["zg"].append(z)
    return LinearityCurves(
        eps_t,
        torch.stack(curves["lg"]),
        torch.stack(curves["lr"]),
        torch.stack(curves["eg"]),
        torch.stack(curves["er"]),
        torch.stack(curves["zg"], dim=1),
    )


# -------------------------------------------------------------------------------------------------- transferability


class TransferMatrix(NamedTuple):
    """Transfer of adversarial examples among models; rows = source (crafted on), columns = target.

    Attributes:
        names: the M model names, in row/column order.
        rate: (M, M) fraction of the evaluated inputs whose adversarial example crafted on the source fools the
            target; the diagonal is each model's white-box success rate.
        conditional: (M, M) the same among the inputs where the attack fooled the source (diagonal 1; nan when
            the source attack never succeeded).
        white_box: (M,) the white-box success rate of each source (= ``rate.diagonal()``).
        n: number of evaluated inputs (those every model classifies correctly, when ``only_correct``).
    """

    names: list[str]
    rate: Tensor
    conditional: Tensor
    white_box: Tensor
    n: int

    def markdown(self, conditional: bool = True) -> str:
        """The matrix as a Markdown table (percent)."""
        m = self.conditional if conditional else self.rate
        lines = ["| source \\ target | " + " | ".join(self.names) + " |", "|---" * (len(self.names) + 1) + "|"]
        for i, name in enumerate(self.names):
            lines.append(f"| {name} | " + " | ".join(f"{100 * v:.0f}%" for v in m[i].tolist()) + " |")
        return "\n".join(lines)


def transfer_matrix(
    models: Mapping[str, nn.Module],
    x: Tensor,
    y: Tensor,
    eps: float = 0.2,
    norm: str | float = "inf",
    attack: Attack | None = None,
    only_correct: bool = True,
) -> TransferMatrix:
    """Attack each model white-box and test every adversarial example on every model.

    Args:
        models: name -> model (e.g. ``zoo.load("mnist-logistic")``, ``"mnist-mlp"``, ``"mnist-cnn"``).
        x: (N, *) inputs; y: (N,) labels.
        eps, norm: radius and norm of the default attack, untargeted :func:`advlab.attacks.pgd`.
        attack: ``attack(model, x, y) -> AttackResult`` to use instead of PGD.
        only_correct: evaluate only the inputs that every model classifies correctly, so that "fooled" always
            means "changed a right answer into a wrong one".
    """
    if len(models) < 1:
        raise AdvlabError("transfer_matrix needs at least one model: a mapping name -> model.")
    x, y = check_inputs(x, y)
    names = list(models)
    nets = [models[k] for k in names]
    keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
    if only_correct:
        for net in nets:
            with eval_mode(net):
                keep &= logits_of(net, x).argmax(1) == y
        if not keep.any():
            raise AdvlabError("No input is classified correctly by every model; pass only_correct=False.")
    xs, ys = x[keep], y[keep]
    if attack is None:
        as_eps(eps, xs)

        def attack(net: nn.Module, xb: Tensor, yb: Tensor) -> AttackResult:
            return pgd(net, xb, yb, eps, norm=norm)

    m = len(nets)
    fooled = torch.zeros(m, m, len(xs), dtype=torch.bool, device=x.device)
    for i, source in enumerate(nets):
        x_adv = attack(source, xs, ys).x_adv
        for j, target in enumerate(nets):
            with eval_mode(target):
                fooled[i, j] = logits_of(target, x_adv).argmax(1) != ys
    rate = fooled.float().mean(2)
    own = fooled[torch.arange(m), torch.arange(m)]  # (M, n): the source's own success
    counts = own.sum(1, keepdim=True).float()
    cond = (fooled & own[:, None, :]).sum(2).float() / counts
    cond = torch.where(counts > 0, cond, torch.full_like(cond, math.nan))
    return TransferMatrix(names, rate.cpu(), cond.cpu(), rate.diagonal().clone().cpu(), len(xs))


# ------------------------------------------------------------------------------------------ low-variance directions


class PCA(NamedTuple):
    """Principal components of a data set in pixel space.

    Attributes:
        mean: (D,) data mean; components: (D, D) orthonormal directions as rows, by decreasing variance;
        variance: (D,) the data's variance along each component (>= 0).
    """

    mean: Tensor
    components: Tensor
    variance: Tensor


def pca(x: Tensor) -> PCA:
    """PCA of (N, *) data flattened to (N, D), by an eigen-decomposition of the covariance (in float64, on the CPU
    where x's device has none: mps); the result is in x's dtype on x's device."""
    if not isinstance(x, Tensor) or x.ndim < 2 or len(x) < 2:
        raise AdvlabError("pca needs a tensor of at least 2 examples shaped (N, ...).")
    flat = x.detach().flatten(1).to(float64_device(x.device)).double()
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / (len(flat) - 1)
    var, vec = torch.linalg.eigh(cov)  # ascending
    order = var.argsort(descending=True)

    def back(t: Tensor) -> Tensor:  # cast first: a float64 tensor cannot be moved to mps
        return t.to(x.dtype).to(x.device)

    return PCA(back(mean), back(vec[:, order].T.contiguous()), back(var[order].clamp_min(0)))


def energy_spectrum(delta: Tensor, basis: PCA) -> Tensor:
    """(N, D) fraction of each perturbation's squared L2 norm along each principal component (rows sum to 1)."""
    flat = delta.detach().flatten(1).to(basis.components)
    if flat.shape[1] != basis.components.shape[1]:
        raise AdvlabError(f"delta has {flat.shape[1]} dimensions but the PCA {basis.components.shape[1]}.")
    coeff = flat @ basis.components.T
    energy = coeff.square()
    return energy / energy.sum(1, keepdim=True).clamp_min(1e-30)


def data_spectrum(basis: PCA) -> Tensor:
    """(D,) fraction of the data's total variance along each principal component (sums to 1)."""
    return basis.variance / basis.variance.sum().clamp_min(1e-30)


class PCAEnergy(NamedTuple):
    """Fractions of energy in the top-k and bottom-k principal components.

    ``adversarial_*`` average the per-perturbation fractions; ``data_*`` are fractions of the data variance;
    ``isotropic`` = k / D is what a random direction puts in any k components.
    """

    k: int
    adversarial_top: float
    adversarial_bottom: float
    data_top: float
    data_bottom: float
    isotropic: float


def pca_energy(delta: Tensor, basis: PCA, k: int = 100) -> PCAEnergy:
    """Where adversarial perturbations ``delta`` (N, *) put their energy: top-k vs bottom-k PCA components."""
    d = basis.components.shape[0]
    if int(k) != k or not 1 <= k <= d:
        raise AdvlabError(f"k must be an integer in [1, {d}], got {k!r}.")
    adv = energy_spectrum(delta, basis).mean(0)
    data = data_spectrum(basis)
    return PCAEnergy(
        int(k), adv[:k].sum().item(), adv[-k:].sum().item(), data[:k].sum().item(), data[-k:].sum().item(), k / d
    )


# ------------------------------------------------------------------------------------------------ large-ε examples


def large_eps_examples(
    models: Mapping[str, nn.Module] | nn.Module,
    x: Tensor,
    target: Tensor,
    eps: float = 4.0,
    steps: int = 100,
    step_size: float | None = None,
) -> dict[str, AttackResult]:
    """Targeted L2 PGD with a large ε on each model (Tsipras et al.'s figure of robust models' examples).

    On a robust model the returned ``x_adv`` images tend to look like the target class; on a standard model they
    look like noise on the original. Returns name -> :class:`AttackResult` (``x_adv`` are the images).
    """
    nets = {"model": models} if isinstance(models, nn.Module) else dict(models)
    return {
        name: pgd(net, x, target, eps, norm=2, steps=steps, step_size=step_size, targeted=True, random_start=False)
        for name, net in nets.items()
    }
