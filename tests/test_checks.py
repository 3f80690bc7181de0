"""Exercise checks: pass on reference solutions, fail on stubs and on plausible mistakes, never print a traceback.

The exercise notebooks are executed too: with every solution stripped, each check must print [TODO] and nothing
may raise.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_harness import check_tests
from scipy import stats

from advlab import checks, course

ROOT = Path(__file__).resolve().parents[1]


def _col(v, like):
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def _grad(model, x, y, targeted=False):
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (g,) = torch.autograd.grad(-loss if targeted else loss, x)
    return g


# ----------------------------------------------------------------------------------------- reference solutions
def fgsm_step(x, grad, eps):
    return (x + _col(eps, x) * grad.sign()).clamp(0, 1)


def project_linf(z, x, eps):
    e = _col(eps, z)
    return torch.maximum(torch.minimum(z, torch.minimum(e, 1 - x)), torch.maximum(-e, -x))


def project_l2(z, x, eps, steps=60):
    lo_box, hi_box = -x, 1 - x
    t_lo, t_hi = torch.zeros_like(eps), torch.ones_like(eps)
    for _ in range(steps):
        mid = (t_lo + t_hi) / 2
        ok = (_col(mid, z) * z).clamp(lo_box, hi_box).flatten(1).norm(dim=1) <= eps
        t_lo, t_hi = torch.where(ok, mid, t_lo), torch.where(ok, t_hi, mid)
    inside = z.clamp(lo_box, hi_box).flatten(1).norm(dim=1) <= eps
    t = torch.where(inside, torch.ones_like(t_lo), t_lo)
    return (_col(t, z) * z).clamp(lo_box, hi_box)


def pgd_linf(model, x, y, eps, alpha, steps, start=True, proj=True):
    e = _col(eps, x)
    delta = (2 * torch.rand_like(x) - 1) * e if start else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv + alpha * _grad(model, x_adv, y).sign()
        if proj:
            x_adv = x + project_linf(x_adv - x, x, eps)
    return x_adv.detach()


def targeted_fgsm(model, x, target, eps, sign=-1.0):
    return (x + sign * _col(eps, x) * _grad(model, x, target).sign()).clamp(0, 1)


def cw_margin(logits, y, kappa=0.0, mask="inf", flip=False):
    true = logits.gather(1, y[:, None]).squeeze(1)
    if mask == "inf":
        other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    elif mask == "none":
        other = logits.amax(1)
    else:  # multiply by a one-hot: leaves a 0 in place of the true logit
        other = (logits * (1 - F.one_hot(y, logits.shape[1]))).amax(1)
    gap = other - true if flip else true - other
    return gap.clamp_min(-kappa)


def cw_search(inner, x, y, c_init=1.0, search_steps=9, keep="best", bounds="right", shared=False, unbounded="x10",
              loop=False, dtype=None):
    c = torch.full((len(x),), float(c_init), dtype=dtype or x.dtype)
    lower, upper = torch.zeros_like(c), torch.full_like(c, math.inf)
    best_l2, best = torch.full_like(c, math.inf), x.clone()
    for _ in range(search_steps):
        if loop:  # a Python loop over the samples
            outs = [inner(x[i:i + 1], y[i:i + 1], c[i:i + 1]) for i in range(len(x))]
            x_adv, success = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        else:
            x_adv, success = inner(x, y, c)
        l2 = (x_adv - x).flatten(1).norm(dim=1)
        take = {"best": success & (l2 < best_l2), "last success": success, "any": l2 < best_l2,
                "last": torch.ones_like(success)}[keep]
        best_l2 = torch.where(take, l2, best_l2)
        best = torch.where(_col(take, x), x_adv, best)
        if shared:  # one c for the batch, moved by whether every sample succeeded
            s = bool(success.all())
            upper, lower = (torch.minimum(upper, c), lower) if s else (upper, torch.maximum(lower, c))
        elif bounds == "right":
            upper = torch.where(success, torch.minimum(upper, c), upper)
            lower = torch.where(success, lower, torch.maximum(lower, c))
        else:  # the two updates swapped
            lower = torch.where(success, torch.maximum(lower, c), lower)
            upper = torch.where(success, upper, torch.minimum(upper, c))
        if unbounded == "x10":
            c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
        elif unbounded == "x2":
            c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 2)
        else:  # bisects even without an upper bound
            c = (lower + upper) / 2
    return best


def cw_search_1e10(inner, x, y, c_init=1.0, search_steps=9):
    """Carlini and Wagner's own bookkeeping: 1e10 marks "no upper bound yet", c in float32."""
    c = torch.full((len(x),), float(c_init))
    lower, upper = torch.zeros_like(c), torch.full_like(c, 1e10)
    best_l2, best = torch.full((len(x),), 1e10), x.clone()
    for _ in range(search_steps):
        x_adv, success = inner(x, y, c)
        l2 = ((x_adv - x) ** 2).flatten(1).sum(1).float()  # squared norms order the same way
        better = success & (l2 < best_l2)
        best_l2[better] = l2[better]
        best[better] = x_adv[better]
        upper[success] = torch.minimum(upper, c)[success]
        lower[~success] = torch.maximum(lower, c)[~success]
        c = torch.where(upper < 1e9, (lower + upper) / 2, c * 10)
    return best


