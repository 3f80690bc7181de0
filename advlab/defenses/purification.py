"""Purification by projection onto a generative model's manifold (Defense-GAN, Samangouei et al., 2018).

:class:`ManifoldProjection` classifies, instead of the input x, the generator's image closest to it:

    model(G(z*)),   z* = argmin_z ||G(z) - x||_2^2,

found as Defense-GAN finds it, by gradient descent on z from ``restarts`` random codes (``steps`` Adam steps each),
keeping the code with the smallest reconstruction error. Any generator works; the course uses the decoder of the
zoo's ``mnist-vae`` (Defense-GAN uses a GAN's generator). The defense is deterministic: its random codes come from
a generator seeded anew at every call, so the same input always gets the same answer.

The inner optimisation is not differentiated (unrolling hundreds of descent steps per attack step is what made
Defense-GAN look robust), so the input gradient of the defended model is exactly zero, as with
:class:`advlab.defenses.masking.InputQuantization`: PGD cannot move, while BPDA (:class:`~advlab.defenses.masking.BPDA`,
the projection replaced by the identity on the backward pass; Athalye, Carlini and Wagner, 2018) and gradient-free
attacks see through it. :func:`advlab.defenses.masking.masking_report` runs all of them on any such defense.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advlab.config import AdvlabError


class ManifoldProjection(nn.Module):
    """``model(G(z*))`` with ``z*`` the best of ``restarts`` gradient-descent fits of ``G(z) ≈ x``.

    Args:
        model: the classifier (returns logits for images in [0, 1]).
        generator: maps codes (M, latent) to images (M, C, H, W) in [0, 1], e.g. ``vae.decode`` of an
            unconditional :class:`advlab.vae.VAE`; it is evaluated, never trained, here.
        latent: dimension of the codes.
        steps: Adam steps per restart (Defense-GAN's L).
        restarts: random starting codes per input (Defense-GAN's R).
        lr: Adam's learning rate on the codes.
        seed: seed of the starting codes, the same at every call (a deterministic defense).
    """

    def __init__(self, model: nn.Module, generator: Callable[[Tensor], Tensor], latent: int, steps: int = 100,
                 restarts: int = 4, lr: float = 0.05, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("latent", latent), ("steps", steps), ("restarts", restarts)):
            if int(value) != value or value < 1:
                raise AdvlabError(f"{name} must be an integer >= 1, got {value!r}.")
        if not lr > 0:
            raise AdvlabError(f"lr must be > 0, got {lr!r}.")
        self.model = model
        self.generator = generator
        self.latent, self.steps, self.restarts, self.lr, self.seed = int(latent), int(steps), int(restarts), lr, seed

    def codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The best code z* (N, latent) for each input x (N, C, H, W), and its squared L2 error ||G(z*) - x||² (N,)."""
        n, r = len(x), self.restarts
        target = x.detach().repeat(r, *([1] * (x.ndim - 1)))  # (R·N, ...): restart k of input i at row k·N + i
        gen = torch.Generator().manual_seed(self.seed)
        z = torch.randn(r * n, self.latent, generator=gen).to(device=x.device, dtype=x.dtype).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                err = (self.generator(z) - target).flatten(1).pow(2).sum(1)
                # the codes are independent: one gradient for all; the generator's own .grad stays untouched
                (z.grad,) = torch.autograd.grad(err.sum(), z)
                opt.step()
        with torch.no_grad():
            err = (self.generator(z) - target).flatten(1).pow(2).sum(1).view(r, n)
            best = err.argmin(0)
            z_best = z.detach().view(r, n, -1)[best, torch.arange(n, device=x.device)]
        return z_best, err.gather(0, best[None]).squeeze(0)

    def preprocess(self, x: Tensor) -> Tensor:
        """The projection G(z*) (N, C, H, W). Its derivative w.r.t. x is zero: the descent is not differentiated."""
        with torch.no_grad():
            projected = self.generator(self.codes(x)[0]).view_as(x)
        return projected + 0.0 * x  # keeps x in the graph, with a zero gradient (what a plain attacker sees)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.preprocess(x))

    def extra_repr(self) -> str:
        return f"latent={self.latent}, steps={self.steps}, restarts={self.restarts}, lr={self.lr}"
