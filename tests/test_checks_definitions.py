"""Checks of section ② (advlab.checks.definitions): pass on reference solutions, fail with a specific hint on plausible
mistakes, report stubs as [TODO]."""

from __future__ import annotations

import math

import torch
from check_harness import check_tests

from advlab import checks


def _col(v, like):
    return v.reshape(-1, *([1] * (like.ndim - 1)))


# ----------------------------------------------------------------------------------------- reference solutions
def lp_norms(delta, p):
    flat = delta.flatten(1)
    if p == math.inf:
        return flat.abs().amax(1)
    return flat.abs().pow(p).sum(1).pow(1.0 / p)


def in_ball(x, x_adv, eps, p, tol=1e-6, strict=False, box=True, batch_eps=False, use_tol=True):
    d = lp_norms(x_adv - x, p)
    e = (eps.max() if batch_eps else eps) + (tol if use_tol else 0.0)
    close = d < e if strict else d <= e
    if not box:
        return close
    return close & ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)


def random_ball(x, eps, p, generator, radius="root", use_gen=True, kind="gauss"):
    gen = generator if use_gen else None
    n, d = len(x), x[0].numel()
    if p == math.inf:
        if kind == "clamped gaussian":
            u = torch.randn((n, d), generator=gen, dtype=x.dtype).clamp(-1, 1)
        elif kind == "positive":
            u = torch.rand((n, d), generator=gen, dtype=x.dtype)
        else:
            u = 2 * torch.rand((n, d), generator=gen, dtype=x.dtype) - 1
        return (u * eps[:, None]).view_as(x)
    if kind == "cube":
        z = 2 * torch.rand((n, d), generator=gen, dtype=x.dtype) - 1
        z = z * (1 / z.norm(dim=1, keepdim=True)).clamp(max=1)
        return (z * eps[:, None]).view_as(x)
    z = torch.randn((n, d), generator=gen, dtype=x.dtype)
    z = z / z.norm(dim=1, keepdim=True)
    u = torch.rand((n, 1), generator=gen, dtype=x.dtype)
    r = {"root": u.pow(1.0 / d), "linear": u, "sphere": torch.ones_like(u)}[radius]
    return (z * r * eps[:, None]).view_as(x)


def _root(x, eps, g):
    """L2 sample whose radius uses the dimension of the whole batch: U^(1/(N·d))."""
    n, d = len(x), x[0].numel()
    z = torch.randn((n, d), generator=g, dtype=x.dtype)
    r = torch.rand((n, 1), generator=g, dtype=x.dtype).pow(1.0 / x.numel())
    return (z / z.norm(dim=1, keepdim=True) * r * eps[:, None]).view_as(x)


def _pred(h, x):
    return h(x).argmax(1)


def practical_adversarial(h, true_h, x, x_adv, eps, p, check_x=True, against="clean", ball=True):
    ok = _pred(h, x) == true_h(x) if check_x else torch.ones(len(x), dtype=torch.bool)
    if against == "clean":
        changed = _pred(h, x_adv) != _pred(h, x)
    elif against == "label":
        changed = _pred(h, x_adv) != true_h(x)
    else:  # the true label of x̃: that is the consistent definition
        changed = _pred(h, x_adv) != true_h(x_adv)
    inside = in_ball(x, x_adv, eps, p) if ball else torch.ones(len(x), dtype=torch.bool)
    return inside & ok & changed


def consistent_adversarial(h, true_h, x, x_adv, eps, p, check_x=True, against="truth of x_adv", box=True):
    ok = _pred(h, x) == true_h(x) if check_x else torch.ones(len(x), dtype=torch.bool)
    if against == "truth of x_adv":
        wrong = _pred(h, x_adv) != true_h(x_adv)
    elif against == "label of x":
        wrong = _pred(h, x_adv) != true_h(x)
    else:  # the truth changed
        wrong = true_h(x_adv) != true_h(x)
    return in_ball(x, x_adv, eps, p, box=box) & ok & wrong


def inconsistency(h, true_h, x, x_adv, eps, p, mode="ok"):
    prac = practical_adversarial(h, true_h, x, x_adv, eps, p)
    cons = consistent_adversarial(h, true_h, x, x_adv, eps, p)
    a, b = int((prac & ~cons).sum()), int((cons & ~prac).sum())
    if mode == "swapped":
        return b, a
    if mode == "totals":
        return int(prac.sum()), int(cons.sum())
    if mode == "xor":
        return int((prac ^ cons).sum()), int((prac ^ cons).sum())
    if mode == "tensors":
        return prac & ~cons, cons & ~prac
    return a, b


def _kw(fn, **fixed):
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs, **fixed)

    return wrapped