def deepfool_l2(model, x, y, overshoot=0.02, max_iter=50, where="total"):
    r_tot = torch.zeros_like(x)
    x_adv = x.clone()
    for _ in range(max_iter):
        xa = x_adv.clone().requires_grad_(True)
        logits = model(xa)
        active = logits.argmax(1) == y
        if not active.any():
            break
        z_y = logits.gather(1, y[:, None])[:, 0]
        ws, fs = [], []
        for k in range(logits.shape[1]):
            (w,) = torch.autograd.grad((logits[:, k] - z_y).sum(), xa, retain_graph=True)
            ws.append(w.flatten(1))
            fs.append((logits[:, k] - z_y).detach())
        w, f = torch.stack(ws, 1), torch.stack(fs, 1)
        wn = w.norm(dim=2).clamp_min(1e-12)
        dist = (f.abs() / wn).scatter(1, y[:, None], math.inf)
        best = dist.argmin(1)
        rows = torch.arange(len(x))
        r_i = (dist[rows, best] + 1e-4)[:, None] * w[rows, best] / wn[rows, best][:, None]
        r_i = torch.where(active[:, None], r_i, torch.zeros_like(r_i)).view_as(x)
        r_tot = r_tot + r_i
        if where == "total":
            x_adv = (x + (1 + overshoot) * r_tot).clamp(0, 1)
        elif where == "none":
            x_adv = (x + r_tot).clamp(0, 1)
        else:  # overshoot on the last step only
            x_adv = (x + r_tot + overshoot * r_i).clamp(0, 1)
    return x_adv.detach()


def pgd_at_epoch(model, batches, optimizer, eps, alpha, steps, eval_mode=True, restore=True, adversarial=True,
                 proj=True, leak=False, labels="true", zero_grad=True, reduction="mean", returns="mean"):
    losses = []
    for xb, yb in batches:
        was = model.training
        if eval_mode:
            model.eval()
        if leak:
            optimizer.zero_grad()  # before the attack only: the attack's backward passes stay in p.grad
        e = torch.full((len(xb),), float(eps), dtype=xb.dtype)
        y = model(xb).argmax(1).detach() if labels == "pred" else yb
        x_adv = xb + project_linf((2 * torch.rand_like(xb) - 1) * _col(e, xb), xb, e)
        for _ in range(steps):
            if leak:
                xg = x_adv.detach().requires_grad_(True)
                F.cross_entropy(model(xg), y).backward()
                grad = xg.grad
            else:
                grad = _grad(model, x_adv, y)
            x_adv = x_adv + alpha * grad.sign()
            x_adv = xb + project_linf(x_adv - xb, xb, e) if proj else x_adv.clamp(0, 1)
        if restore:
            model.train(was)
        x_train = x_adv.detach() if adversarial else xb
        if zero_grad and not leak:
            optimizer.zero_grad()
        loss = F.cross_entropy(model(x_train), yb, reduction=reduction)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[-1] if returns == "last" else sum(losses) / len(losses)


