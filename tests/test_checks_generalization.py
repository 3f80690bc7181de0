"""Exercise checks of section ⑤ (solutions/05_robustness_vs_generalization): pass on reference solutions, [TODO] on
stubs, [FAIL] with a specific hint on plausible mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from check_harness import check_tests

from advlab import checks


def _col(v, like):
    return v.reshape(-1, *([1] * (like.ndim - 1)))


# ----------------------------------------------------------------------------------------- reference solutions
def robust_margin(w, b, x, y, eps, norm="l1", inside=False):
    e = torch.as_tensor(eps, dtype=x.dtype)
    size = {"l1": w.abs().sum(), "l2": w.norm(), "linf": w.abs().amax(), "with b": w.abs().sum() + abs(b)}[norm]
    if inside:
        return y * (x @ w + b - e * size)
    return y * (x @ w + b) - e * size


def feature_targets(y, classes, kind, generator=None, short=False, use_generator=True, loop=False):
    if kind == "det":
        return (y + 1) % classes
    gen = generator if use_generator else None
    if loop:
        return torch.stack([(v + torch.randint(1, classes, (), generator=gen)) % classes for v in y])
    high = max(2, classes - 1) if short else classes  # short: the offset C − 1 (the class before y) never drawn
    k = torch.randint(1, high, y.shape, generator=gen)
    return (y + k) % classes


def inversion_step(g, x_r, target, step_size, normalise="sample", sign=-1.0, clamp=True, distance="norm"):
    xr = x_r.detach().clone().requires_grad_(True)
    diff = g(xr).flatten(1) - target
    dist = diff.norm(dim=1) if distance == "norm" else diff.pow(2).sum(1).sqrt()
    (grad,) = torch.autograd.grad(dist.sum(), xr)
    if normalise == "sample":
        grad = grad / _col(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
    elif normalise == "batch":
        grad = grad / grad.norm().clamp_min(1e-12)
    out = x_r + sign * step_size * grad
    return out.clamp(0, 1) if clamp else out


def theta_step(theta, grad, theta0, eps, alpha, low, high, centre="theta0", data_range=True, sign=True):
    c = theta0 if centre == "theta0" else theta
    e = _col(eps, c)
    lo, hi = c - e, c + e
    if data_range:
        lo, hi = torch.maximum(lo, low), torch.minimum(hi, high)
    step = grad.sign() if sign else grad
    return torch.minimum(torch.maximum(theta + alpha * step, lo), hi)


def tangent_fraction(J, delta, how="qr"):
    if how == "qr":
        q = torch.linalg.qr(J).Q
        p = (q @ (q.transpose(1, 2) @ delta[..., None]))[..., 0]
        return p.pow(2).sum(1) / delta.pow(2).sum(1)
    if how == "lstsq":
        c = torch.linalg.lstsq(J, delta[..., None]).solution
        return (J @ c)[..., 0].pow(2).sum(1) / delta.pow(2).sum(1)
    if how == "cosines":  # treats the columns as orthogonal
        cos = (J.transpose(1, 2) @ delta[..., None])[..., 0] / (J.norm(dim=1) * delta.norm(dim=1, keepdim=True))
        return cos.pow(2).sum(1)
    if how == "no inverse":  # J Jᵀ δ: not a projection unless J has orthonormal columns
        p = (J @ (J.transpose(1, 2) @ delta[..., None]))[..., 0]
        return p.pow(2).sum(1) / delta.pow(2).sum(1)
    q = torch.linalg.qr(J).Q  # "norm ratio"
    p = (q @ (q.transpose(1, 2) @ delta[..., None]))[..., 0]
    return p.norm(dim=1) / delta.norm(dim=1)


def on_manifold_step(model, optimizer, decode, protos, theta0, y, eps, alpha, steps, low, high, space="theta",
                     eval_mode=True, leak=False, data_range=True, share="half", attack=True):
    n = len(y)
    k = {"half": n // 2, "all": n}[share]
    was = model.training
    if eval_mode:
        model.eval()
    if leak:
        optimizer.zero_grad()
    t0 = theta0[:k]
    e = torch.full((k,), float(eps), dtype=theta0.dtype)
    theta = t0.clone()
    x_adv = decode(protos[:k], t0).detach()
    for _ in range(steps if attack else 0):
        if space == "theta":
            theta = theta.detach().requires_grad_(True)
            loss = F.cross_entropy(model(decode(protos[:k], theta)), y[:k], reduction="sum")
            if leak:
                loss.backward()
                grad = theta.grad
            else:
                (grad,) = torch.autograd.grad(loss, theta)
            lo, hi = (low, high) if data_range else (torch.full_like(low, -1e9), torch.full_like(high, 1e9))
            theta = theta_step(theta.detach(), grad, t0, e, alpha, lo, hi)
            x_adv = decode(protos[:k], theta).detach()
        else:  # pixel PGD around the clean images: off the manifold
            x0 = decode(protos[:k], t0).detach()
            xg = x_adv.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y[:k], reduction="sum"), xg)
            x_adv = (x0 + (x_adv + alpha * grad.sign() - x0).clamp(-eps, eps)).clamp(0, 1)
    model.train(was)
    xb = torch.cat([x_adv, decode(protos[k:], theta0[k:]).detach()])
    if not leak:
        optimizer.zero_grad()
    loss = F.cross_entropy(model(xb), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _kw(fn, **fixed):
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs, **fixed)

    return wrapped


REFERENCE = {
    "robust_margin": robust_margin,
    "feature_targets": feature_targets,
    "inversion_step": inversion_step,
    "theta_step": theta_step,
    "tangent_fraction": tangent_fraction,
    "on_manifold_step": on_manifold_step,
}

# ------------------------------------------------------------------------------------ wrong implementations
WRONG = {
    "robust_margin": {
        "L2 norm of w": _kw(robust_margin, norm="l2"),
        "L-inf norm of w": _kw(robust_margin, norm="linf"),
        "eps term inside the product with y": _kw(robust_margin, inside=True),
        "bias in the norm": _kw(robust_margin, norm="with b"),
        "ignores eps": lambda w, b, x, y, eps: y * (x @ w + b),
    },
    "feature_targets": {
        "D_rand may equal y": lambda y, c, kind, generator=None: (
            (y + 1) % c if kind == "det" else torch.randint(0, c, y.shape, generator=generator)),
        "D_rand misses the class before y": _kw(feature_targets, short=True),
        "D_det without the wrap-around": lambda y, c, kind, generator=None: (
            y + 1 if kind == "det" else feature_targets(y, c, kind, generator)),
        "D_det is the previous class": lambda y, c, kind, generator=None: (
            (y - 1) % c if kind == "det" else feature_targets(y, c, kind, generator)),
        "ignores the generator": _kw(feature_targets, use_generator=False),
        "Python loop over the samples": _kw(feature_targets, loop=True),
        "float targets": lambda y, c, kind, generator=None: feature_targets(y, c, kind, generator).float(),
    },
    "inversion_step": {
        "raw gradient": _kw(inversion_step, normalise="none"),
        "batch-wide normalisation": _kw(inversion_step, normalise="batch"),
        "ascends": _kw(inversion_step, sign=1.0),
        "no clamp": _kw(inversion_step, clamp=False),
        "sqrt of a sum (NaN at distance 0)": _kw(inversion_step, distance="sqrt"),
    },
    "theta_step": {
        "no data range": _kw(theta_step, data_range=False),
        "box around the current theta": _kw(theta_step, centre="theta"),
        "raw gradient": _kw(theta_step, sign=False),
        "descends": lambda t, g, t0, e, a, lo, hi: theta_step(t, -g, t0, e, a, lo, hi),
    },
    "tangent_fraction": {
        "squared cosines, columns taken as orthogonal": _kw(tangent_fraction, how="cosines"),
        "J Jᵀ δ without (JᵀJ)⁻¹": _kw(tangent_fraction, how="no inverse"),
        "ratio of norms": _kw(tangent_fraction, how="norm ratio"),
    },
    "on_manifold_step": {
        "pixel PGD (off the manifold)": _kw(on_manifold_step, space="pixels"),
        "attacks in train mode, the weight gradient leaking": _kw(on_manifold_step, eval_mode=False, leak=True),
        "the attack's backward leaks into p.grad": _kw(on_manifold_step, leak=True),
        "no data range": _kw(on_manifold_step, data_range=False),
        "attacks the whole batch": _kw(on_manifold_step, share="all"),
        "no attack": _kw(on_manifold_step, attack=False),
        "descends": lambda m, o, d, p, t0, y, e, a, s, lo, hi: on_manifold_step(m, o, d, p, t0, y, e, -a, s, lo, hi),
    },
}


(
    test_every_task_has_a_reference_and_two_wrong_implementations,
    test_check_passes_on_the_reference,
    test_check_reports_a_stub_as_todo,
    test_check_fails_on_a_wrong_implementation,
) = check_tests(REFERENCE, WRONG, sections={"05"})


def test_an_alternative_correct_solution_passes(capsys):
    """Correct solutions written differently from the reference pass too."""

    def targets_shift_up(y, classes, kind, generator=None):  # draw among C − 1 values, skip y
        if kind == "det":
            return torch.where(y == classes - 1, 0, y + 1)
        t = torch.randint(0, classes - 1, y.shape, generator=generator)
        return t + (t >= y).long()

    assert checks.check_feature_targets(targets_shift_up)
    assert checks.check_tangent_fraction(_kw(tangent_fraction, how="lstsq"))
    assert "[FAIL]" not in capsys.readouterr().out


def test_specific_hints(capsys):
    expect = [
        ("robust_margin", "L2 norm of w", "L2 ball"),
        ("robust_margin", "eps term inside the product with y", "changes sign with y"),
        ("robust_margin", "bias in the norm", "bias"),
        ("feature_targets", "D_rand may equal y", "equal their true label"),
        ("feature_targets", "D_rand misses the class before y", "not uniform"),
        ("feature_targets", "D_det is the previous class", "(y − 1) mod C"),
        ("feature_targets", "ignores the generator", "generator=generator"),
        ("feature_targets", "Python loop over the samples", "loops over the samples"),
        ("feature_targets", "float targets", "integer"),
        ("inversion_step", "raw gradient", "raw gradient"),
        ("inversion_step", "batch-wide normalisation", "whole batch"),
        ("inversion_step", "ascends", "increases the representation distance"),
        ("inversion_step", "no clamp", "[0, 1]"),
        ("inversion_step", "sqrt of a sum (NaN at distance 0)", "NaN"),
        ("theta_step", "no data range", "data range"),
        ("theta_step", "box around the current theta", "clean θ0"),
        ("theta_step", "raw gradient", "raw gradient"),
        ("tangent_fraction", "squared cosines, columns taken as orthogonal", "as if they were orthogonal"),
        ("tangent_fraction", "ratio of norms", "squared"),
        ("on_manifold_step", "pixel PGD (off the manifold)", "attack θ, not the pixels"),
        ("on_manifold_step", "attacks in train mode, the weight gradient leaking", "train mode during the attack"),
        ("on_manifold_step", "the attack's backward leaks into p.grad", "leaked into p.grad"),
        ("on_manifold_step", "no data range", "data range"),
        ("on_manifold_step", "attacks the whole batch", "whole batch"),
        ("on_manifold_step", "no attack", "no attack"),
        ("on_manifold_step", "descends", "descends"),
    ]
    for name, label, needle in expect:
        assert checks.check(name, WRONG[name][label]) is False
        out = capsys.readouterr().out
        assert needle in out, f"{name} / {label}: {out}"


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_feature_targets(feature_targets)
    assert torch.equal(torch.rand(3), expected)
