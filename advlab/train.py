"""Training: ``fit`` with a progress bar, a learning-rate schedule and a per-batch perturbation hook.

The hook is where adversarial training plugs in (Madry et al.'s empirical adversarial risk, survey
eq. 8): ``perturb(model, xb, yb)`` returns the batch to train on. It is called with the model in eval
mode (so attacks see the deployed network), and training resumes in train mode afterwards. Free adversarial
training (Shafahi et al.) replays each batch several times (``replays``) with a hook that reuses the input
gradient of each training step (a ``reuse_gradient`` method).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab import config
from advlab.config import AdvlabError

Perturb = Callable[[nn.Module, Tensor, Tensor], Tensor]
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
EpochCallback = Callable[[int, nn.Module, "History"], bool | None]


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run (losses are means over batches)."""

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: int | None = None
    extra: dict[str, list[float]] = field(default_factory=dict)


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``"sgd"`` (Nesterov momentum 0.9) or ``"adam"``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise AdvlabError(f"Unknown optimizer {name!r}; use 'sgd' or 'adam'.")


def lr_at(schedule: str, lr: float, progress: float) -> float:
    """Learning rate at a fraction ``progress`` ∈ [0, 1] of training.

    ``"onecycle"``: linear warm-up to lr over the first 30%, then linear decay to 0 (Wong et al. 2020);
    ``"cosine"``: cosine decay from lr to 0; ``"constant"``: lr.
    """
    if schedule == "onecycle":
        return lr * (progress / 0.3 if progress < 0.3 else max(0.0, (1 - progress) / 0.7))
    if schedule == "cosine":
        return lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * progress)).item())
    if schedule == "constant":
        return lr
    raise AdvlabError(f"Unknown schedule {schedule!r}; use 'onecycle', 'cosine' or 'constant'.")