def catastrophic_epoch(log, collapse=0.1, gap=0.3, first_epoch=1, tol=0.02, use_fgsm=True, last=False, strict=False):
    f, p = log["fgsm_accuracy"], log["pgd_accuracy"]
    found = None
    for e in range(first_epoch, len(p)):
        low = p[e] < collapse if strict else p[e] <= collapse
        lead = f[e] > p[e] + gap if strict else f[e] >= p[e] + gap
        held = e == 0 or f[e] >= f[e - 1] - tol
        if low and (not use_fgsm or (lead and held)):
            found = e
            if not last:
                return e
    return found


def straight_through(x, preprocess):
    return x + (preprocess(x) - x).detach()


def spectral_norm(w, steps=100, normalise=True):
    v = torch.randn(w.shape[1], dtype=w.dtype)
    v = v / v.norm()
    for _ in range(steps):
        v = w.T @ (w @ v)
        if normalise:
            v = v / v.norm()
    return (w @ v).norm() / (1.0 if normalise else 1.0)


def certified_radius(logits, L, root2=True):
    top = logits.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) / ((math.sqrt(2) if root2 else 1.0) * L)


def certify_counts(n_a, n, alpha, sigma, sided=1, abstain="lower"):
    k = n_a.numpy()
    p_a = np.where(k > 0, stats.beta.ppf(alpha / sided, np.maximum(k, 1), n - k + 1), 0.0)
    radius = sigma * stats.norm.ppf(p_a)
    if abstain == "lower":
        radius = np.where(p_a > 0.5, radius, 0.0)
    elif abstain == "point":  # radius and abstention from the point estimate n_a / n instead of the bound
        radius = np.where(k / n > 0.5, sigma * stats.norm.ppf(np.clip(k / n, 0.5, 1)), 0.0)
    elif abstain == "minus one":  # marks abstentions with radius -1
        radius = np.where(p_a > 0.5, radius, -1.0)
    return torch.as_tensor(p_a), torch.as_tensor(radius)


def _kw(fn, **fixed):
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs, **fixed)

    return wrapped


