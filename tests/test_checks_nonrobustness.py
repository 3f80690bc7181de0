"""Checks of section ① (solutions/01_nonrobustness): pass on references, fail with specific hints on plausible
mistakes, [TODO] on stubs."""

from __future__ import annotations

import math

import torch
from check_harness import check_tests

from advlab import checks
from advlab.checks import nonrobustness as nr


# ----------------------------------------------------------------------------------------- reference solutions
def gaussian_noise(x, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)


def translate(x, dx, dy):
    n, _, h, w = x.shape
    src_r = torch.arange(h)[None, :] - dy[:, None]
    src_c = torch.arange(w)[None, :] - dx[:, None]
    inside = ((src_r >= 0) & (src_r < h))[:, None, :, None] & ((src_c >= 0) & (src_c < w))[:, None, None, :]
    rows, cols = src_r.clamp(0, h - 1)[:, :, None], src_c.clamp(0, w - 1)[:, None, :]
    gathered = x[torch.arange(n)[:, None, None], :, rows, cols]
    return gathered.permute(0, 3, 1, 2) * inside


def auroc(score_in, score_out):
    d = score_in[:, None] - score_out[None, :]
    return ((d > 0).double().mean() + 0.5 * (d == 0).double().mean()).item()


def flip_eps(w, b, x):
    return (x @ w + b).abs() / w.abs().sum()


def flip_eps_box(w, b, x, steps=60):
    s = x @ w + b
    direction = -s.sign()[:, None] * w.sign()
    room = torch.where(direction > 0, 1 - x, torch.where(direction < 0, x, 0.0))
    a = w.abs() * (direction != 0)

    def reach(eps):
        return (a * torch.minimum(eps[:, None], room)).sum(1)

    lo, hi = torch.zeros_like(s), torch.ones_like(s)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = reach(mid) >= s.abs()
        lo, hi = torch.where(ok, lo, mid), torch.where(ok, mid, hi)
    out = torch.where(reach(torch.ones_like(s)) >= s.abs(), hi, math.inf)
    return torch.where(s == 0, 0.0, out)


def apply_pixels(x, pixels):
    out = x.clone()
    rows, cols = pixels[..., 0].round().long(), pixels[..., 1].round().long()
    out[torch.arange(len(x))[:, None], :, rows, cols] = pixels[..., 2:].to(x.dtype)
    return out


REFERENCE = {
    "gaussian_noise": gaussian_noise,
    "translate": translate,
    "auroc": auroc,
    "flip_eps": flip_eps,
    "flip_eps_box": flip_eps_box,
    "apply_pixels": apply_pixels,
}


# ------------------------------------------------------------------------------------ wrong implementations
def _noise_global(x, sigma, seed):
    return (x + sigma * torch.randn_like(x)).clamp(0, 1)


def _noise_manual_seed(x, sigma, seed):
    torch.manual_seed(seed)
    return (x + sigma * torch.randn_like(x)).clamp(0, 1)


def _noise_unseeded(x, sigma, seed):
    g = torch.Generator()  # forgot .manual_seed(seed): the same noise for every seed
    return (x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)).clamp(0, 1)


def _noise_uniform(x, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1)).clamp(0, 1)


def _noise_rescaled(x, sigma, seed):
    g = torch.Generator().manual_seed(seed)
    z = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
    lo, hi = z.amin(), z.amax()
    return (z - lo) / (hi - lo)  # min-max normalisation instead of clipping


def _roll(x, dx, dy):
    return torch.stack([torch.roll(x[i], (int(dy[i]), int(dx[i])), (1, 2)) for i in range(len(x))])


def _first_shift(x, dx, dy):
    return translate(x, dx[:1].expand(len(x)), dy[:1].expand(len(x)))


def _pairwise_positions(score_in, score_out):
    return (score_in > score_out).double().mean().item()  # matched positions, not all pairs


def _flip_box_bisect_short(w, b, x):
    return flip_eps_box(w, b, x, steps=8)


def _flip_box_no_inf(w, b, x):
    out = flip_eps_box(w, b, x)
    return torch.where(torch.isinf(out), 1.0, out)


