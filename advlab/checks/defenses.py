"""Checks for the defense tasks of section ④ (solutions/04b_defenses).

One epoch of PGD adversarial training (checked exactly on a linear model, then for real on MNIST), catastrophic
overfitting read from a training log, the BPDA straight-through estimator, the power iteration for a spectral norm,
the Lipschitz certificate and randomized smoothing's CERTIFY bound.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.checks._core import (
    Mismatch,
    _close,
    _col,
    _gen,
    _images,
    _in_box,
    _in_linf_ball,
    _input_grad,
    _linf_corner,
    _shape,
    _tensor,
    _unchanged,
    register,
)
from advlab.checks._training import _check_update, _params, _Recorder, _same, _weight_step_inputs


# --------------------------------------------------------------------------------------- adversarial training
def _two_class_model(g: torch.Generator) -> nn.Sequential:
    lin = nn.Linear(8, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn((2, 8), generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn((2,), generator=g, dtype=torch.float64) * 0.1)
    return nn.Sequential(_Recorder(), nn.Flatten(), lin).train()


def _exact_pgd_at(model: nn.Sequential, batches: list[tuple[Tensor, Tensor]], eps: float, lr: float,
                  accumulate: bool = False, reduction: str = "mean", labels: str = "true"
                  ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[float]]:
    """Exact PGD-AT by SGD on a 2-class linear model (the maximiser is a corner of the ball ∩ box): the weights after
    the epoch, the weight gradients of the last step, the training batches and the losses."""
    ref = copy.deepcopy(model)
    params = list(ref.parameters())
    total = [torch.zeros_like(p) for p in params]
    inputs, losses, grads = [], [], []
    for xb, yb in batches:
        with torch.no_grad():
            target = ref(xb).argmax(1) if labels == "pred" else yb
        x_star = _linf_corner(ref, xb, target, torch.full((len(xb),), eps, dtype=xb.dtype))
        loss = F.cross_entropy(ref(x_star), yb, reduction=reduction)
        grads = [g.detach() for g in torch.autograd.grad(loss, params)]
        total = [t + g for t, g in zip(total, grads)] if accumulate else grads
        with torch.no_grad():
            for p, t in zip(params, total):
                p -= lr * t
        inputs.append(x_star)
        losses.append(loss.item())
    return _params(ref), total, inputs, losses


def _mnist_mlp(g: torch.Generator) -> nn.Sequential:
    l1, l2 = nn.Linear(784, 64), nn.Linear(64, 10)
    with torch.no_grad():
        for lin in (l1, l2):
            bound = 1 / math.sqrt(lin.weight.shape[1])
            lin.weight.copy_((torch.rand(lin.weight.shape, generator=g) * 2 - 1) * bound)
            lin.bias.copy_((torch.rand(lin.bias.shape, generator=g) * 2 - 1) * bound)
    return nn.Sequential(nn.Flatten(), l1, nn.ReLU(), l2)


def _pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 20) -> tuple[float, float]:
    """(clean, L∞ PGD) accuracy of ``model`` in eval mode (the check's own PGD, random start from a fixed seed)."""
    model.eval()
    e = torch.full((len(x),), eps, dtype=x.dtype)
    x_adv = (x + (torch.rand(x.shape, generator=_gen(99), dtype=x.dtype) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv = (x_adv + 2.5 * eps / steps * _input_grad(model, x_adv, y).sign())
        x_adv = (x + (x_adv - x).clamp(-_col(e, x), _col(e, x))).clamp(0, 1)
    with torch.no_grad():
        return ((model(x).argmax(1) == y).float().mean().item(),
                (model(x_adv).argmax(1) == y).float().mean().item())


_AT_EPS, _AT_EPOCHS, _AT_GAIN = 0.1, 3, 0.2


@register("pgd_at_epoch", "one epoch of PGD adversarial training", "04b",
          "batches yields (xb, yb) pairs; eps is one number: build the (N,) tensor torch.full((len(xb),), eps, "
          "dtype=xb.dtype) for project_linf.")
def check_pgd_at_epoch(fn: Callable) -> str:
    """``pgd_at_epoch(model, batches, optimizer, eps, alpha, steps) -> mean loss``: per batch the inner max of eq. 8
    (L∞ PGD with random start, eval mode, true labels, projection), then one weight step on the loss at x_adv."""
    # 1. exact, on a linear model: PGD reaches the corner of the ball ∩ box, so the SGD updates are known exactly
    g = _gen(17)
    model = _two_class_model(g)
    batches = []
    for n in (6, 5):
        xb = _images(n, (1, 2, 4), g)
        batches.append((xb, torch.randint(0, 2, (n,), generator=g)))
    eps, lr = 0.2, 0.5
    before, copies = _params(model), [(xb.clone(), yb.clone()) for xb, yb in batches]
    want, last_grads, inputs, losses = _exact_pgd_at(model, batches, eps, lr)
    initial = copy.deepcopy(model)
    recorder = model[0]
    recorder.calls.clear()
    out = fn(model, batches, torch.optim.SGD(model.parameters(), lr=lr), eps, 0.1, 8)
    for (x0, y0), (xb, yb) in zip(copies, batches):
        _unchanged([x0, y0], [xb, yb], "the batches")
    if _same(_params(model), before, 0.0):
        raise Mismatch("the weights did not change.",
                       "after the attack of each batch: optimizer.zero_grad(), loss.backward() on the loss at x_adv, "
                       "then optimizer.step().")
    trained = _weight_step_inputs(recorder, len(batches), "the weight step")
    (xb, yb), x_in = batches[0], trained[0]
    if x_in.shape != xb.shape:
        raise Mismatch(f"the batch of the weight step has shape {tuple(x_in.shape)}, expected {tuple(xb.shape)}.",
                       "train on x_adv, shaped like xb.")
    if torch.equal(x_in, xb):
        raise Mismatch("the weight step trained on the clean batch.",
                       "adversarial training replaces every batch by its PGD adversarial: the loss of the weight step "
                       "is F.cross_entropy(model(x_adv), yb).")
    _in_box(x_in, "the training batch")
    _in_linf_ball(x_in - xb, torch.full((len(xb),), eps, dtype=xb.dtype),
                  hint="project back onto the ε-ball ∩ box after every PGD step (project_linf): without the "
                       "projection the iterates walk out of the threat model.")
    if not _close(x_in, inputs[0], 1e-6):
        pred_inputs = _exact_pgd_at(initial, batches, eps, lr, labels="pred")[2]
        if _close(x_in, pred_inputs[0], 1e-6):
            raise Mismatch("you attacked the model's predictions instead of the true labels.",
                           "craft with the true labels yb (the inner max of eq. 8 is over L(y, h(x̃))).")
        raise Mismatch("the training batch is not the maximiser of the loss that PGD reaches on a linear model.",
                       "per batch: a uniform random start in the ball (then into the box), `steps` steps of "
                       "alpha · sign(input_grad) on the true labels, each followed by project_linf.")
    if not model.training:
        raise Mismatch("the model is left in eval mode.",
                       "restore the mode you found (training calls you in train mode): model.train(was_training).")
    accumulate = _exact_pgd_at(initial, batches, eps, lr, accumulate=True)[0]
    summed = _exact_pgd_at(initial, batches, eps, lr, reduction="sum")[0]
    _check_update(model, before, want, last_grads, {
        "accumulate": (accumulate, "the gradients of the batches add up from step to step.",
                       "call optimizer.zero_grad() before every loss.backward()."),
        "sum": (summed, "your weight step uses the summed loss of the batch.",
                "train on the mean cross-entropy, F.cross_entropy(model(x_adv), yb): the step size must not grow "
                "with the batch."),
    })
    value = _tensor(out, "pgd_at_epoch").double()
    if value.numel() != 1:
        raise Mismatch(f"pgd_at_epoch returned {value.numel()} values.", "return one number: the mean training loss.")
    mean = sum(losses) / len(losses)
    if abs(value.item() - mean) > 1e-6:
        hint = "return the mean over the batches of loss.item(), each taken at x_adv before its step."
        if abs(value.item() - losses[-1]) <= 1e-6:
            raise Mismatch("you return the loss of the last batch only.", hint)
        raise Mismatch(f"you return {value.item():.6g}, the mean adversarial loss of the epoch is {mean:.6g}.", hint)

    # 2. for real: a few epochs on 1,000 MNIST digits must buy robustness that standard training does not
    from advlab import data

    x, y, _ = data.load("mnist", "train", n=1000, profile="fast")
    x_test, y_test, _ = data.load("mnist", "test", n=200, profile="fast")
    batches = [(x[i:i + 50], y[i:i + 50]) for i in range(0, len(x), 50)]
    standard, robust = _mnist_mlp(_gen(18)), _mnist_mlp(_gen(18))
    opt = torch.optim.Adam(standard.parameters(), lr=1e-2)
    standard.train()
    for _ in range(_AT_EPOCHS):
        for xb, yb in batches:
            opt.zero_grad()
            F.cross_entropy(standard(xb), yb).backward()
            opt.step()
    opt = torch.optim.Adam(robust.parameters(), lr=1e-2)
    robust.train()
    for _ in range(_AT_EPOCHS):
        fn(robust, batches, opt, _AT_EPS, 2.5 * _AT_EPS / 5, 5)
    (_, std_rob), (clean, rob) = _pgd_accuracy(standard, x_test, y_test, _AT_EPS), _pgd_accuracy(robust, x_test,
                                                                                                  y_test, _AT_EPS)
    if clean < 0.6 or rob < std_rob + _AT_GAIN:
        raise Mismatch(f"after {_AT_EPOCHS} epochs on 1,000 MNIST digits your adversarially trained MLP has clean "
                       f"accuracy {clean:.2f} and PGD accuracy {rob:.2f} at ε = {_AT_EPS}; the standard MLP "
                       f"{std_rob:.2f} (expected at least {_AT_GAIN} more).",
                       "attack every batch with PGD (5 steps here), then take the weight step on x_adv.")
    return ("exact SGD updates on a linear model (eval-mode PGD, projection, true labels, only the loss at x_adv in "
            f"p.grad), and {_AT_EPOCHS} epochs on 1,000 MNIST digits raise an MLP's PGD accuracy well above standard "
            "training's.")


def _co_reference(log: dict, collapse: float = 0.1, gap: float = 0.3) -> int | None:
    f, p = log["fgsm_accuracy"], log["pgd_accuracy"]
    for e in range(1, len(p)):
        if p[e] <= collapse and f[e] >= f[e - 1] - 0.02 and f[e] >= p[e] + gap:
            return e
    return None


def _co_log(fgsm: list[float], pgd: list[float]) -> dict[str, list[float]]:
    clean = [min(1.0, max(f, p) + 0.2) for f, p in zip(fgsm, pgd)]
    return {"clean_accuracy": clean, "fgsm_accuracy": list(fgsm), "pgd_accuracy": list(pgd)}


# (name, log, thresholds, why the answer is what it is)
_CO_CASES = [
    ("a sudden collapse (Wong et al.)", _co_log([0.55, 0.60, 0.62, 0.85, 0.90, 0.92],
                                                [0.40, 0.45, 0.47, 0.03, 0.01, 0.0]),
     {}, "PGD accuracy falls to about 0 at epoch 3 while FGSM accuracy jumps up."),
    ("a divergence (everything collapses)", _co_log([0.60, 0.62, 0.08, 0.10], [0.45, 0.47, 0.02, 0.0]), {},
     "FGSM accuracy falls with PGD accuracy and never pulls away from it: the training diverged, the model did not "
     "learn to defeat the one-step attack."),
    ("robust overfitting (a slow decline)", _co_log([0.60, 0.60, 0.61, 0.60, 0.60, 0.61],
                                                    [0.50, 0.48, 0.45, 0.41, 0.37, 0.33]), {},
     "PGD accuracy declines slowly but never collapses to about 0."),
    ("a model never robust to PGD", _co_log([0.05, 0.20, 0.33, 0.50, 0.60], [0.02, 0.01, 0.0, 0.01, 0.0]), {},
     "from epoch 2 on FGSM accuracy is at least `gap` above PGD accuracy, which is about 0."),
    ("a collapse, a recovery and a second collapse", _co_log([0.50, 0.80, 0.60, 0.55, 0.85],
                                                             [0.40, 0.02, 0.35, 0.40, 0.01]), {},
     "the first collapse is at epoch 1."),
    ("a log that starts collapsed", _co_log([0.90, 0.85, 0.95], [0.0, 0.0, 0.0]), {},
     "epoch 0 has no previous epoch to compare with; at epoch 1 FGSM accuracy fell by more than 0.02; epoch 2 "
     "qualifies."),
    ("FGSM accuracy dips by 0.01 at the collapse", _co_log([0.50, 0.52, 0.51], [0.40, 0.42, 0.05]), {},
     "a dip of FGSM accuracy within the 0.02 tolerance still counts as 'did not fall'."),
    ("FGSM accuracy falls by 0.05 at the collapse", _co_log([0.50, 0.60, 0.55, 0.56], [0.40, 0.45, 0.05, 0.20]), {},
     "FGSM accuracy fell by more than 0.02 when PGD accuracy collapsed, and PGD accuracy then recovered."),
    ("other thresholds (collapse = 0.2, gap = 0.5)", _co_log([0.50, 0.60, 0.70, 0.80], [0.40, 0.45, 0.15, 0.15]),
     {"collapse": 0.2, "gap": 0.5}, "with collapse = 0.2 and gap = 0.5, epoch 2 qualifies."),
    ("the thresholds met with equality", _co_log([0.625, 0.625], [0.5, 0.125]), {"collapse": 0.125, "gap": 0.5},
     "PGD accuracy equal to `collapse` and an FGSM lead equal to `gap` qualify (at most, at least)."),
    ("an empty log", _co_log([], []), {}, "an empty log has no epoch of catastrophic overfitting."),
    ("a one-epoch log", _co_log([0.95], [0.0]), {}, "with one epoch there is no previous epoch to compare with."),
]


@register("catastrophic_epoch", "catastrophic overfitting from a training log", "04b",
          "log['fgsm_accuracy'] and log['pgd_accuracy'] are lists with one accuracy per epoch; loop over e >= 1.")
def check_catastrophic_epoch(fn: Callable) -> str:
    """``catastrophic_epoch(log, collapse=0.1, gap=0.3) -> first 0-based epoch of catastrophic overfitting or None``
    (the criterion of advlab.defenses.adversarial.detect_catastrophic_overfitting with drop = 0)."""
    for name, log, kwargs, why in _CO_CASES:
        kept = copy.deepcopy(log)
        out = fn(log, **kwargs)
        if log != kept:
            raise Mismatch("your function modified the log.", "read the lists; do not sort, pop or append to them.")
        want = _co_reference(log, **kwargs)
        if isinstance(out, Tensor) and out.numel() == 1 and not out.is_floating_point():
            out = int(out.item())
        if want is None:
            if out is None:
                continue
            if isinstance(out, (bool, np.bool_)) or out == -1:
                raise Mismatch(f"on {name} you return {out!r}.", "return None when no epoch qualifies.")
            raise Mismatch(f"on {name} you return epoch {out!r}; no epoch is catastrophic overfitting: {why}",
                           "an epoch e >= 1 qualifies only if pgd[e] <= collapse, fgsm[e] >= fgsm[e-1] - 0.02 and "
                           "fgsm[e] >= pgd[e] + gap, all three.")
        if out is None:
            raise Mismatch(f"on {name} you return None; the answer is epoch {want}: {why}",
                           "an epoch e >= 1 qualifies when pgd[e] <= collapse, fgsm[e] >= fgsm[e-1] - 0.02 and "
                           "fgsm[e] >= pgd[e] + gap (inclusive; use the thresholds passed in).")
        if isinstance(out, (bool, np.bool_)) or not isinstance(out, (int, np.integer)):
            raise Mismatch(f"on {name} you return a {type(out).__name__}, not an epoch number.",
                           "return the 0-based index e of the epoch (an int), or None.")
        if out == want + 1:
            raise Mismatch(f"on {name} you return {out}, the 1-based epoch; the answer is {want} (0-based): {why}",
                           "return the index e into the lists, which starts at 0.")
        if out != want:
            raise Mismatch(f"on {name} you return epoch {out}; the answer is {want}: {why}",
                           "return the FIRST epoch e >= 1 (0-based) that meets all three conditions.")
    return (f"right on {len(_CO_CASES)} logs: sudden collapse, divergence, slow robust overfitting, never robust, "
            "repeated collapse, tolerance, other thresholds, equality, empty and one-epoch logs.")


def _quantize(levels: int) -> Callable[[Tensor], Tensor]:
    def quantize(x: Tensor) -> Tensor:
        return torch.round(x * levels) / levels

    return quantize


@register("straight_through", "BPDA straight-through estimator", "04b",
          "return x + (preprocess(x) - x).detach(): the value of preprocess(x), the gradient of the identity.")
def check_straight_through(fn: Callable) -> str:
    """``straight_through(x, preprocess) -> g(x)`` on the forward pass, identity Jacobian on the backward pass."""
    g = _gen(16)
    cases = [(_images(4, (1, 3, 3), g), _quantize(8), "8-level quantisation"),
             (_images(3, (5,), g, torch.float32), _quantize(2), "2-level quantisation"),
             (_images(3, (2, 2), g), lambda t: t.square(), "a smooth g(x) = x²")]
    for x, pre, name in cases:
        x0 = x.clone()
        xg = x.clone().requires_grad_(True)
        out = fn(xg, pre)
        if not isinstance(out, Tensor):
            _tensor(out, "straight_through")  # raises with a hint for None / non-tensors
        _unchanged([x0], [xg.detach()], "x")
        _shape(out.detach().cpu(), x.shape, "the output", "return a tensor shaped like x.")
        want = pre(x0)
        if not _close(out.detach().cpu(), want, 1e-6):
            if _close(out.detach().cpu(), x0, 1e-6):
                raise Mismatch(f"on {name} your forward pass returns x itself, not the preprocessed input.",
                               "BPDA keeps the defended forward pass: the value must be preprocess(x).")
            raise Mismatch(f"on {name} the forward value differs from preprocess(x).",
                           "the value must be exactly preprocess(x); only the backward pass is approximated.")
        if not out.requires_grad:
            raise Mismatch("the output does not depend on x in the autograd graph (no gradient can flow).",
                           "detach only the correction (preprocess(x) - x), not the whole output.")
        weight = torch.randn(x.shape, generator=g, dtype=out.dtype)
        (grad,) = torch.autograd.grad((out * weight).sum(), xg, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad.detach().cpu()
        if _close(grad, weight, 1e-6):
            continue
        if bool((grad == 0).all()):
            raise Mismatch(f"on {name} the gradient through your function is zero.",
                           "rounding has zero derivative: wrap the correction in .detach(), "
                           "x + (preprocess(x) - x).detach(), so the backward pass sees the identity.")
        raise Mismatch(f"on {name} the gradient is not that of the identity (it is the true derivative of g, or "
                       "scaled).", "the straight-through estimator treats preprocess as the identity on the "
                       "backward pass: x + (preprocess(x) - x).detach().")
    return "forward = preprocess(x), backward = identity, on quantisations and a smooth g; x left unchanged."


@register("spectral_norm", "power iteration for the spectral norm", "04b",
          "v must have W.shape[1] entries: iterate v <- Wᵀ(W v) / ||Wᵀ(W v)||.")
def check_spectral_norm(fn: Callable) -> str:
    """``spectral_norm(W, steps=100) -> σ_max(W)`` (float or 0-dim tensor) by power iteration on WᵀW."""
    g = _gen(14)

    def with_singular_values(s: list[float], m: int, n: int, dtype=torch.float64) -> Tensor:
        u, _ = torch.linalg.qr(torch.randn((m, m), generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn((n, n), generator=g, dtype=torch.float64))
        d = torch.zeros((m, n), dtype=torch.float64)
        idx = torch.arange(len(s))
        d[idx, idx] = torch.tensor(s, dtype=torch.float64)
        return (u @ d @ v.T).to(dtype)

    mats = [with_singular_values([7, 4, 2, 1, 0.5, 0.1], 6, 9),
            with_singular_values([3, 1], 5, 2),
            torch.randn((1, 5), generator=g, dtype=torch.float64),
            torch.outer(torch.randn(4, generator=g), torch.randn(6, generator=g)),  # rank 1, float32
            with_singular_values([50, 20, 5], 4, 4, torch.float32)]  # large σ: overflows without normalising
    for w in mats:
        w0 = w.clone()
        out = _tensor(fn(w, steps=100), "spectral_norm").double()
        _unchanged([w0], [w], "W")
        if out.numel() != 1:
            raise Mismatch(f"spectral_norm returned {out.numel()} values.", "return one number, σ_max = ||W v||.")
        sigma = out.reshape(()).item()
        true = torch.linalg.matrix_norm(w.double(), ord=2).item()
        if math.isfinite(sigma) and abs(sigma - true) <= 1e-3 * true:
            continue
        if not math.isfinite(sigma) or sigma > 1.5 * true:
            raise Mismatch(f"your estimate is {sigma:.4g} for a matrix whose σ_max is {true:.4g}.",
                           "normalise v after every step (v = v / v.norm()), and return ||W v|| for a unit v.")
        if abs(sigma - torch.linalg.matrix_norm(w.double()).item()) <= 1e-3 * true:
            raise Mismatch("you return the Frobenius norm ||W||_F, which is >= σ_max.",
                           "the spectral norm is max ||W v|| over unit v: iterate v <- WᵀW v / ||WᵀW v||.")
        raise Mismatch(f"your estimate is {sigma:.4g}, σ_max is {true:.4g}.",
                       "iterate v <- WᵀW v / ||WᵀW v|| `steps` times and return ||W v|| (or sqrt of vᵀWᵀW v).")
    return "agrees with torch.linalg.matrix_norm(W, ord=2) to 1e-3 on 5 matrices (non-square, rank 1, large σ)."


@register("certified_radius", "Lipschitz certificate", "04b",
          "logits.topk(2, dim=1).values gives the top two logits of every sample.")
def check_certified_radius(fn: Callable) -> str:
    """``certified_radius(logits, L) -> (N,) (z_top - z_runner_up) / (√2·L)`` (compare advlab.lipschitz)."""
    from advlab.lipschitz import certified_radius

    g = _gen(15)
    z = torch.randn((7, 5), generator=g) * 2
    z[2] = torch.tensor([1.0, 3.0, 3.0, 0.0, -1.0])  # a tie: radius 0
    cases = [(z, 2.5), (torch.randn((4, 2), generator=g), 0.7), (z[:3], 1.0)]
    for logits, L in cases:
        l0 = logits.clone()
        out = _tensor(fn(logits, L), "certified_radius")
        _unchanged([l0], [logits], "logits")
        _shape(out, (len(logits),), "the radius", "one radius per sample, shaped (N,).")
        ref = certified_radius(logits, L)
        if _close(out, ref, 1e-5):
            continue
        if _close(out, ref * math.sqrt(2), 1e-5):
            raise Mismatch("your radius is √2 too large.",
                           "closing a gap between two logits needs a logit change of gap/√2 in L2: divide by √2·L.")
        if bool((out < -1e-7).any()):
            raise Mismatch("a radius is negative.", "the margin is top logit minus runner-up, which is >= 0.")
        raise Mismatch("your radius differs from (z_top - z_second) / (√2·L).",
                       "use the gap between the two largest logits of each sample (not the true class).")
    return "matches margin / (√2·L) incl. ties and 2 classes."


@register("certify_counts", "randomized-smoothing CERTIFY bound", "04b",
          "scipy.stats.beta.ppf(alpha, n_a, n - n_a + 1) is the one-sided lower bound; scipy.stats.norm.ppf is Φ⁻¹.")
def check_certify_counts(fn: Callable) -> str:
    """``certify_counts(n_a, n, alpha, sigma) -> (p_a, radius)``: one-sided Clopper–Pearson, abstain at p_a <= 1/2."""
    from scipy import stats

    from advlab.smoothing import lower_confidence_bound

    for n, alpha, sigma in [(100, 0.001, 0.25), (1000, 0.05, 0.5)]:
        n_a = torch.tensor([0, 10, 50, 52, 60, 75, 90, 99, n * 99 // 100, n])
        k0 = n_a.clone()
        out = fn(n_a, n, alpha, sigma)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mismatch(f"certify_counts returned a {type(out).__name__}, not a pair.", "return (p_a, radius).")
        p_a = _tensor(out[0], "certify_counts").double()
        rad = _tensor(out[1], "certify_counts").double()
        _unchanged([k0], [n_a], "n_a")
        _shape(p_a, n_a.shape, "p_a", "one lower bound per sample, shaped (N,).")
        _shape(rad, n_a.shape, "radius", "one radius per sample, shaped (N,).")
        ref_p = lower_confidence_bound(n_a, n, alpha).double().cpu()
        if not bool(torch.isfinite(p_a).all()):
            raise Mismatch("p_a contains NaN (at n_a = 0 the Beta quantile is undefined).",
                           "the lower bound is 0 when n_a = 0: torch.where(n_a > 0, bound, 0).")
        if not _close(p_a, ref_p, 1e-7):
            k = n_a.numpy()
            two = torch.as_tensor(np.where(k > 0, stats.beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0))
            if _close(p_a, two, 1e-7):
                raise Mismatch("your lower bound is two-sided (it spends α/2 on each side).",
                               "CERTIFY needs only a lower bound: put the whole α on one side, Beta(α; n_a, n-n_a+1).")
            if _close(p_a, n_a.double() / n, 1e-7):
                raise Mismatch("p_a is the point estimate n_a / n.",
                               "use the Clopper–Pearson lower confidence bound, so the certificate holds w.p. 1 - α.")
            raise Mismatch("p_a differs from the one-sided Clopper–Pearson lower bound.",
                           "p_a = Beta quantile at α with parameters (n_a, n - n_a + 1), 0 when n_a = 0.")
        ok = ref_p > 0.5
        if bool((rad < 0).any()):
            raise Mismatch("a radius is negative.", "abstain (radius 0) when p_a <= 1/2 instead of σ·Φ⁻¹(p_a) < 0.")
        if bool((rad[~ok] != 0).any()):
            raise Mismatch("you certify a sample whose lower bound p_a <= 1/2.", "abstain (radius 0) when p_a <= 1/2.")
        ref_r = torch.where(ok, sigma * torch.as_tensor(stats.norm.ppf(ref_p.clamp(0.5, 1).numpy())),
                            torch.zeros_like(ref_p))
        if bool((rad[ok] == 0).any()):
            raise Mismatch("you abstain although p_a > 1/2.", "abstain only when p_a <= 1/2.")
        if not _close(rad, ref_r, 1e-7 + 1e-6 * sigma):
            raise Mismatch("the radius differs from σ·Φ⁻¹(p_a).", "radius = sigma * scipy.stats.norm.ppf(p_a).")
    return "one-sided Clopper–Pearson bound, radius σ·Φ⁻¹(p_A), abstains exactly when p_A <= 1/2."