# ------------------------------------------------------------------------------------ wrong implementations
WRONG = {
    "fgsm_step": {
        "no sign": lambda x, g, e: (x + _col(e, x) * g).clamp(0, 1),
        "no clip": lambda x, g, e: x + _col(e, x) * g.sign(),
        "wrong sign": lambda x, g, e: (x - _col(e, x) * g.sign()).clamp(0, 1),
        "scalar eps only": lambda x, g, e: (x + e.view(-1, 1, 1, 1) * g.sign()).clamp(0, 1),
    },
    "project_linf": {
        "ignores the box": lambda z, x, e: z.clamp(-_col(e, z), _col(e, z)),
        "ignores the ball": lambda z, x, e: z.clamp(-x, 1 - x),
        "rescales instead of clamping": lambda z, x, e: (z * _col(e / z.flatten(1).abs().amax(1), z)).clamp(-x, 1 - x),
    },
    "project_l2": {
        "scale-then-clip": lambda z, x, e: (
            z * _col((e / z.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1), z)).clamp(-x, 1 - x),
        "ignores the box": lambda z, x, e: z * _col((e / z.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1), z),
        "batch norm, not per sample": lambda z, x, e: (z * (e.min() / z.norm()).clamp(max=1)).clamp(-x, 1 - x),
        "too few bisection steps": _kw(project_l2, steps=5),
    },
    "pgd_linf": {
        "no random start": _kw(pgd_linf, start=False),
        "no projection": _kw(pgd_linf, proj=False),
        "loss.backward() into the parameters": None,  # filled below
        "gaussian start": None,
    },
    "targeted_fgsm": {
        "wrong sign": _kw(targeted_fgsm, sign=1.0),
        "no clip": lambda m, x, t, e: x - _col(e, x) * _grad(m, x, t).sign(),
    },
    "cw_margin": {
        "no masking": _kw(cw_margin, mask="none"),
        "one-hot masking": _kw(cw_margin, mask="onehot"),
        "wrong sign": _kw(cw_margin, flip=True),
        "ignores kappa": lambda z, y, kappa=0.0: cw_margin(z, y, 0.0),
        "mean over batch": lambda z, y, kappa=0.0: cw_margin(z, y, kappa).mean(),
    },
    "cw_search": {
        "one c shared by the batch": _kw(cw_search, shared=True),
        "keeps the last successful x_adv": _kw(cw_search, keep="last success"),
        "bound updates swapped": _kw(cw_search, bounds="swapped"),
        "keeps the smallest x_adv, successful or not": _kw(cw_search, keep="any"),
        "returns the last x_adv": _kw(cw_search, keep="last"),
        "Python loop over samples": _kw(cw_search, loop=True),
        "bisects with an infinite upper bound": _kw(cw_search, unbounded="bisect"),
        "doubles instead of ×10": _kw(cw_search, unbounded="x2"),
        "hard-coded c_init and search_steps": lambda inner, x, y, c_init=1.0, search_steps=9: cw_search(inner, x, y),
    },
    "deepfool_l2": {
        "no overshoot": _kw(deepfool_l2, where="none"),
        "overshoot on the last step only": _kw(deepfool_l2, where="last"),
    },
    "pgd_at_epoch": {
        "trains on the clean batch": _kw(pgd_at_epoch, adversarial=False),
        "attacks in train mode, the weight gradient leaking": _kw(pgd_at_epoch, eval_mode=False, leak=True),
        "the attack's backward leaks into p.grad (eval mode)": _kw(pgd_at_epoch, leak=True),
        "no projection onto the ball": _kw(pgd_at_epoch, proj=False),
        "predicted labels": _kw(pgd_at_epoch, labels="pred"),
        "no zero_grad: gradients accumulate": _kw(pgd_at_epoch, zero_grad=False),
        "weight step in eval mode": _kw(pgd_at_epoch, restore=False),
        "summed loss": _kw(pgd_at_epoch, reduction="sum"),
        "returns the last loss": _kw(pgd_at_epoch, returns="last"),
    },
    "catastrophic_epoch": {
        "ignores FGSM accuracy": _kw(catastrophic_epoch, use_fgsm=False),
        "1-based epoch": lambda log, collapse=0.1, gap=0.3: (
            None if (e := catastrophic_epoch(log, collapse, gap)) is None else e + 1),
        "last epoch instead of the first": _kw(catastrophic_epoch, last=True),
        "starts at epoch 0": _kw(catastrophic_epoch, first_epoch=0),
        "no tolerance on FGSM accuracy": _kw(catastrophic_epoch, tol=0.0),
        "hard-coded thresholds": lambda log, collapse=0.1, gap=0.3: catastrophic_epoch(log),
        "strict inequalities": _kw(catastrophic_epoch, strict=True),
        "-1 instead of None": lambda log, collapse=0.1, gap=0.3: (
            -1 if (e := catastrophic_epoch(log, collapse, gap)) is None else e),
    },
    "straight_through": {
        "no detach": lambda x, pre: x + (pre(x) - x),
        "the defended forward only": lambda x, pre: pre(x),
        "identity forward": lambda x, pre: x * 1.0,
        "detaches everything": lambda x, pre: pre(x).detach(),
        "true derivative of a smooth g": lambda x, pre: pre(x) if not torch.equal(pre(x), pre(pre(x))) else x + (
            pre(x) - x).detach(),
    },
    "spectral_norm": {
        "no normalisation": _kw(spectral_norm, normalise=False),
        "Frobenius norm": lambda w, steps=100: torch.linalg.matrix_norm(w),
        "too few iterations": lambda w, steps=100: spectral_norm(w, steps=1),
    },
    "certified_radius": {
        "without sqrt(2)": _kw(certified_radius, root2=False),
        "top minus smallest": lambda z, L: (z.amax(1) - z.amin(1)) / (math.sqrt(2) * L),
    },
    "certify_counts": {
        "two-sided bound": _kw(certify_counts, sided=2),
        "never abstains": _kw(certify_counts, abstain="never"),
        "radius from the point estimate": _kw(certify_counts, abstain="point"),
        "abstains with radius -1": _kw(certify_counts, abstain="minus one"),
        "point estimate as p_a": lambda k, n, a, s: (k.double() / n, torch.where(
            k / n > 0.5, s * torch.as_tensor(stats.norm.ppf((k / n).clamp(0.5, 1).numpy())), 0.0)),
    },
}