# ------------------------------------------------------------------------------------ wrong implementations
WRONG = {
    "lp_norms": {
        "no abs": lambda d, p: d.flatten(1).amax(1) if p == math.inf else d.flatten(1).pow(p).sum(1).pow(1 / p)
        if p == 2 else d.flatten(1).sum(1),
        "squared L2": lambda d, p: d.flatten(1).square().sum(1) if p == 2 else lp_norms(d, p),
        "norm of the whole batch": lambda d, p: torch.linalg.vector_norm(d, ord=p),
        "last dimension only": lambda d, p: torch.linalg.vector_norm(d, ord=p, dim=-1),
    },
    "in_ball": {
        "strict <": _kw(in_ball, strict=True),
        "ignores the box": _kw(in_ball, box=False),
        "one eps for the batch": _kw(in_ball, batch_eps=True),
        "always the L2 norm": lambda x, xa, e, p, tol=1e-6: in_ball(x, xa, e, 2.0, tol),
        "ignores tol": _kw(in_ball, use_tol=False),
        "fixed tolerance": lambda x, xa, e, p, tol=1e-6: in_ball(x, xa, e, p, 1e-6),
    },
    "random_ball": {
        "uniform radius": _kw(random_ball, radius="linear"),
        "on the sphere": _kw(random_ball, radius="sphere"),
        "cube squeezed into the ball": _kw(random_ball, kind="cube"),
        "ignores the generator": _kw(random_ball, use_gen=False),
        "clamped Gaussian in L∞": lambda x, e, p, g: random_ball(x, e, p, g, kind="clamped gaussian"
                                                                   if p == math.inf else "gauss"),
        "only positive in L∞": lambda x, e, p, g: random_ball(x, e, p, g, kind="positive" if p == math.inf
                                                                else "gauss"),
        "clipped to the box": lambda x, e, p, g: (x + random_ball(x, e, p, g)).clamp(0, 1) - x,
        "one eps for the batch": lambda x, e, p, g: random_ball(x, torch.full_like(e, float(e.max())), p, g),
        "d of the whole batch": lambda x, e, p, g: random_ball(x, e, p, g) if p == math.inf else _root(x, e, g),
    },
    "practical_adversarial": {
        "x not checked": _kw(practical_adversarial, check_x=False),
        "ĥ(x̃) ≠ y without checking x": _kw(practical_adversarial, check_x=False, against="label"),
        "compares with h*(x̃)": _kw(practical_adversarial, against="truth"),
        "ignores the ball": _kw(practical_adversarial, ball=False),
    },
    "consistent_adversarial": {
        "compares with the label of x": _kw(consistent_adversarial, against="label of x"),
        "x not checked": _kw(consistent_adversarial, check_x=False),
        "the truth changed": _kw(consistent_adversarial, against="truth changed"),
        "ignores the box": _kw(consistent_adversarial, box=False),
    },
    "inconsistency": {
        "swapped": _kw(inconsistency, mode="swapped"),
        "totals": _kw(inconsistency, mode="totals"),
        "symmetric difference twice": _kw(inconsistency, mode="xor"),
        "returns the masks": _kw(inconsistency, mode="tensors"),
    },
}

REFERENCE = {
    "lp_norms": lp_norms,
    "in_ball": in_ball,
    "random_ball": random_ball,
    "practical_adversarial": practical_adversarial,
    "consistent_adversarial": consistent_adversarial,
    "inconsistency": inconsistency,
}

(
    test_every_task_has_a_reference_and_two_wrong_implementations,
    test_check_passes_on_the_reference,
    test_check_reports_a_stub_as_todo,
    test_check_fails_on_a_wrong_implementation,
) = check_tests(REFERENCE, WRONG, sections={"02"})


def _out(capsys, check, fn):
    assert check(fn) is False
    return capsys.readouterr().out


