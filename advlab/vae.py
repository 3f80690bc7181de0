"""A small (class-conditional) variational autoencoder and the attacks of Kos, Fischer & Song (2018) on it.

:class:`VAE` is an MLP VAE (Kingma & Welling 2014) for small images such as 28×28 MNIST or FONTS: a Gaussian
encoder ``q(z | x[, y]) = N(μ, diag σ²)``, a standard normal prior and a Bernoulli decoder (pixel
probabilities, trained with binary cross-entropy). With ``classes > 0`` both encoder and decoder also get
the one-hot label, so ``decode(z, y)`` stays on the manifold of class y: this is the learned class manifold
of :func:`advlab.manifold.latent_attack` (Stutz et al. 2019 use one VAE-GAN per class instead).

Kos et al. attack the *autoencoder*: an input ``x̃ = x + δ`` with a small δ whose reconstruction looks like a
different, target image x_t (think of a VAE used as a compression channel). Both attacks here are projected
signed-gradient descent on δ in ``B_ε(x) ∩ [0, 1]^d``, batched, keeping each sample's best iterate:

* :func:`latent_attack` (their "latent attack"): minimise ``‖μ(x̃) − μ(x_t)‖²``, the distance of the
  latent codes;
* :func:`vae_loss_attack` (their "VAE-loss attack"): minimise the VAE loss of x̃ with x_t as the
  reconstruction target, ``BCE(decode(μ(x̃)), x_t) + β · KL(q(z | x̃) ‖ N(0, I))``.

Kos et al. used an unconditional VAE (train with ``train_vae(x, None)``); with a conditional one the attacks
take the label the VAE is conditioned on for x̃ (``y``) and for the target (``y_target``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import config, zoo
from advlab.attacks.core import random_start
from advlab.attacks.engine import Rows, ascend, ball_box, default_step_size, select_rows
from advlab.attacks.tensors import as_eps, check_inputs, eval_mode, lp_norm, on_model_device, parse_norm
from advlab.config import AdvlabError


class VAE(nn.Module):
    """MLP VAE on (N, C, H, W) images in [0, 1]; conditional on the label when ``classes > 0``.

    Args:
        in_shape: image shape (C, H, W).
        latent: latent dimension.
        hidden: units of the two hidden layers of the encoder and of the decoder MLP.
        classes: number of classes to condition on (0: unconditional).
    """

    def __init__(self, in_shape: Sequence[int] = (1, 28, 28), latent: int = 8, hidden: int = 256, classes: int = 10):
        super().__init__()
        if latent < 1 or hidden < 1 or classes < 0:
            raise AdvlabError(f"VAE needs latent >= 1, hidden >= 1, classes >= 0; got {latent}, {hidden}, {classes}.")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.latent, self.classes = int(latent), int(classes)
        d = math.prod(self.in_shape)
        self.encoder = nn.Sequential(
            nn.Linear(d + self.classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent + self.classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, d),
        )

    def _cond(self, h: Tensor, y: Tensor | None) -> Tensor:
        if self.classes == 0:
            return h
        if y is None:
            raise AdvlabError("This VAE is class-conditional: pass the labels y (N,) to encode/decode.")
        y = torch.as_tensor(y, device=h.device).long()
        if y.shape != (len(h),) or (len(y) and (y.min() < 0 or y.max() >= self.classes)):
            raise AdvlabError(f"y must be ({len(h)},) labels in [0, {self.classes}), got shape {tuple(y.shape)}.")
        return torch.cat([h, F.one_hot(y, self.classes).to(h.dtype)], 1)

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(μ, log σ²), each (N, latent), of q(z | x[, y]) for x (N, C, H, W)."""
        if tuple(x.shape[1:]) != self.in_shape:
            raise AdvlabError(f"This VAE takes images shaped (N, {self.in_shape}), got {tuple(x.shape)}.")
        mu, logvar = self.encoder(self._cond(x.flatten(1), y)).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)

    def decode_logits(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Bernoulli logits (N, C, H, W) of p(x | z[, y])."""
        return self.decoder(self._cond(z, y)).view(len(z), *self.in_shape)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images (N, C, H, W) in [0, 1]: the decoder's pixel means for codes z (N, latent)."""
        return torch.sigmoid(self.decode_logits(z, y))

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Deterministic reconstruction ``decode(μ(x), y)`` (N, C, H, W)."""
        return self.decode(self.encode(x, y)[0], y)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction logits, μ, log σ²) with one reparameterised sample z = μ + σ·ε."""
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode_logits(z, y), mu, logvar


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample (N,), in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


@on_model_device(model="vae")
def elbo_loss(vae: VAE, x: Tensor, y: Tensor | None = None, beta: float = 1.0) -> Tensor:
    """Negative ELBO per sample (N,): BCE reconstruction (summed over pixels) + β · KL, in nats."""
    logits, mu, logvar = vae(x, y)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return rec + beta * kl_divergence(mu, logvar)


def fit_vae(
    vae: VAE,
    x: Tensor,
    y: Tensor | None = None,
    epochs: int = 20,
    *,
    batch_size: int = 128,
    lr: float = 1e-3,
    beta: float = 1.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train an existing :class:`VAE` in place on images x (N, C, H, W) in [0, 1] (the zoo's trainer for VAEs).

    Adam on the negative ELBO (:func:`elbo_loss`), minibatches shuffled by a generator seeded with ``seed``, with a
    tqdm progress bar. The labels y (N,) are used only by a class-conditional VAE (``vae.classes > 0``). The
    reparameterisation noise comes from the global RNG, so seed it (``config.seed_everything``) before building the
    VAE for a reproducible run. Leaves the VAE in eval mode and returns ``{"train_neg_elbo": last epoch's mean}``.
    """
    x, y = check_inputs(x, y)
    if epochs < 1 or batch_size < 1:
        raise AdvlabError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    if vae.classes == 0:
        y = None
    elif y is None:
        raise AdvlabError("This VAE is class-conditional: pass the labels y (N,).")
    elif y.min() < 0 or y.max() >= vae.classes:
        raise AdvlabError(f"Labels must lie in [0, {vae.classes}) for a VAE with {vae.classes} classes.")
    dev = torch.device(device) if device is not None else config.device()
    gen = torch.Generator().manual_seed(seed)
    config.jitter_weights(vae.to(dev))  # ADVLAB_JITTER (a test switch; no-op by default)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    steps = (len(x) + batch_size - 1) // batch_size
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs * steps, disable=not progress, desc="train_vae", leave=False)
    vae.train()
    total = torch.zeros((), device=dev)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        total = torch.zeros((), device=dev)
        for i in range(steps):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb = x[idx.to(x.device)].to(dev)
            yb = y[idx.to(y.device)].to(dev) if y is not None else None
            loss = elbo_loss(vae, xb, yb, beta).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            bar.update(1)
        bar.set_postfix(elbo=f"{(total / steps).item():.1f}", refresh=False)
    bar.close()
    vae.eval()
    return {"train_neg_elbo": round((total / steps).item(), 2)}


@config.isolated
def train_vae(
    x: Tensor,
    y: Tensor | None = None,
    epochs: int = 20,
    *,
    latent: int = 8,
    hidden: int = 256,
    batch_size: int = 128,
    lr: float = 1e-3,
    beta: float = 1.0,
    classes: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> VAE:
    """Train a :class:`VAE` on images x (N, C, H, W) in [0, 1]; conditional on y (N,) when y is given.

    Adam on the negative ELBO (:func:`elbo_loss`), with a tqdm progress bar (:func:`fit_vae`). ``classes``
    (conditional only) defaults to ``max(y) + 1``. A VAE with the defaults trains
    on 4,000 MNIST images for 20 epochs in well under a minute on a CPU. Returns the VAE in eval mode.
    """
    x, y = check_inputs(x, y)
    if epochs < 1 or batch_size < 1:
        raise AdvlabError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    dev = torch.device(device) if device is not None else config.device()
    if y is None:
        classes = 0
    else:
        classes = int(y.max().item()) + 1 if classes is None else int(classes)
        if y.min() < 0 or y.max() >= classes:
            raise AdvlabError(f"Labels must lie in [0, {classes}) for a VAE with {classes} classes.")
    config.seed_everything(seed)
    vae = VAE(x.shape[1:], latent=latent, hidden=hidden, classes=classes).to(dev)
    fit_vae(vae, x, y, epochs, batch_size=batch_size, lr=lr, beta=beta, seed=seed, device=dev, progress=progress)
    return vae


@on_model_device(model="vae")
@torch.no_grad()
def elbo_at_mean(vae: VAE, x: Tensor, y: Tensor | None = None, batch_size: int = 1000) -> float:
    """Mean ELBO (nats, higher is better) of images x (N, C, H, W) with z = μ instead of a sample: deterministic.

    ``−[BCE(decode(μ(x)), x) + KL(q(z | x) ‖ N(0, I))]`` averaged over x; y is used only by a conditional VAE.
    The zoo records it as the test metric of a VAE.
    """
    x, y = check_inputs(x, y)
    y = y if vae.classes > 0 else None
    total, was_training = 0.0, vae.training
    vae.eval()  # no dropout or batch norm in a VAE: the mode changes nothing, so no warning either
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            yb = y[i : i + batch_size] if y is not None else None
            mu, logvar = vae.encode(xb, yb)
            rec = F.binary_cross_entropy_with_logits(vae.decode_logits(mu, yb), xb, reduction="none").flatten(1).sum(1)
            total += (rec + kl_divergence(mu, logvar)).sum().item()
    finally:
        vae.train(was_training)
    return round(-total / len(x), 2)


# ------------------------------------------------------------------------------------ Kos et al. attacks


class VaeAttackResult(NamedTuple):
    """A Kos et al. attack on N inputs.

    Attributes:
        x_adv: (N, C, H, W) adversarial inputs x̃ in B_ε(x) ∩ [0, 1].
        recon: (N, C, H, W) the VAE's reconstruction ``decode(μ(x̃))`` of x̃.
        objective: (N,) the attack's final objective (lower is better for the attacker).
        norms: (N,) ``‖x̃ − x‖_p`` in pixel units.
    """

    x_adv: Tensor
    recon: Tensor
    objective: Tensor
    norms: Tensor


def _kos(
    vae: VAE,
    x: Tensor,
    x_target: Tensor,
    y: Tensor | None,
    y_target: Tensor | None,
    eps: float | Tensor,
    norm: str | float,
    steps: int,
    step_size: float | Tensor | None,
    rand: bool,
    generator: torch.Generator | None,
    objective: _LatentObjective | _VaeLossObjective,
) -> VaeAttackResult:
    """Projected signed-gradient *descent* of ``objective(x̃)`` (N,) over B_ε(x) ∩ [0, 1], best iterate kept."""
    p = parse_norm(norm)
    x, y = check_inputs(x, y)
    x_target, y_target = check_inputs(x_target, y_target, name_y="y_target")
    if x_target.shape != x.shape:
        raise AdvlabError(f"x_target must have x's shape {tuple(x.shape)}, got {tuple(x_target.shape)}.")
    if int(steps) != steps or steps < 0:
        raise AdvlabError(f"steps must be a non-negative integer, got {steps!r}.")
    eps_t = as_eps(eps, x)
    alpha = default_step_size(eps_t, int(steps)) if step_size is None else as_eps(step_size, x)
    with eval_mode(vae):
        with torch.no_grad():
            target = objective.prepare(vae, x_target, y_target)
        z0 = x + random_start(x, eps_t, p, generator) if rand else x

        def value(z: Tensor, rows: Rows) -> tuple[Tensor, None]:
            # the engine maximises: descend the objective
            return -objective(vae, z, select_rows(y, rows), select_rows(target, rows)), None

        run = ascend(value, z0, ball_box(x, eps_t, p), int(steps), alpha, p)
        best_x, best = run.z, -run.value
        with torch.no_grad():
            recon = vae.reconstruct(best_x, y)
    return VaeAttackResult(best_x, recon, best, lp_norm(best_x - x, p))


class _LatentObjective:
    """‖μ(x̃) − μ(x_t)‖² per sample."""

    @staticmethod
    def prepare(vae: VAE, x_target: Tensor, y_target: Tensor | None) -> Tensor:
        return vae.encode(x_target, y_target)[0]

    def __call__(self, vae: VAE, x_adv: Tensor, y: Tensor | None, mu_target: Tensor) -> Tensor:
        return (vae.encode(x_adv, y)[0] - mu_target).pow(2).sum(1)


class _VaeLossObjective:
    """BCE(decode(μ(x̃)), x_t) + β · KL(q(z | x̃) ‖ N(0, I)) per sample."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    @staticmethod
    def prepare(vae: VAE, x_target: Tensor, y_target: Tensor | None) -> Tensor:
        return x_target

    def __call__(self, vae: VAE, x_adv: Tensor, y: Tensor | None, x_target: Tensor) -> Tensor:
        mu, logvar = vae.encode(x_adv, y)
        logits = vae.decode_logits(mu, y)
        rec = F.binary_cross_entropy_with_logits(logits, x_target, reduction="none").flatten(1).sum(1)
        return rec + self.beta * kl_divergence(mu, logvar)


@on_model_device(model="vae")
def latent_attack(
    vae: VAE,
    x: Tensor,
    x_target: Tensor,
    eps: float | Tensor = 0.1,
    norm: str | float = "inf",
    steps: int = 100,
    step_size: float | Tensor | None = None,
    y: Tensor | None = None,
    y_target: Tensor | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> VaeAttackResult:
    """Kos et al.'s latent attack: x̃ ∈ B_ε(x) ∩ [0, 1] whose latent mean is closest to the target's.

    Minimises ``‖μ(x̃) − μ(x_t)‖²`` by projected signed-gradient steps (L∞; normalised gradient for L2),
    so that the VAE reconstructs x̃ like x_t.

    Args:
        vae: a trained :class:`VAE` (used in eval mode, parameters frozen).
        x: (N, C, H, W) source images in [0, 1]; x_target: (N, C, H, W) target images.
        eps: radius of the perturbation in pixel units (scalar or (N,)).
        norm: ``"inf"``, 2 or 1.
        steps: gradient steps; step_size: default ``2.5 · ε / steps``.
        y, y_target: labels for a class-conditional VAE (the label x̃ is encoded/decoded with, and the
            target's); ignored by an unconditional one.
        random_start: start uniformly in the ball instead of at x.

    Returns:
        :class:`VaeAttackResult` (x_adv, recon = decode(μ(x̃)), objective, norms).
    """
    return _kos(vae, x, x_target, y, y_target, eps, norm, steps, step_size, random_start, generator,
                _LatentObjective())


@on_model_device(model="vae")
def vae_loss_attack(
    vae: VAE,
    x: Tensor,
    x_target: Tensor,
    eps: float | Tensor = 0.1,
    norm: str | float = "inf",
    steps: int = 100,
    step_size: float | Tensor | None = None,
    y: Tensor | None = None,
    y_target: Tensor | None = None,
    beta: float = 1.0,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> VaeAttackResult:
    """Kos et al.'s VAE-loss attack: x̃ ∈ B_ε(x) ∩ [0, 1] whose VAE loss *towards x_t* is smallest.

    Minimises ``BCE(decode(μ(x̃)), x_t) + β · KL(q(z | x̃) ‖ N(0, I))`` (the negative ELBO of x̃ with the
    reconstruction target replaced by x_t, decoding the mean). Arguments as in :func:`latent_attack`.
    """
    return _kos(vae, x, x_target, y, y_target, eps, norm, steps, step_size, random_start, generator,
                _VaeLossObjective(beta))


__all__ = [
    "VAE",
    "VaeAttackResult",
    "elbo_at_mean",
    "elbo_loss",
    "fit_vae",
    "kl_divergence",
    "latent_attack",
    "train_vae",
    "vae_loss_attack",
]


# ---------------------------------------------------------------------------------------------- the zoo's VAE
# Registration from above (see advlab.zoo): the VAE of notebooks/03_properties.ipynb (Kos et al.'s attacks, survey ③).
# "kind": "vae" records the test ELBO (elbo_at_mean, nats, higher is better) instead of a test accuracy. The names are
# hashed into the checkpoint's key: they keep the spelling it was built with.
zoo.register_function("advlab.vae:VAE", VAE)
zoo.register_function("advlab.vae:fit_vae", fit_vae)
zoo.register_function("advlab.vae:elbo_at_mean", elbo_at_mean)
zoo.register_recipe("mnist-vae", {
    "description": "unconditional MLP VAE (8 latent dimensions, Bernoulli decoder) for Kos et al.'s attacks",
    "kind": "vae",
    "arch": ["advlab.vae:VAE", {"in_shape": [1, 28, 28], "latent": 8, "hidden": 256, "classes": 0}],
    "data": "mnist",
    "trainer": "advlab.vae:fit_vae",
    "fit": {
        "fast": {"epochs": 20, "batch_size": 128, "lr": 1e-3},
        "full": {"epochs": 20, "batch_size": 128, "lr": 1e-3},
    },
    "eval": {"test_elbo": {"fn": "advlab.vae:elbo_at_mean", "kwargs": {}}},
})