def _pgd_backward(model, x, y, eps, alpha, steps):
    x_adv = (x + (2 * torch.rand_like(x) - 1) * _col(eps, x)).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        F.cross_entropy(model(x_adv), y).backward()
        x_adv = x + project_linf(x_adv + alpha * x_adv.grad.sign() - x, x, eps)
    return x_adv.detach()


def _pgd_gaussian(model, x, y, eps, alpha, steps):
    x_adv = x + project_linf(torch.randn_like(x) * _col(eps, x), x, eps)
    for _ in range(steps):
        x_adv = x + project_linf(x_adv + alpha * _grad(model, x_adv, y).sign() - x, x, eps)
    return x_adv.detach()


WRONG["pgd_linf"]["loss.backward() into the parameters"] = _pgd_backward
WRONG["pgd_linf"]["gaussian start"] = _pgd_gaussian

REFERENCE = {
    "fgsm_step": fgsm_step,
    "project_linf": project_linf,
    "project_l2": project_l2,
    "pgd_linf": pgd_linf,
    "targeted_fgsm": targeted_fgsm,
    "cw_margin": cw_margin,
    "cw_search": cw_search,
    "deepfool_l2": deepfool_l2,
    "pgd_at_epoch": pgd_at_epoch,
    "catastrophic_epoch": catastrophic_epoch,
    "straight_through": straight_through,
    "spectral_norm": spectral_norm,
    "certified_radius": certified_radius,
    "certify_counts": certify_counts,
}


(
    test_every_task_has_a_reference_and_two_wrong_implementations,
    test_check_passes_on_the_reference,
    test_check_reports_a_stub_as_todo,
    test_check_fails_on_a_wrong_implementation,
) = check_tests(REFERENCE, WRONG, sections={"04a", "04b"})


def test_every_section_with_checks_has_a_test_file():
    for section, module in checks.SECTIONS.items():
        if section in ("04a", "04b"):
            continue  # tested here
        if any(task.section == section for task in checks.TASKS.values()):
            assert (ROOT / "tests" / f"test_checks_{module}.py").exists(), f"section {section}: no test file"


def test_an_exception_is_reported_without_traceback(capsys):
    def broken(x, grad, eps):
        return x + eps * grad.sign()  # (N,) eps does not broadcast against (N, C, H, W)

    assert checks.check_fgsm_step(broken) is False
    out = capsys.readouterr().out
    assert out.startswith("[FAIL] FGSM step: your function raised RuntimeError") and "eps.view" in out
    assert "Traceback" not in out