def test_specific_hints(capsys):
    assert ".abs()" in _out(capsys, checks.check_lp_norms, WRONG["lp_norms"]["no abs"])
    assert "square root" in _out(capsys, checks.check_lp_norms, WRONG["lp_norms"]["squared L2"])
    assert "flatten(1)" in _out(capsys, checks.check_lp_norms, WRONG["lp_norms"]["last dimension only"])
    assert "not <" in _out(capsys, checks.check_in_ball, WRONG["in_ball"]["strict <"])
    assert "above 1" in _out(capsys, checks.check_in_ball, WRONG["in_ball"]["ignores the box"])
    assert "its own ε" in _out(capsys, checks.check_in_ball, WRONG["in_ball"]["one eps for the batch"])
    assert "the L2 ball" in _out(capsys, checks.check_in_ball, WRONG["in_ball"]["always the L2 norm"])
    assert "eps + tol" in _out(capsys, checks.check_in_ball, WRONG["in_ball"]["ignores tol"])
    assert "here 0" in _out(capsys, checks.check_in_ball, WRONG["in_ball"]["fixed tolerance"])
    assert "U^(1/d)" in _out(capsys, checks.check_random_ball, WRONG["random_ball"]["uniform radius"])
    assert "on the sphere" in _out(capsys, checks.check_random_ball, WRONG["random_ball"]["on the sphere"])
    assert "ONE sample" in _out(capsys, checks.check_random_ball, WRONG["random_ball"]["d of the whole batch"])
    assert "cube" in _out(capsys, checks.check_random_ball, WRONG["random_ball"]["cube squeezed into the ball"])
    assert "generator=generator" in _out(capsys, checks.check_random_ball,
                                         WRONG["random_ball"]["ignores the generator"])
    assert "clamped Gaussian" in _out(capsys, checks.check_random_ball, WRONG["random_ball"]["clamped Gaussian in L∞"])
    assert "clipped" in _out(capsys, checks.check_random_ball, WRONG["random_ball"]["clipped to the box"])
    assert "correct prediction" in _out(capsys, checks.check_practical_adversarial,
                                        WRONG["practical_adversarial"]["x not checked"])
    assert "ĥ(x̃) with ĥ(x)" in _out(capsys, checks.check_practical_adversarial,
                                   WRONG["practical_adversarial"]["compares with h*(x̃)"])
    assert "in_ball" in _out(capsys, checks.check_practical_adversarial,
                             WRONG["practical_adversarial"]["ignores the ball"])
    assert "TRUE label of x̃" in _out(capsys, checks.check_consistent_adversarial,
                                     WRONG["consistent_adversarial"]["compares with the label of x"])
    assert "correct prediction" in _out(capsys, checks.check_consistent_adversarial,
                                        WRONG["consistent_adversarial"]["x not checked"])
    assert "swapped" in _out(capsys, checks.check_inconsistency, WRONG["inconsistency"]["swapped"])
    assert "disagreements" in _out(capsys, checks.check_inconsistency, WRONG["inconsistency"]["totals"])
    assert "not a number" in _out(capsys, checks.check_inconsistency, WRONG["inconsistency"]["returns the masks"])


def test_the_checks_cases_are_what_they_claim():
    from advlab.checks import definitions as d

    for p in d.NORMS:
        x, x_adv, eps, kinds = d._ball_cases(p)
        inside = d._in_ball(x, x_adv, eps, p).tolist()
        assert inside == [k in ("inside", "on the sphere", "eps = 0, x̃ = x", "rounding") for k in kinds]
        exact = d._in_ball(x, x_adv, eps, p, tol=0.0).tolist()
        assert exact == [k in ("inside", "on the sphere", "eps = 0, x̃ = x") for k in kinds]
        on = [i for i, k in enumerate(kinds) if k == "on the sphere"]
        assert torch.equal(d._norms((x_adv - x)[on], p), eps[on]), "exactly on the sphere"
    h = d._ShiftedCircle()
    for k, p in enumerate(d.NORMS):
        x, xa, eps, kinds = d._world(p, 40 + k)
        prac = d._practical(h, d._true_h, x, xa, eps, p)
        cons = d._consistent(h, d._true_h, x, xa, eps, p)
        for kind, want in (("both", (True, True)), ("practical only", (True, False)),
                           ("consistent only", (False, True)), ("neither", (False, False)),
                           ("x misclassified", (False, False)), ("outside the ball", (False, False)),
                           ("outside the box", (False, False)), ("diagonal", (p == math.inf,) * 2)):
            for i in (i for i, c in enumerate(kinds) if c == kind):
                assert (bool(prac[i]), bool(cons[i])) == want, (kind, p)
        x, xa, eps, _ = d._world(p, 51 + k)
        prac = d._practical(h, d._true_h, x, xa, eps, p)
        cons = d._consistent(h, d._true_h, x, xa, eps, p)
        a, b = int((prac & ~cons).sum()), int((cons & ~prac).sum())
        assert a > 0 and b > 0 and a != b


def test_float32_solutions_pass(capsys):
    """A learner working in float32 (e.g. on x.float()) must still pass."""
    assert checks.check_lp_norms(lambda d, p: lp_norms(d.float(), p))
    assert checks.check_in_ball(lambda x, xa, e, p, tol=1e-6: in_ball(x.float(), xa.float(), e.float(), p, tol))
    capsys.readouterr()


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_random_ball(random_ball)
    checks.check_inconsistency(inconsistency)
    assert torch.equal(torch.rand(3), expected)