def _flip_box_drop_saturated(w, b, x):
    s = x @ w + b
    direction = -s.sign()[:, None] * w.sign()
    room = torch.where(direction > 0, 1 - x, torch.where(direction < 0, x, 0.0))
    return s.abs() / (w.abs() * (room > 0)).sum(1)


def _pixels_truncated(x, pixels):
    out = x.clone()
    rows, cols = pixels[..., 0].long(), pixels[..., 1].long()
    out[torch.arange(len(x))[:, None], :, rows, cols] = pixels[..., 2:]
    return out


def _pixels_swapped(x, pixels):
    out = x.clone()
    rows, cols = pixels[..., 0].round().long(), pixels[..., 1].round().long()
    out[torch.arange(len(x))[:, None], :, cols, rows] = pixels[..., 2:]
    return out


def _pixels_in_place(x, pixels):
    rows, cols = pixels[..., 0].round().long(), pixels[..., 1].round().long()
    x[torch.arange(len(x))[:, None], :, rows, cols] = pixels[..., 2:]
    return x


def _pixels_added(x, pixels):
    out = x.clone()
    rows, cols = pixels[..., 0].round().long(), pixels[..., 1].round().long()
    idx = torch.arange(len(x))[:, None]
    out[idx, :, rows, cols] = (out[idx, :, rows, cols] + pixels[..., 2:]).clamp(0, 1)
    return out


def _pixels_first_only(x, pixels):
    return apply_pixels(x, pixels[:, :1])


def _pixels_channel0(x, pixels):
    out = x.clone()
    rows, cols = pixels[..., 0].round().long(), pixels[..., 1].round().long()
    out[torch.arange(len(x))[:, None], 0, rows, cols] = pixels[..., 2]
    return out


WRONG = {
    "gaussian_noise": {
        "no clip": lambda x, s, seed: x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed),
                                                          dtype=x.dtype),
        "global RNG": _noise_global,
        "reseeds the global RNG": _noise_manual_seed,
        "generator not seeded": _noise_unseeded,
        "sigma squared": lambda x, s, seed: gaussian_noise(x, s * s, seed),
        "uniform noise": _noise_uniform,
        "rescales instead of clipping": _noise_rescaled,
    },
    "translate": {
        "torch.roll wraps around": _roll,
        "axes swapped": lambda x, dx, dy: translate(x, dy, dx),
        "opposite direction": lambda x, dx, dy: translate(x, -dx, -dy),
        "one shift for the batch": _first_shift,
    },
    "auroc": {
        "ties count 0": lambda a, b: (a[:, None] > b[None, :]).double().mean().item(),
        "ties count 1": lambda a, b: (a[:, None] >= b[None, :]).double().mean().item(),
        "reversed": lambda a, b: auroc(b, a),
        "matched positions": _pairwise_positions,
        "per-row vector": lambda a, b: (a[:, None] > b[None, :]).double().mean(1),
    },
    "flip_eps": {
        "L2 norm of w": lambda w, b, x: (x @ w + b).abs() / w.norm(),
        "no abs": lambda w, b, x: (x @ w + b) / w.abs().sum(),
        "no bias": lambda w, b, x: (x @ w).abs() / w.abs().sum(),
    },
    "flip_eps_box": {
        "ignores the box": flip_eps,
        "never inf": _flip_box_no_inf,
        "drops saturated coordinates": _flip_box_drop_saturated,
        "too few bisection steps": _flip_box_bisect_short,
    },
    "apply_pixels": {
        "truncates coordinates": _pixels_truncated,
        "rows and columns swapped": _pixels_swapped,
        "modifies x in place": _pixels_in_place,
        "adds instead of setting": _pixels_added,
        "first pixel only": _pixels_first_only,
        "first channel only": _pixels_channel0,
    },
}


(
    test_every_task_has_a_reference_and_two_wrong_implementations,
    test_check_passes_on_the_reference,
    test_check_reports_a_stub_as_todo,
    test_check_fails_on_a_wrong_implementation,
) = check_tests(REFERENCE, WRONG, sections={"01"})


def _hint(capsys, name, label):
    assert checks.check(name, WRONG[name][label]) is False
    return capsys.readouterr().out