def test_specific_hints(capsys):
    checks.check_fgsm_step(WRONG["fgsm_step"]["no clip"])
    assert "leaves the [0, 1] box" in capsys.readouterr().out
    checks.check_fgsm_step(WRONG["fgsm_step"]["no sign"])
    assert "raw gradient" in capsys.readouterr().out
    checks.check_project_l2(WRONG["project_l2"]["scale-then-clip"])
    assert "scale-then-clip" in capsys.readouterr().out
    checks.check_targeted_fgsm(WRONG["targeted_fgsm"]["wrong sign"])
    assert "DEcrease the loss of the target" in capsys.readouterr().out
    checks.check_pgd_linf(WRONG["pgd_linf"]["no random start"])
    assert "no random start" in capsys.readouterr().out
    checks.check_cw_margin(WRONG["cw_margin"]["no masking"])
    assert "-inf" in capsys.readouterr().out
    for label, needle in [("one c shared by the batch", "same c"),
                          ("keeps the last successful x_adv", "last successful"),
                          ("bound updates swapped", "swapped"),
                          ("keeps the smallest x_adv, successful or not", "did not succeed"),
                          ("returns the last x_adv", "last search step"), ("Python loop over samples", "Python loop"),
                          ("bisects with an infinite upper bound", "multiply c by 10"),
                          ("doubles instead of ×10", "not 10·c"),
                          ("hard-coded c_init and search_steps", "use the arguments")]:
        checks.check_cw_search(WRONG["cw_search"][label])
        assert needle in capsys.readouterr().out, label
    checks.check_deepfool_l2(WRONG["deepfool_l2"]["overshoot on the last step only"])
    assert "last step only" in capsys.readouterr().out
    for label, needle in [("trains on the clean batch", "clean batch"),
                          ("attacks in train mode, the weight gradient leaking", "train mode during the attack"),
                          ("the attack's backward leaks into p.grad (eval mode)", "leaked into p.grad"),
                          ("no projection onto the ball", "project back onto the ε-ball"),
                          ("predicted labels", "true labels"),
                          ("no zero_grad: gradients accumulate", "add up from step to step"),
                          ("weight step in eval mode", "the weight step ran in eval mode"),
                          ("summed loss", "summed loss"),
                          ("returns the last loss", "last batch only")]:
        checks.check_pgd_at_epoch(WRONG["pgd_at_epoch"][label])
        assert needle in capsys.readouterr().out, label
    for label, needle in [("ignores FGSM accuracy", "divergence"), ("1-based epoch", "1-based"),
                          ("last epoch instead of the first", "FIRST epoch"),
                          ("starts at epoch 0", "no previous epoch"),
                          ("no tolerance on FGSM accuracy", "tolerance"), ("hard-coded thresholds", "thresholds"),
                          ("strict inequalities", "equality"), ("-1 instead of None", "return None")]:
        checks.check_catastrophic_epoch(WRONG["catastrophic_epoch"][label])
        assert needle in capsys.readouterr().out, label
    checks.check_straight_through(WRONG["straight_through"]["no detach"])
    assert "gradient through your function is zero" in capsys.readouterr().out
    checks.check_straight_through(WRONG["straight_through"]["identity forward"])
    assert "returns x itself" in capsys.readouterr().out
    checks.check_straight_through(WRONG["straight_through"]["true derivative of a smooth g"])
    assert "not that of the identity" in capsys.readouterr().out
    checks.check_spectral_norm(WRONG["spectral_norm"]["Frobenius norm"])
    assert "Frobenius" in capsys.readouterr().out
    checks.check_certify_counts(WRONG["certify_counts"]["two-sided bound"])
    assert "two-sided" in capsys.readouterr().out


def test_cw_search_accepts_other_correct_bookkeeping(capsys):
    """1e10 as the "unbounded" marker (Carlini and Wagner's code), c in float32, squared norms, masked assignment."""
    assert checks.check_cw_search(cw_search_1e10) is True
    assert checks.check_cw_search(_kw(cw_search, dtype=torch.float32)) is True
    assert capsys.readouterr().out.count("[PASS]") == 2


