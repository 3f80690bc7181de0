"""Checks for the tasks of section ③ (solutions/03_properties): random noise of the same norm, a batched line
scan of the loss, the transferability matrix, principal components, the energy of perturbations per component and
the adversarial-spheres distance from a point to the nearest error in a cap of given measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.checks._core import (
    Mismatch,
    _close,
    _gen,
    _images,
    _linear,
    _mlp,
    _shape,
    _tensor,
    _unchanged,
    register,
)

_NORMS = {"L2": 2.0, "Linf": math.inf}


def _norms(v: Tensor, p: float) -> Tensor:
    return torch.linalg.vector_norm(v.flatten(1).double(), ord=p, dim=1)


def _orthogonal(d: int, g: torch.Generator) -> Tensor:
    """A random (d, d) orthogonal matrix (float64)."""
    q, r = torch.linalg.qr(torch.randn((d, d), generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


# ------------------------------------------------------------------------------------------- same-norm noise
def _noise_norms(fn: Callable, delta: Tensor, norm: str, seed: int) -> Tensor:
    d0 = delta.clone()
    out = _tensor(fn(delta, norm, _gen(seed)), "same_norm_noise")
    _unchanged([d0], [delta], "delta")
    _shape(out, delta.shape, "the noise", "return noise shaped like delta (N, *): one perturbation per sample.")
    if not bool(torch.isfinite(out).all()):
        raise Mismatch(f"the {norm} noise contains NaN or inf.",
                       "a zero perturbation has norm 0: guard the division by the norm of the random direction "
                       "with .clamp_min(1e-12), and the result is then 0.")
    p = _NORMS[norm]
    want, got = _norms(delta, p), _norms(out, p)
    if bool(((got - want).abs() <= 1e-5 * want + 1e-9).all()):
        return out
    other = _NORMS["Linf" if norm == "L2" else "L2"]
    want_other = _norms(delta, other)
    if bool(((_norms(out, other) - want_other).abs() <= 1e-5 * want_other + 1e-9).all()):
        raise Mismatch(f"with norm = {norm!r} your noise matches the {'L∞' if norm == 'L2' else 'L2'} norm of δ.",
                       "measure both δ and the noise in the norm you were asked for: L2 = .norm(dim=1), "
                       "L∞ = .abs().amax(1) of the flattened (N, D) tensors.")
    if bool((got <= want * (1 + 1e-6) + 1e-9).all()) and bool((got < want * 0.999).any()):
        raise Mismatch(f"some {norm} noise is shorter than δ: it lies inside the ball, not on its surface.",
                       "rescale every random direction to exactly the radius r of its own δ (divide by its norm, "
                       "multiply by r); do not sample inside the ball.")
    if len(set(round(v, 6) for v in got.tolist())) == 1 and len(set(round(v, 6) for v in want.tolist())) > 1:
        raise Mismatch(f"all noise vectors have the same {norm} norm, but the δ's have different norms.",
                       "compute one radius per sample: r = delta.flatten(1).norm(dim=1) (L2) or "
                       ".abs().amax(1) (L∞), reshaped to (N, 1, ...) so that it broadcasts.")
    i = int((got - want).abs().argmax())
    raise Mismatch(f"sample {i}: ||noise||_{'∞' if norm == 'Linf' else '2'} = {got[i].item():.4g}, but its δ has "
                   f"norm {want[i].item():.4g}.",
                   "each noise vector must have exactly the norm of its own δ: a unit random direction times r, per "
                   "sample.")


@register("same_norm_noise", "random noise of the same norm", "03",
          "use torch.randn / torch.rand with generator=generator and the shape and dtype of delta; compute the "
          "norms per sample on delta.flatten(1).")
def check_same_norm_noise(fn: Callable) -> str:
    """``same_norm_noise(delta, norm, generator) -> noise`` (N, *): uniform on the L2 sphere / L∞ cube surface whose
    radius is each sample's own ``||δ||_p``; ``norm`` is ``"L2"`` or ``"Linf"``; a zero δ gives zero noise."""
    g = _gen(30)
    scale = torch.tensor([0.01, 0.1, 1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    delta = torch.randn((6, 1, 4, 4), generator=g, dtype=torch.float64) * scale.view(-1, 1, 1, 1)
    delta[2] = 0.0  # a zero perturbation: zero noise, no NaN
    delta[4] = 0.0
    delta[4, 0, 1, 2] = 0.7  # all of δ on one pixel: the noise must still spread over every pixel
    for norm in ("L2", "Linf"):
        out = _noise_norms(fn, delta, norm, 31)
        if not bool((out[2] == 0).all()):
            raise Mismatch("a zero δ got non-zero noise.", "the radius is 0, so the noise must be 0 too.")
        if int((out[4].abs() > 1e-12).sum()) <= 1 or _close(out.abs(), delta.abs(), 1e-9):
            raise Mismatch("your noise copies δ (or permutes its pixels) instead of drawing a new direction.",
                           "draw a fresh random direction over all d pixels; only the norm comes from δ.")
    flat = delta.flatten(1)[:4]
    out = _noise_norms(fn, flat, "L2", 31)  # (N, D) input works too
    again = _tensor(fn(flat, "L2", _gen(31)), "same_norm_noise")
    if not _close(out, again, 1e-12):
        raise Mismatch("two calls with identically seeded generators give different noise.",
                       "draw every random number from the generator you are given: torch.randn(..., "
                       "generator=generator), so that experiments are reproducible.")
    # statistics of the direction on a large batch
    n, d = 400, 64
    big = torch.randn((n, d), generator=g, dtype=torch.float64) * (0.2 + torch.rand((n, 1), generator=g,
                                                                                     dtype=torch.float64))
    u = _noise_norms(fn, big, "L2", 33) / _norms(big, 2)[:, None]
    cos_next = (u[:-1] * u[1:]).sum(1).abs().mean().item()
    cos_delta = (u * big / _norms(big, 2)[:, None]).sum(1).abs().mean().item()
    z = u * math.sqrt(d)
    tail = (z.abs() > 2).double().mean().item()
    if cos_next > 0.5:
        raise Mismatch("the L2 noise of different samples points in the same direction.",
                       "draw an independent direction for every sample: torch.randn(delta.shape, ...), not one "
                       "direction for the whole batch.")
    if cos_delta > 0.5:
        raise Mismatch("the L2 noise points along δ.", "the direction must be random, independent of δ.")
    if not 0.03 < tail < 0.065 or abs(z.mean().item()) > 0.05:
        raise Mismatch(f"the L2 directions are not uniform on the sphere ({100 * tail:.1f}% of the scaled coordinates "
                       "exceed 2 in absolute value; a uniform direction gives about 4.6%).",
                       "a standard Gaussian vector divided by its norm is uniform on the sphere; sign vectors or "
                       "uniform cube samples are not.")
    v = _noise_norms(fn, big, "Linf", 34) / _norms(big, math.inf)[:, None]
    a = v.abs()
    if bool((a > 1 - 1e-9).double().mean() > 0.5):
        raise Mismatch("every L∞ noise coordinate is ±r: you sample only the corners of the cube.",
                       "uniform on the cube surface: draw u uniform in [-1, 1]^d, divide by its largest |u_i| "
                       "(or set one random coordinate to ±1), multiply by r.")
    if abs(a.mean().item() - 0.5) > 0.03 or abs(v.mean().item()) > 0.03:
        raise Mismatch(f"the L∞ noise is not uniform on the cube surface (mean |noise_i| / r = {a.mean():.2f}, "
                       "expected about 0.5).",
                       "draw u uniform in [-1, 1]^d (2·torch.rand - 1), then divide by its largest |u_i| and multiply "
                       "by r; a rescaled Gaussian crowds the coordinates near 0.")
    return "exact per-sample L2 and L∞ norms, zero δ → zero noise, fresh uniform directions, reproducible."


# ------------------------------------------------------------------------------------------------- line scan
class _Counter(nn.Module):
    """Identity layer that counts forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x


def _scan(model: nn.Module, x: Tensor, y: Tensor, d: Tensor, eps: Tensor, clip: bool = True) -> Tensor:
    cols = []
    for e in eps:
        xp = x + e * d
        cols.append(F.cross_entropy(model(xp.clamp(0, 1) if clip else xp), y, reduction="none"))
    return torch.stack(cols, 1).detach()


@register("line_scan", "loss along a direction", "03",
          "build the points clip(x + ε_s·d, 0, 1) for each ε_s and evaluate the per-sample cross-entropy "
          "(reduction='none') of all samples at once.")
def check_line_scan(fn: Callable) -> str:
    """``line_scan(model, x, y, direction, eps) -> (N, S)``: CE(h(clip(x + ε_s·d, 0, 1)), y) per sample and ε_s."""
    g = _gen(40)
    counter = _Counter()
    net = nn.Sequential(counter, _mlp(9, 4, g, scale=3.0)).eval()
    x = _images(6, (1, 3, 3), g, saturate=0.4)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    direction = torch.randn(x.shape, generator=g, dtype=x.dtype) * 0.7  # neither unit norm nor a sign vector
    eps = torch.tensor([-0.3, -0.1, 0.0, 0.05, 0.2, 0.5, 1.0], dtype=x.dtype)
    lin = _linear(5, 3, g)
    xf = _images(4, (5,), g)
    cases = [(net, x, y, direction, eps), (lin, xf, torch.tensor([2, 0, 1, 1]), torch.sign(torch.randn(
        xf.shape, generator=g, dtype=xf.dtype)), torch.tensor([0.0, 0.25], dtype=xf.dtype))]
    for model, xx, yy, dd, ee in cases:
        before = [xx.clone(), yy.clone(), dd.clone(), ee.clone()]
        counter.calls = 0
        out = _tensor(fn(model, xx, yy, dd, ee), "line_scan")
        calls = counter.calls
        _unchanged(before, [xx, yy, dd, ee], "x, y, direction or eps")
        n, s = len(xx), len(ee)
        if tuple(out.shape) == (s, n):
            raise Mismatch(f"your scan has shape {tuple(out.shape)} = (S, N); expected (N, S) = {(n, s)}.",
                           "one row per sample and one column per step size: stack the per-ε losses along dim=1.")
        _shape(out, (n, s), "the scan",
               "return the per-sample loss for every ε, shaped (N, S): use reduction='none', no mean over the batch.")
        ref = _scan(model, xx, yy, dd, ee)
        if _close(out, ref, 1e-6):
            if model is net and calls > s:
                raise Mismatch(f"the model was called {calls} times for {s} step sizes: you loop over "
                               "samples.", "evaluate the whole batch at every ε (or all ε at once): no Python loop "
                               "over the samples.")
            continue
        if _close(out, _scan(model, xx, yy, dd, ee, clip=False), 1e-6):
            raise Mismatch("the points leave the [0, 1] box.", "clip every point: (x + ε·direction).clamp(0, 1).")
        with torch.no_grad():
            pred = model(xx).argmax(1)
        if _close(out, _scan(model, xx, pred, dd, ee), 1e-6):
            raise Mismatch("you use the model's prediction as the label.", "the loss is L(y, h(x')) with the TRUE "
                           "label y passed to the function.")
        unit = dd / dd.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (dd.ndim - 1))
        if _close(out, _scan(model, xx, yy, unit, ee), 1e-6) or _close(out, _scan(model, xx, yy, dd.sign(), ee), 1e-6):
            raise Mismatch("you changed the direction (normalised it or took its sign).",
                           "step along the direction exactly as given: x + ε·direction.")
        zero = ee == 0
        with torch.no_grad():
            clean = F.cross_entropy(model(xx), yy, reduction="none")
        if bool(zero.any()) and not _close(out[:, zero], clean[:, None].expand(-1, int(zero.sum())), 1e-6):
            raise Mismatch("at ε = 0 your scan is not the loss of the clean input.",
                           "the point at step ε is x + ε·direction; at ε = 0 that is x itself, with the true label y.")
        raise Mismatch("your losses differ from CE(h(clip(x + ε·d, 0, 1)), y).",
                       "for each ε: x_eps = (x + eps_s * direction).clamp(0, 1); F.cross_entropy(model(x_eps), y, "
                       "reduction='none'); stack the columns.")
    return "per-sample losses (N, S) at clip(x + ε·d), negative ε and ε = 0 included, batched over the samples."


# ---------------------------------------------------------------------------------------- transfer matrix
def _transfer(models: list[nn.Module], x: Tensor, y: Tensor, x_adv: list[Tensor]) -> Tensor:
    with torch.no_grad():
        keep = torch.stack([m(x).argmax(1) == y for m in models]).all(0)
        return torch.stack([torch.stack([(m(xa[keep]).argmax(1) != y[keep]).double().mean() for m in models])
                            for xa in x_adv])


def _transfer_variant(models: list[nn.Module], x: Tensor, y: Tensor, x_adv: list[Tensor], keep: str) -> Tensor:
    """Wrong filters: ``keep`` is none | source | target | pair."""
    with torch.no_grad():
        right = torch.stack([m(x).argmax(1) == y for m in models])
        rows = []
        for i, xa in enumerate(x_adv):
            row = []
            for j, m in enumerate(models):
                mask = {"none": torch.ones_like(right[0]), "source": right[i], "target": right[j],
                        "pair": right[i] & right[j]}[keep]
                row.append((m(xa[mask]).argmax(1) != y[mask]).double().mean())
            rows.append(torch.stack(row))
        return torch.stack(rows)


def _transfer_case(g: torch.Generator) -> tuple[list[nn.Module], Tensor, Tensor, list[Tensor]]:
    d, k, n = 6, 3, 60
    truth = _linear(d, k, g, scale=2.0)
    x = torch.rand((n, d), generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = truth(x).argmax(1)
    models = []
    for noise in (0.8, 1.2, 1.6):
        m = _linear(d, k, g, scale=2.0)
        with torch.no_grad():
            m[-1].weight.copy_(truth[-1].weight + noise * torch.randn((k, d), generator=g, dtype=torch.float64))
            m[-1].bias.copy_(truth[-1].bias)
        models.append(m)
    x_adv = []
    for i, m in enumerate(models):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(m(xg), y, reduction="sum"), xg)
        step = (0.05 + 0.3 * torch.rand((n, 1), generator=g, dtype=x.dtype)) * (1 + i)
        x_adv.append((x + step * grad.sign()).clamp(0, 1).detach())
    return models, x, y, x_adv


@register("transfer_matrix", "transferability matrix", "03",
          "models and x_adv are lists of length M; x_adv[i] was crafted on models[i]; return an (M, M) tensor.")
def check_transfer_matrix(fn: Callable) -> str:
    """``transfer_matrix(models, x, y, x_adv) -> (M, M)``: [i, j] = among the inputs that every model classifies
    correctly, the fraction whose x_adv[i] (crafted on source i) is misclassified by target j."""
    g = _gen(50)
    models, x, y, x_adv = _transfer_case(g)
    dead = [x_adv[0], x_adv[1], x.clone()]  # the third attack failed everywhere: its row is 0
    for advs in (x_adv, dead):
        before = [x.clone(), y.clone()] + [a.clone() for a in advs]
        out = _tensor(fn(models, x, y, advs), "transfer_matrix")
        _unchanged(before, [x, y, *advs], "x, y or x_adv")
        _shape(out, (3, 3), "the matrix", "one row per source model and one column per target model: (M, M).")
        ref = _transfer(models, x, y, advs)
        if _close(out, ref, 1e-6):
            continue
        if _close(out, ref.T, 1e-6):
            raise Mismatch("your matrix is transposed.", "rows are SOURCES (the model x_adv[i] was crafted on), "
                           "columns are TARGETS (the model that classifies it): out[i, j] uses x_adv[i] and "
                           "models[j].")
        if _close(out, 1 - ref, 1e-6):
            raise Mismatch("you count the examples that are still classified correctly.",
                           "a target is fooled when its prediction on x_adv[i] differs from y.")
        if _close(out, _transfer_variant(models, x, y, advs, "none"), 1e-6):
            raise Mismatch("you count every input, also those some model already gets wrong on clean data.",
                           "keep only the inputs that EVERY model classifies correctly (one mask for the whole "
                           "matrix), so that 'fooled' always means 'a right answer became wrong'.")
        for keep, what in (("source", "the source"), ("target", "the target"), ("pair", "source and target")):
            if _close(out, _transfer_variant(models, x, y, advs, keep), 1e-6):
                raise Mismatch(f"you keep the inputs that {what} classif{'y' if keep == 'pair' else 'ies'} "
                               "correctly.", "use one mask for the whole matrix: the inputs that EVERY model "
                               "classifies correctly; then all entries are rates over the same inputs.")
        diag = ref.diagonal()
        if bool((diag > 0).all()) and _close(out, ref / diag[:, None], 1e-6):
            raise Mismatch("you divide each row by the source's own success rate (the diagonal is all 1).",
                           "return the plain rate over the kept inputs: the diagonal is the white-box success rate "
                           "of each model.")
        raise Mismatch("your matrix differs from the transfer rates.",
                       "mask = inputs every model gets right; out[i, j] = mean over the mask of "
                       "(models[j](x_adv[i]).argmax(1) != y).")
    return "rows = sources, columns = targets, one correctly-classified mask, white-box rates on the diagonal."


# -------------------------------------------------------------------------------------- principal components
def _pca_case(g: torch.Generator, n: int = 300) -> Tensor:
    q = _orthogonal(5, g)
    scales = torch.tensor([3.0, 2.0, 1.2, 0.6, 0.25], dtype=torch.float64)
    z = torch.randn((n, 5), generator=g, dtype=torch.float64) * scales
    x = torch.cat([z @ q.T + 0.5, torch.full((n, 1), 0.3, dtype=torch.float64)], 1)  # one constant pixel
    return x.view(n, 1, 2, 3)


@register("principal_components", "principal components", "03",
          "flatten to (N, D), subtract the mean, covariance = xcᵀ xc / (N - 1), torch.linalg.eigh, then reorder.")
def check_principal_components(fn: Callable) -> str:
    """``principal_components(x) -> (components (D, D) rows, variance (D,))``, by decreasing variance."""
    from advlab.properties import pca

    g = _gen(60)
    for x in (_pca_case(g), _pca_case(g, 40).flatten(1)):
        x0 = x.clone()
        out = fn(x)
        _unchanged([x0], [x], "x")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise Mismatch(f"principal_components returned a {type(out).__name__}, not (components, variance).",
                           "return a tuple: components (D, D), one direction per row, and variance (D,).")
        comps, var = _tensor(out[0], "components").double(), _tensor(out[1], "variance").double()
        d = x[0].numel()
        _shape(comps, (d, d), "components", "one principal direction per row: (D, D) with D = pixels per image.")
        _shape(var, (d,), "variance", "one variance per component: (D,).")
        ref = pca(x)
        rvar, rcomp = ref.variance.double(), ref.components.double()
        n = len(x)
        if not _close(var, rvar, 1e-8):
            if _close(var, rvar.flip(0), 1e-8):
                raise Mismatch("your variances are in increasing order.", "torch.linalg.eigh returns ascending "
                               "eigenvalues: reorder both outputs by decreasing variance (e.g. .flip(0)).")
            if _close(var, rvar * (n - 1) / n, 1e-8):
                raise Mismatch("your variances are divided by N.", "use the sample covariance, divided by N - 1 "
                               "(as torch.cov does).")
            flat = x.flatten(1)
            raw = torch.linalg.eigvalsh(flat.T @ flat / (n - 1)).flip(0)
            if _close(var, raw, 1e-6):
                raise Mismatch("your variances come from data that were not centred.",
                               "subtract the mean image first: xc = x - x.mean(0).")
            sv = torch.linalg.svdvals(flat - flat.mean(0))
            if _close(var, sv, 1e-6) or _close(var, sv / math.sqrt(n - 1), 1e-6):
                raise Mismatch("your variances are singular values.",
                               "the variance along a component is the squared singular value divided by N - 1.")
            raise Mismatch("your variances differ from the eigenvalues of the sample covariance.",
                           "variance = eigenvalues of xcᵀ xc / (N - 1), sorted in decreasing order.")
        if not _close(comps @ comps.T, torch.eye(d, dtype=torch.float64), 1e-6):
            if _close(comps.T @ comps, torch.eye(d, dtype=torch.float64), 1e-6):
                raise Mismatch("your components are not orthonormal rows.", "eigh returns eigenvectors as COLUMNS: "
                               "transpose them (vec.T) so that row k is direction k.")
            raise Mismatch("your components are not orthonormal.", "use the eigenvectors of the symmetric covariance "
                           "matrix (torch.linalg.eigh), one unit vector per row.")
        top = 5  # the constant pixel makes the last component's direction well defined too, but keep to 5
        overlap = (comps[:top] @ rcomp[:top].T).abs()
        if not _close(overlap, torch.eye(top, dtype=torch.float64), 1e-5):
            if _close((comps.T[:top] @ rcomp[:top].T).abs(), torch.eye(top, dtype=torch.float64), 1e-5):
                raise Mismatch("your components are the columns of the eigenvector matrix.",
                               "eigh returns eigenvectors as COLUMNS: return vec.T, reordered like the variances.")
            raise Mismatch("your components are not the principal directions in the order of the variances.",
                           "reorder the eigenvectors with the same permutation as the eigenvalues (largest first).")
    return "directions (up to sign) and variances of the sample covariance, largest first, incl. a constant pixel."


# ------------------------------------------------------------------------------------- energy per component
@register("energy_per_component", "energy per principal component", "03",
          "flatten delta to (N, D); coefficients = flat @ components.T, shape (N, K).")
def check_energy_per_component(fn: Callable) -> str:
    """``energy_per_component(delta, components) -> (N, K)``: (u_kᵀ δ)² / ||δ||² per sample; zero δ gives zeros."""
    g = _gen(70)
    q = _orthogonal(12, g).T.contiguous()  # rows: an orthonormal basis of R^12
    delta = torch.randn((5, 1, 3, 4), generator=g, dtype=torch.float64) * torch.tensor(
        [0.1, 1.0, 3.0, 1.0, 0.5], dtype=torch.float64).view(-1, 1, 1, 1)
    delta[3] = 0.0
    for comps in (q, q[:5]):
        before = [delta.clone(), comps.clone()]
        out = _tensor(fn(delta, comps), "energy_per_component")
        _unchanged(before, [delta, comps], "delta or components")
        _shape(out, (len(delta), len(comps)), "the energies", "one fraction per sample and component: (N, K).")
        if not bool(torch.isfinite(out).all()):
            raise Mismatch("a zero perturbation gives NaN.", "divide by ||δ||² clamped away from 0 "
                           "(.clamp_min(1e-12)): a zero δ has zero energy everywhere.")
        flat = delta.flatten(1)
        coeff = flat @ comps.T
        total = flat.pow(2).sum(1, keepdim=True)
        ref = coeff.pow(2) / total.clamp_min(1e-30)
        if _close(out, ref, 1e-9):
            continue
        if len(comps) < flat.shape[1] and _close(out, coeff.pow(2) / coeff.pow(2).sum(1, keepdim=True).clamp_min(
                1e-30), 1e-9):
            raise Mismatch("you normalise by the energy in the K given components, not by ||δ||².",
                           "the fraction of the WHOLE perturbation: (u_kᵀ δ)² / ||δ||²; with fewer than D components "
                           "the rows then sum to less than 1.")
        if _close(out, coeff.abs() / total.sqrt().clamp_min(1e-30), 1e-9) or \
                _close(out, coeff / total.sqrt().clamp_min(1e-30), 1e-9) or \
                _close(out, coeff.abs() / total.clamp_min(1e-30), 1e-9):
            raise Mismatch("your energies are not squared projections.",
                           "energy is squared: (u_kᵀ δ)² / ||δ||₂², with ||δ||₂² = sum of squares of δ.")
        if _close(out, coeff.pow(2) / total.sum(), 1e-9):
            raise Mismatch("you normalise by the energy of the whole batch.",
                           "normalise every perturbation by its own ||δ||²: .sum(1, keepdim=True).")
        if len(comps) == flat.shape[1] and _close(out, (flat @ comps).pow(2) / total.clamp_min(1e-30), 1e-9):
            raise Mismatch("you project on the columns of components.",
                           "the directions are the ROWS of components: coefficients = delta_flat @ components.T.")
        raise Mismatch("your energies differ from (u_kᵀ δ)² / ||δ||².",
                       "coefficients = delta.flatten(1) @ components.T; square; divide by the squared norm per sample.")
    return "(u_kᵀ δ)² / ||δ||² for K < D and K = D components, per sample, zero δ → zeros."


# -------------------------------------------------------------------------------------- adversarial spheres
def _cap_cos(mu: float, d: int, upper: bool = True, shape: float | None = None) -> float:
    """cos of the angle of the cap around u that holds a fraction mu of the sphere S^{d-1}: (1 + cos)/2 ~ Beta."""
    from scipy import stats

    a = (d - 1) / 2 if shape is None else shape
    return 2 * float(stats.beta.isf(mu, a, a) if upper else stats.beta.ppf(mu, a, a)) - 1


def _cap_distance(x: Tensor, u: Tensor, t: float, chord: bool = True, own_radius: bool = True,
                  clamp: bool = True) -> Tensor:
    r = x.norm(dim=1)
    angle = torch.arccos(((x @ u) / r).clamp(-1, 1))
    gap = angle - math.acos(max(-1.0, min(1.0, t)))
    gap = gap.clamp_min(0) if clamp else gap
    radius = r if own_radius else torch.ones_like(r)
    return 2 * radius * torch.sin(gap / 2) if chord else radius * gap


@register("cap_distance", "adversarial spheres: distance to the nearest error", "03",
          "x is (N, d), u is (d,): cos θ = (x @ u) / ||x||; scipy.stats.beta.isf(mu, a, a) is the upper-tail quantile.")
def check_cap_distance(fn: Callable) -> str:
    """``cap_distance(x, u, mu) -> (N,)``: the L2 distance from each x to the nearest point of its own sphere
    (radius ||x||) in the cap around u that holds a fraction mu of the sphere (Gilmer et al.'s error set)."""
    from scipy import stats

    g = _gen(71)
    cases = []
    for d, mu, radii in [(3, 0.1, (1.0, 1.3)), (20, 0.01, (1.0, 1.3)), (7, 0.5, (1.0,)), (500, 0.3, (1.3,)),
                         (5, 0.0, (1.0, 1.3)), (10, 1.0, (1.0,))]:
        u = torch.randn(d, generator=g, dtype=torch.float64)
        u = u / u.norm()
        x = torch.randn((8, d), generator=g, dtype=torch.float64)
        x[0] = u  # the centre of the cap
        x[1] = -u  # the farthest point from it
        x[2] = u + 0.05 * x[2] / x[2].norm()  # inside the cap (unless mu = 0)
        r = torch.tensor([radii[i % len(radii)] for i in range(len(x))], dtype=torch.float64)
        cases.append((d, mu, x / x.norm(dim=1, keepdim=True) * r[:, None], u))
    for d, mu, x, u in cases:
        before = [x.clone(), u.clone()]
        out = _tensor(fn(x, u, mu), "cap_distance").double()
        _unchanged(before, [x, u], "x or u")
        _shape(out, (len(x),), "the distances", "one distance per point, shaped (N,).")
        t = _cap_cos(mu, d)
        ref = _cap_distance(x, u, t)
        if _close(out, ref, 1e-6):
            continue
        where = f"in d = {d} with mu = {mu}"
        if _close(out[2:], ref[2:], 1e-6) and _close(out[0:1], ref[0:1], 1e-6):
            raise Mismatch(f"{where} your distance is wrong only at the point opposite the cap, x = −r·u.",
                           "there every direction orthogonal to u leads to the cap equally fast, so a construction "
                           "that normalises the part of x orthogonal to u divides 0 by 0; the angle formula "
                           "2·r·sin((θ − θ_t)/2) with θ = π has no such problem.")
        if not bool(torch.isfinite(out).all()):
            raise Mismatch(f"{where} a distance is NaN or inf.",
                           "clamp cos θ to [-1, 1] before torch.arccos (rounding can push it just past ±1).")
        if bool((out < -1e-9).any()):
            raise Mismatch(f"{where} a distance is negative.",
                           "a point inside the cap is already an error: its distance is 0 (clamp the angle gap at 0).")
        if _close(out, (t * x.norm(dim=1) - x @ u).clamp_min(0), 1e-6):
            raise Mismatch(f"{where} you return the distance to the plane u·x = t·||x||, which leaves the sphere.",
                           "the nearest error is ON the sphere: walk along the great circle through x and u; the "
                           "straight-line distance to the point at angle θ_t from u is 2·r·sin((θ − θ_t)/2).")
        if _close(out, _cap_distance(x, u, t, chord=False), 1e-6):
            raise Mismatch(f"{where} you return the arc length r·(θ − θ_t) along the sphere.",
                           "the threat model measures the straight-line L2 distance ||x' − x||₂: the chord "
                           "2·r·sin((θ − θ_t)/2), a little shorter than the arc.")
        if _close(out, _cap_distance(x, u, t, own_radius=False), 1e-6):
            raise Mismatch(f"{where} your distances ignore the radius of each point's sphere.",
                           "each point lies on its own sphere of radius r = ||x|| (1 or 1.3): scale the chord by r.")
        if _close(out, _cap_distance(x, u, _cap_cos(mu, d, upper=False)), 1e-6):
            raise Mismatch(f"{where} your cap holds a fraction 1 − mu of the sphere, not mu.",
                           "the cap {cos θ >= t} is the UPPER tail: t = 2·beta.isf(mu, a, a) − 1 "
                           "(or beta.ppf(1 − mu, a, a)).")
        if _close(out, _cap_distance(x, u, _cap_cos(mu, d, shape=d / 2)), 1e-6):
            raise Mismatch(f"{where} your cap has the wrong size: Beta(d/2, d/2) is the law for the sphere in "
                           "d + 1 dimensions.",
                           "for x uniform on the sphere in R^d, (1 + cos θ)/2 ~ Beta((d − 1)/2, (d − 1)/2).")
        if 0 < mu < 1 and _close(out, _cap_distance(x, u, float(stats.norm.isf(mu)) / math.sqrt(d)), 1e-6):
            raise Mismatch(f"{where} you use the Gaussian approximation cos θ ≈ N(0, 1/d) of the cap.",
                           "it is only right for large d: use the exact law (1 + cos θ)/2 ~ "
                           "Beta((d − 1)/2, (d − 1)/2).")
        raise Mismatch(f"{where} your distances differ from 2·r·sin(max(θ − θ_t, 0)/2).",
                       "θ = arccos(u·x / ||x||); cos θ_t = t = 2·beta.isf(mu, a, a) − 1 with a = (d − 1)/2; "
                       "0 inside the cap.")
    return ("matches 2·r·sin(max(θ − θ_t, 0)/2) with the exact cap of measure mu (d = 3 … 500, radii 1 and 1.3, "
            "mu = 0 and 1, points at u, at −u and inside the cap).")