def test_specific_hints(capsys):
    assert "leave the [0, 1] box" in _hint(capsys, "gaussian_noise", "no clip")
    assert "global random generator" in _hint(capsys, "gaussian_noise", "global RNG")
    assert "global random generator" in _hint(capsys, "gaussian_noise", "reseeds the global RNG")
    assert "seeds 3 and 4 give the same noise" in _hint(capsys, "gaussian_noise", "generator not seeded")
    assert "not by σ²" in _hint(capsys, "gaussian_noise", "sigma squared")
    assert "uniform" in _hint(capsys, "gaussian_noise", "uniform noise")
    assert "do not rescale" in _hint(capsys, "gaussian_noise", "rescales instead of clipping")
    assert "wraps around" in _hint(capsys, "translate", "torch.roll wraps around")
    assert "dx moves the rows" in _hint(capsys, "translate", "axes swapped")
    assert "left/up" in _hint(capsys, "translate", "opposite direction")
    assert "first image's" in _hint(capsys, "translate", "one shift for the batch")
    assert "ties must count 1/2" in _hint(capsys, "auroc", "ties count 0")
    assert "ties must count 1/2" in _hint(capsys, "auroc", "ties count 1")
    assert "1 - AUROC" in _hint(capsys, "auroc", "reversed")
    assert "single number" in _hint(capsys, "auroc", "per-row vector")
    assert "||w||_1" in _hint(capsys, "flip_eps", "L2 norm of w")
    assert "negative" in _hint(capsys, "flip_eps", "no abs")
    assert "bias" in _hint(capsys, "flip_eps", "no bias")
    assert "ignore the box" in _hint(capsys, "flip_eps_box", "ignores the box")
    assert "float('inf')" in _hint(capsys, "flip_eps_box", "never inf")
    assert "room_i < ε" in _hint(capsys, "flip_eps_box", "drops saturated coordinates")
    assert "halvings" in _hint(capsys, "flip_eps_box", "too few bisection steps")
    assert "rounded" in _hint(capsys, "apply_pixels", "truncates coordinates")
    assert "swapped" in _hint(capsys, "apply_pixels", "rows and columns swapped")
    assert "in place" in _hint(capsys, "apply_pixels", "modifies x in place")
    assert "instead of overwriting" in _hint(capsys, "apply_pixels", "adds instead of setting")
    assert "first of the K pixels" in _hint(capsys, "apply_pixels", "first pixel only")
    assert "first channel" in _hint(capsys, "apply_pixels", "first channel only")


def test_reference_helpers_agree_with_the_tests_solutions():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 2, 5, 7, generator=g, dtype=torch.float64)
    dx, dy = torch.tensor([0, 1, -2, 3, 8, -1]), torch.tensor([0, 2, 1, -3, 0, 9])
    assert torch.equal(nr.ref_translate(x, dx, dy), translate(x, dx, dy))
    xs = torch.rand(8, 10, generator=g, dtype=torch.float64)
    w = torch.randn(10, generator=g, dtype=torch.float64)
    box = nr.ref_flip_eps_box(w, 0.3, xs)
    assert torch.allclose(box, flip_eps_box(w, 0.3, xs), atol=1e-12)
    assert bool((box >= nr.ref_flip_eps(w, 0.3, xs) - 1e-12).all()), "the box can only make the radius larger"


def test_flip_radius_in_the_box_really_reaches_the_boundary():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 12, generator=g, dtype=torch.float64)
    x[:, :4] = (x[:, :4] > 0.5).double()
    w = torch.randn(12, generator=g, dtype=torch.float64)
    b = 0.2
    eps = nr.ref_flip_eps_box(w, b, x)
    assert torch.isfinite(eps).all()
    s = x @ w + b
    # the optimal δ: every helpful coordinate moves by min(ε, room) in the direction that lowers |s|
    direction = -s.sign()[:, None] * w.sign()
    room = torch.where(direction > 0, 1 - x, torch.where(direction < 0, x, 0.0))
    x_adv = x + direction * torch.minimum(eps[:, None], room)
    assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    assert torch.allclose(x_adv @ w + b, torch.zeros(16, dtype=torch.float64), atol=1e-9)
    assert bool(((x_adv - x).abs().amax(1) <= eps + 1e-12).all())
    shrunk = x + direction * torch.minimum(0.99 * eps[:, None], room)
    assert bool((((shrunk @ w + b) * s) > 0).all()), "a smaller radius must not reach the boundary"