class WeightAverage:
    """An exponential moving average of a model's parameters and float buffers (Polyak averaging, as used for
    adversarial training by Gowal et al. 2020): ``avg <- d·avg + (1 - d)·w`` after every optimiser step, with the
    decay ramped as ``d_t = min(decay, (1 + t) / (10 + t))`` so that the first steps do not anchor the average to the
    random initialisation. :meth:`copy_to` writes the average into the model at the end of training.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise AdvlabError(f"ema must be a decay in (0, 1), e.g. 0.995, got {decay!r}.")
        self.decay = float(decay)
        self.updates = 0
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for k, v in model.state_dict().items():
            if k in self.avg:
                self.avg[k].lerp_(v.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for k, v in self.avg.items():
            state[k].copy_(v)


def augment_shift(xb: Tensor, pixels: int, generator: torch.Generator) -> Tensor:
    """Random translations by up to ``pixels`` in each direction (zero padding), one per image. (N,C,H,W)."""
    n, _, h, w = xb.shape
    padded = F.pad(xb, (pixels,) * 4)
    dx = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pixels + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(xb.device)  # (N, H)
    cols = (dx[:, None] + torch.arange(w)[None]).to(xb.device)  # (N, W)
    idx = torch.arange(n, device=xb.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@config.isolated
def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 0.05,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    schedule: str = "onecycle",
    shift: int = 0,
    replays: int = 1,
    perturb: Perturb | None = None,
    loss_fn: LossFn | None = None,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    callback: EpochCallback | None = None,
    ema: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` in place on (x, y) with minibatch SGD/Adam and return its :class:`History`.

    Args:
        x, y: training inputs (N, ...) in [0, 1] and labels (N,).
        shift: random-translation augmentation in pixels (0: none).
        replays: optimiser steps on each batch, one after the other (free adversarial training); ``epochs`` still
            counts steps per example, so the data is passed ``ceil(epochs / replays)`` times and the history has
            one entry per pass.
        perturb: ``perturb(model, xb, yb) -> xb'`` applied to each batch before each step (e.g. PGD). If it has a
            method ``reuse_gradient(grad)``, the batch it returns is made a leaf that requires grad and, after each
            backward pass, the method receives the loss's gradient with respect to it (free adversarial training).
        loss_fn: ``loss_fn(model, xb, yb) -> loss`` replacing cross-entropy (e.g. TRADES).
        callback: ``callback(epoch, model, history)`` after each epoch; returning True stops training.
        ema: if > 0, the decay of an exponential moving average of the weights (:class:`WeightAverage`), which
            replaces the weights at the end (the hooks and ``callback`` see the raw weights during training).
        seed: seeds the shuffling, augmentation and initial noise; runs are deterministic for a seed on
            a given machine.
    """
    if len(x) != len(y):
        raise AdvlabError(f"x has {len(x)} examples but y has {len(y)}; they must match.")
    dev = torch.device(device) if device is not None else config.device()
    config.seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    config.jitter_weights(model.to(dev))  # ADVLAB_JITTER (a test switch; no-op by default)
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    average = WeightAverage(model, ema) if ema else None
    if int(replays) != replays or replays < 1:
        raise AdvlabError(f"replays must be an integer >= 1, got {replays!r}.")
    reuse = getattr(perturb, "reuse_gradient", None)
    passes = math.ceil(epochs / replays)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    total = passes * steps_per_epoch * replays
    hist = History()
    start = time.perf_counter()
    bar = _progress(total, progress, desc="fit")
    step = 0
    for epoch in range(passes):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if shift:
                xb = augment_shift(xb, shift, gen)
            for _ in range(replays):
                xs = xb
                if perturb is not None:
                    model.eval()
                    xs = perturb(model, xb, yb).detach().requires_grad_(reuse is not None)
                    model.train()
                for group in opt.param_groups:
                    group["lr"] = lr_at(schedule, lr, step / max(1, total))
                if loss_fn is not None:
                    loss = loss_fn(model, xs, yb)
                    logits = None
                else:
                    logits = model(xs)
                    loss = F.cross_entropy(logits, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if reuse is not None:
                    reuse(xs.grad)
                if average is not None:
                    average.update(model)
                step += 1
                loss_sum += loss.detach()
                if logits is not None:
                    correct += (logits.argmax(1) == yb).sum()
                bar.update(1)
        hist.loss.append(float(loss_sum) / (steps_per_epoch * replays))
        hist.train_accuracy.append(float(correct) / (len(x) * replays) if loss_fn is None else float("nan"))
        hist.lr.append(opt.param_groups[0]["lr"])
        if x_val is not None and y_val is not None:
            hist.val_accuracy.append(accuracy(model, x_val, y_val))
        bar.set_postfix(loss=f"{hist.loss[-1]:.3f}", refresh=False)
        if callback is not None and callback(epoch, model, hist):
            hist.stopped_early = epoch
            break
    bar.close()
    if average is not None:
        average.copy_to(model)
    model.eval()
    hist.seconds = time.perf_counter() - start
    return hist


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False)


@torch.no_grad()
def labels_of(model: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted labels (N,) of ``model`` on x, in eval mode and batches (train mode is restored)."""
    was_training = model.training
    model.eval()
    dev = next((p.device for p in model.parameters()), x.device)
    try:
        return torch.cat([model(x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Fraction of x that ``model`` classifies as y (eval mode, batched)."""
    if len(x) != len(y):
        raise AdvlabError(f"x has {len(x)} examples but y has {len(y)}; they must match.")
    if len(x) == 0:
        raise AdvlabError("accuracy() of an empty set is undefined; pass at least one example.")
    return (labels_of(model, x, batch_size) == y.cpu()).float().mean().item()


def accuracy_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval (exact binomial) for an accuracy of ``k`` correct out of ``n``.

    Returns ``(low, high)`` as fractions; it contains the true accuracy with probability at least ``level``. At
    n = 1,000 and 70 % it is about ±2.8 points: smaller differences between two models on those images are noise.
    """
    from scipy import stats

    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise AdvlabError(f"Need 0 <= k <= n and n >= 1, got k = {k}, n = {n}.")
    if not 0 < level < 1:
        raise AdvlabError(f"level must be in (0, 1), got {level}.")
    a = (1 - level) / 2
    low = float(stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    high = float(stats.beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return low, high