def test_cw_search_case_tells_the_last_success_from_the_best():
    """The check's stand-in optimiser makes the mistakes visible: the perturbation is not monotone in c, so the last
    successful x_adv differs from the smallest one, and the smallest x_adv overall is often unsuccessful."""
    from advlab.checks.attacks import _CWInner

    x = torch.rand(8, 1, 3, 3, dtype=torch.float64) * 0.4 + 0.3
    thresholds = [0.003, 0.37, 1.0, 2.6, 37.0, 930.0, math.inf, 0.081]
    y = torch.zeros(8, dtype=torch.long)
    best = cw_search(_CWInner(x, thresholds, 22), x, y)
    last = cw_search(_CWInner(x, thresholds, 22), x, y, keep="last success")
    assert (best - last).flatten(1).abs().amax(1).gt(0).sum() >= 2
    assert torch.equal(best[6], x[6])  # never succeeds: unchanged
    inner = _CWInner(x, thresholds, 22)
    cw_search(inner, x, y)
    cs = torch.stack(inner.calls)  # (steps, N): per-sample c; the unreachable sample grows ×10 every step
    assert cs.shape == (9, 8) and torch.allclose(cs[:, 6], 10.0 ** torch.arange(9, dtype=torch.float64))
    assert len({round(v, 9) for v in cs[-1].tolist()}) == 8


def test_pgd_at_epoch_fails_clean_training_on_mnist(capsys):
    """The MNIST stage on its own: right on the check's float64 linear model, clean training on MNIST (float32)."""

    def adversarial_only_in_float64(model, batches, optimizer, eps, alpha, steps):
        dtype = batches[0][0].dtype
        return pgd_at_epoch(model, batches, optimizer, eps, alpha, steps, adversarial=dtype == torch.float64)

    assert checks.check_pgd_at_epoch(adversarial_only_in_float64) is False
    out = capsys.readouterr().out
    assert out.startswith("[FAIL] ") and "1,000 MNIST digits" in out and "the standard MLP" in out


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_pgd_linf(pgd_linf)
    assert torch.equal(torch.rand(3), expected)


def test_a_missing_return_gets_a_hint(capsys):
    assert checks.check_project_linf(lambda z, x, eps: None) is False
    assert "forget the `return`" in capsys.readouterr().out


def test_a_non_function_and_an_unknown_name(capsys):
    assert checks.check_fgsm_step(None) is False
    assert capsys.readouterr().out.startswith("[FAIL] FGSM step: expected your function")
    with pytest.raises(KeyError, match="fgsm_step"):
        checks.check("nope", fgsm_step)


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    # drop IPython magics (the setup cell's %pip only runs where advlab is missing)
    return ["\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!"))) for src in cells]


EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_exercise_notebook_runs_and_every_check_says_todo(path, capsys):
    namespace: dict = {"__name__": "__main__"}
    for src in _code_cells(path):
        exec(compile(src, str(path), "exec"), namespace)  # any exception fails the test
    out = capsys.readouterr().out
    assert "[PASS]" not in out and "[FAIL]" not in out and "Traceback" not in out
    calls = sum(len(re.findall(r"\bcheck_\w+\(", src)) for src in _code_cells(path))
    assert out.count("[TODO]") == calls >= 4


def test_exercise_notebooks_exist():
    assert SOLUTIONS, "solutions/ is empty"
    assert [p.name for p in EXERCISES] == [p.name for p in SOLUTIONS], "run python -m advlab.course generate"
    assert not course.drift(ROOT / "solutions", ROOT / "exercises")


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_solution_notebook_layout_and_stored_outputs(solution):
    path = solution.relative_to(ROOT).as_posix()
    nb = json.loads((ROOT / path).read_text(encoding="utf-8"))
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and course.badges(path) in first
    assert cells[1]["cell_type"] == "code" and "".join(cells[1]["source"]) == course.SETUP_CELL
    check_cells = [c for c in cells if c["cell_type"] == "code" and re.search(r"\bcheck_\w+\(", "".join(c["source"]))
                   and "from advlab.checks" not in "".join(c["source"])]
    assert 4 <= len(check_cells) <= 8, "each solution notebook has 4 to 8 tasks"
    for cell in check_cells:
        src = "".join(cell["source"])
        assert src.startswith("# NBVAL_CHECK_OUTPUT"), src
        text = "".join("".join(o.get("text", "")) for o in cell["outputs"])
        assert text.startswith("[PASS] ") and "[FAIL]" not in text, src
    solution_cells = [c for c in cells if "### BEGIN SOLUTION" in "".join(c["source"])]
    assert len(solution_cells) == len(check_cells)
