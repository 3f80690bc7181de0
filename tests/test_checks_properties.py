"""Exercise checks of section ③ (solutions/03_properties): pass on references, fail with a hint on mistakes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from check_harness import check_tests
from scipy import stats

from advlab import checks


def _flat_norms(delta, norm):
    flat = delta.flatten(1)
    return flat.norm(dim=1) if norm == "L2" else flat.abs().amax(1)


def _col(v, like):
    return v.reshape(-1, *([1] * (like.ndim - 1)))


# ----------------------------------------------------------------------------------------- reference solutions
def same_norm_noise(delta, norm, generator=None, how="right"):
    r = _col(_flat_norms(delta, norm), delta)
    if how == "batch radius":
        r = torch.full_like(r, float(_flat_norms(delta, norm).mean()))
    if norm == "L2" or how == "gaussian everywhere":
        g = torch.randn(delta.shape, generator=generator, dtype=delta.dtype)
        if how == "shared direction":
            g = g[:1].expand_as(g)
        scale = _col(_flat_norms(g, "L2" if how != "gaussian everywhere" else norm).clamp_min(1e-12), g)
        return g / scale * r
    u = 2 * torch.rand(delta.shape, generator=generator, dtype=delta.dtype) - 1
    if how == "corners":
        u = u.sign()
    return u / _col(_flat_norms(u, "Linf").clamp_min(1e-12), u) * r


def same_norm_noise_face(delta, norm, generator=None):
    """The other correct L∞ recipe: one random coordinate set to ±r, the others uniform in [-r, r]."""
    if norm == "L2":
        return same_norm_noise(delta, norm, generator)
    n, d = len(delta), delta[0].numel()
    r = _flat_norms(delta, norm)[:, None]
    u = (2 * torch.rand((n, d), generator=generator, dtype=delta.dtype) - 1) * r
    face = torch.randint(0, d, (n, 1), generator=generator)
    sign = torch.where(torch.rand((n, 1), generator=generator) < 0.5, -1.0, 1.0).to(delta.dtype)
    return u.scatter(1, face, sign * r).view_as(delta)


def line_scan(model, x, y, direction, eps, clip=True, label="true", loop=False, unit=False):
    if unit:
        direction = direction / _col(direction.flatten(1).norm(dim=1).clamp_min(1e-12), direction)
    target = model(x).argmax(1).detach() if label == "pred" else y
    if loop:
        return torch.stack([torch.stack([F.cross_entropy(model((x[i:i + 1] + e * direction[i:i + 1]).clamp(0, 1)),
                                                         target[i:i + 1]) for e in eps]) for i in range(len(x))])
    cols = []
    for e in eps:
        xp = x + e * direction
        cols.append(F.cross_entropy(model(xp.clamp(0, 1) if clip else xp), target, reduction="none"))
    return torch.stack(cols, 1).detach()


def transfer_matrix(models, x, y, x_adv, mask="all", transpose=False):
    with torch.no_grad():
        right = torch.stack([m(x).argmax(1) == y for m in models])
        rows = []
        for i, xa in enumerate(x_adv):
            row = []
            for j, m in enumerate(models):
                keep = {"all": right.all(0), "none": torch.ones_like(right[0]), "source": right[i],
                        "pair": right[i] & right[j]}[mask]
                row.append((m(xa[keep]).argmax(1) != y[keep]).float().mean())
            rows.append(torch.stack(row))
        out = torch.stack(rows)
    return out.T if transpose else out


def principal_components(x, center=True, order="desc", rows=True, ddof=1):
    flat = x.flatten(1).double()
    xc = flat - flat.mean(0) if center else flat
    var, vec = torch.linalg.eigh(xc.T @ xc / (len(flat) - ddof))
    if order == "desc":
        var, vec = var.flip(0), vec.flip(1)
    return (vec.T if rows else vec), var


def energy_per_component(delta, components, norm_by="delta", square=True):
    flat = delta.flatten(1)
    coeff = flat @ components.T
    energy = coeff.pow(2) if square else coeff.abs()
    if norm_by == "delta":
        total = flat.pow(2).sum(1, keepdim=True)
    elif norm_by == "given":
        total = coeff.pow(2).sum(1, keepdim=True)
    elif norm_by == "batch":
        total = flat.pow(2).sum()
    else:  # "noclamp"
        return energy / flat.pow(2).sum(1, keepdim=True)
    return energy / total.clamp_min(1e-12)


def cap_distance(x, u, mu, tail="upper", shape="d-1", how="chord", radius="own", clamp=True):
    d = x.shape[1]
    a = (d - 1) / 2 if shape == "d-1" else d / 2
    if shape == "gaussian":
        t = float(stats.norm.isf(mu)) / math.sqrt(d) if 0 < mu < 1 else (1.0 if mu == 0 else -1.0)
    else:
        t = 2 * float(stats.beta.isf(mu, a, a) if tail == "upper" else stats.beta.ppf(mu, a, a)) - 1
    r = x.norm(dim=1)
    if how == "plane":  # the distance to the plane u·x = t·r: leaves the sphere
        return (t * r - x @ u).clamp_min(0)
    gap = torch.arccos((x @ u / r).clamp(-1, 1)) - math.acos(min(1.0, max(-1.0, t)))
    gap = gap.clamp_min(0) if clamp else gap
    r = r if radius == "own" else torch.ones_like(r)
    return 2 * r * torch.sin(gap / 2) if how == "chord" else r * gap


def cap_distance_nearest_point(x, u, mu):
    """Another correct solution: build the nearest point of the cap and measure ||x - p||."""
    d = x.shape[1]
    t = 2 * stats.beta.ppf(1 - mu, (d - 1) / 2, (d - 1) / 2) - 1
    r = x.norm(dim=1, keepdim=True)
    along = x @ u
    v = x - along[:, None] * u  # the part of x orthogonal to u
    e = torch.zeros_like(u)
    e[int(u.abs().argmin())] = 1.0
    other = e - (e @ u) * u  # at x = -r·u any direction orthogonal to u will do
    v = torch.where(v.norm(dim=1, keepdim=True) > 1e-9 * r, v, other)
    v = v / v.norm(dim=1, keepdim=True)
    s = math.sqrt(max(0.0, 1 - t * t))
    nearest = r * (t * u + s * v)
    inside = along >= t * r[:, 0]
    return torch.where(inside, torch.zeros_like(along), (x - nearest).norm(dim=1))


def cap_distance_breaks_at_the_antipode(x, u, mu):
    d = x.shape[1]
    t = 2 * stats.beta.isf(mu, (d - 1) / 2, (d - 1) / 2) - 1
    r = x.norm(dim=1, keepdim=True)
    along = x @ u
    v = x - along[:, None] * u
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)  # 0 at x = -r·u
    nearest = r * (t * u + math.sqrt(max(0.0, 1 - t * t)) * v)
    return torch.where(along >= t * r[:, 0], torch.zeros_like(along), (x - nearest).norm(dim=1))


def _kw(fn, **fixed):
    def wrapped(*args, **kwargs):
        return fn(*args, **kwargs, **fixed)

    return wrapped


REFERENCE = {
    "same_norm_noise": same_norm_noise,
    "line_scan": line_scan,
    "transfer_matrix": transfer_matrix,
    "principal_components": principal_components,
    "energy_per_component": energy_per_component,
    "cap_distance": cap_distance,
}

WRONG = {
    "same_norm_noise": {
        "L∞ corners only (random signs)": _kw(same_norm_noise, how="corners"),
        "L∞ as a rescaled Gaussian": _kw(same_norm_noise, how="gaussian everywhere"),
        "one radius for the whole batch": _kw(same_norm_noise, how="batch radius"),
        "one direction for the whole batch": _kw(same_norm_noise, how="shared direction"),
        "inside the ball, not on the sphere": lambda d, n, g=None: same_norm_noise(d, n, g) * torch.rand(
            (len(d),) + (1,) * (d.ndim - 1), generator=g, dtype=d.dtype),
        "ignores the generator": lambda d, n, g=None: same_norm_noise(d, n, None),
        "returns δ itself": lambda d, n, g=None: d.clone(),
        "L2 norm for both norms": lambda d, n, g=None: same_norm_noise(d, "L2", g),
    },
    "line_scan": {
        "no clipping": _kw(line_scan, clip=False),
        "predicted labels": _kw(line_scan, label="pred"),
        "unit-norm direction": _kw(line_scan, unit=True),
        "mean over the batch": lambda m, x, y, d, e: line_scan(m, x, y, d, e).mean(0),
        "transposed (S, N)": lambda m, x, y, d, e: line_scan(m, x, y, d, e).T,
        "loop over samples": _kw(line_scan, loop=True),
    },
    "transfer_matrix": {
        "transposed": _kw(transfer_matrix, transpose=True),
        "no correctness filter": _kw(transfer_matrix, mask="none"),
        "filter on the source only": _kw(transfer_matrix, mask="source"),
        "filter on source and target": _kw(transfer_matrix, mask="pair"),
        "fraction still correct": lambda m, x, y, a: 1 - transfer_matrix(m, x, y, a),
        "conditional on source success": lambda m, x, y, a: transfer_matrix(m, x, y, a)
        / transfer_matrix(m, x, y, a).diagonal().clamp_min(1e-12)[:, None],
    },
    "principal_components": {
        "not centred": _kw(principal_components, center=False),
        "ascending order": _kw(principal_components, order="asc"),
        "eigenvectors as columns": _kw(principal_components, rows=False),
        "divided by N": _kw(principal_components, ddof=0),
        "singular values as variances": lambda x: (principal_components(x)[0], torch.linalg.svdvals(
            x.flatten(1).double() - x.flatten(1).double().mean(0))),
    },
    "energy_per_component": {
        "normalised over the given components": _kw(energy_per_component, norm_by="given"),
        "not squared": _kw(energy_per_component, square=False),
        "normalised over the batch": _kw(energy_per_component, norm_by="batch"),
        "NaN for a zero perturbation": _kw(energy_per_component, norm_by="noclamp"),
        "projects on the columns": lambda d, c: (d.flatten(1) @ c).pow(2)
        / d.flatten(1).pow(2).sum(1, keepdim=True).clamp_min(1e-12),
    },
    "cap_distance": {
        "distance to the plane of the cap": _kw(cap_distance, how="plane"),
        "arc length instead of the L2 distance": _kw(cap_distance, how="arc"),
        "the lower tail (a cap of measure 1 − mu)": _kw(cap_distance, tail="lower"),
        "Beta(d/2, d/2)": _kw(cap_distance, shape="d"),
        "the Gaussian approximation of the cap": _kw(cap_distance, shape="gaussian"),
        "unit spheres only": _kw(cap_distance, radius="unit"),
        "negative distances inside the cap": _kw(cap_distance, clamp=False),
        "nearest point built with 0/0 at x = -r·u": cap_distance_breaks_at_the_antipode,
    },
}

(
    test_every_task_has_a_reference_and_two_wrong_implementations,
    test_check_passes_on_the_reference,
    test_check_reports_a_stub_as_todo,
    test_check_fails_on_a_wrong_implementation,
) = check_tests(REFERENCE, WRONG, sections={"03"})


def test_the_other_correct_linf_recipe_passes(capsys):
    assert checks.check_same_norm_noise(same_norm_noise_face) is True
    assert capsys.readouterr().out.startswith("[PASS]")


def test_the_nearest_point_recipe_for_the_cap_passes(capsys):
    assert checks.check_cap_distance(cap_distance_nearest_point) is True
    assert capsys.readouterr().out.startswith("[PASS]")


def test_specific_hints(capsys):
    def hint_for(check, wrong):
        check(wrong)
        return capsys.readouterr().out

    w = WRONG["same_norm_noise"]
    assert "corners" in hint_for(checks.check_same_norm_noise, w["L∞ corners only (random signs)"])
    assert "rescaled Gaussian" in hint_for(checks.check_same_norm_noise, w["L∞ as a rescaled Gaussian"])
    assert "one radius per sample" in hint_for(checks.check_same_norm_noise, w["one radius for the whole batch"])
    assert "same direction" in hint_for(checks.check_same_norm_noise, w["one direction for the whole batch"])
    assert "inside the ball" in hint_for(checks.check_same_norm_noise, w["inside the ball, not on the sphere"])
    assert "generator=generator" in hint_for(checks.check_same_norm_noise, w["ignores the generator"])
    assert "copies δ" in hint_for(checks.check_same_norm_noise, w["returns δ itself"])
    assert "matches the L2 norm" in hint_for(checks.check_same_norm_noise, w["L2 norm for both norms"])
    w = WRONG["line_scan"]
    assert "leave the [0, 1] box" in hint_for(checks.check_line_scan, w["no clipping"])
    assert "TRUE" in hint_for(checks.check_line_scan, w["predicted labels"])
    assert "normalised it" in hint_for(checks.check_line_scan, w["unit-norm direction"])
    assert "reduction='none'" in hint_for(checks.check_line_scan, w["mean over the batch"])
    assert "(S, N)" in hint_for(checks.check_line_scan, w["transposed (S, N)"])
    assert "loop over samples" in hint_for(checks.check_line_scan, w["loop over samples"])
    w = WRONG["transfer_matrix"]
    assert "transposed" in hint_for(checks.check_transfer_matrix, w["transposed"])
    assert "EVERY model" in hint_for(checks.check_transfer_matrix, w["no correctness filter"])
    assert "the source classifies" in hint_for(checks.check_transfer_matrix, w["filter on the source only"])
    assert "source and target classify" in hint_for(checks.check_transfer_matrix, w["filter on source and target"])
    assert "still classified correctly" in hint_for(checks.check_transfer_matrix, w["fraction still correct"])
    assert "white-box success" in hint_for(checks.check_transfer_matrix, w["conditional on source success"])
    w = WRONG["principal_components"]
    assert "not centred" in hint_for(checks.check_principal_components, w["not centred"])
    assert "increasing order" in hint_for(checks.check_principal_components, w["ascending order"])
    assert "COLUMNS" in hint_for(checks.check_principal_components, w["eigenvectors as columns"])
    assert "N - 1" in hint_for(checks.check_principal_components, w["divided by N"])
    assert "singular values" in hint_for(checks.check_principal_components, w["singular values as variances"])
    w = WRONG["energy_per_component"]
    given = w["normalised over the given components"]
    assert "K given components" in hint_for(checks.check_energy_per_component, given)
    assert "not squared" in hint_for(checks.check_energy_per_component, w["not squared"])
    assert "whole batch" in hint_for(checks.check_energy_per_component, w["normalised over the batch"])
    assert "NaN" in hint_for(checks.check_energy_per_component, w["NaN for a zero perturbation"])
    assert "ROWS" in hint_for(checks.check_energy_per_component, w["projects on the columns"])
    w = WRONG["cap_distance"]
    assert "leaves the sphere" in hint_for(checks.check_cap_distance, w["distance to the plane of the cap"])
    assert "arc length" in hint_for(checks.check_cap_distance, w["arc length instead of the L2 distance"])
    assert "1 − mu" in hint_for(checks.check_cap_distance, w["the lower tail (a cap of measure 1 − mu)"])
    assert "d + 1 dimensions" in hint_for(checks.check_cap_distance, w["Beta(d/2, d/2)"])
    assert "Gaussian approximation" in hint_for(checks.check_cap_distance, w["the Gaussian approximation of the cap"])
    assert "own sphere" in hint_for(checks.check_cap_distance, w["unit spheres only"])
    assert "negative" in hint_for(checks.check_cap_distance, w["negative distances inside the cap"])
    assert "opposite the cap" in hint_for(checks.check_cap_distance, w["nearest point built with 0/0 at x = -r·u"])


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    checks.check_same_norm_noise(same_norm_noise)
    assert torch.equal(torch.rand(3), expected)
