"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified L2 robustness by Gaussian noise.

The smoothed classifier ``g(x) = argmax_c P(f(x + ε) = c)``, ``ε ~ N(0, σ² I)``, is robust: if the top
class has probability ``p_A > 1/2`` then ``g`` is constant on the L2 ball of radius ``σ Φ⁻¹(p_A)`` around x
(Cohen et al. 2019, Theorem 1 with p_B = 1 - p_A). p_A is unknown, so it is estimated by Monte Carlo and
replaced by a one-sided Clopper–Pearson lower confidence bound: the certificate then holds with
probability at least 1 - α over the sampling.

* :func:`gaussian_noise` — the ``perturb`` function to train the base classifier under noise.
* :func:`sample_counts` — class counts of f under noise, batched over noise draws.
* :func:`predict` — PREDICT: the smoothed prediction, or abstain (-1) when a two-sided binomial test
  cannot tell the top two classes apart at level α.
* :func:`certify` — CERTIFY: prediction and certified radius (abstain when p_A <= 1/2).
* :func:`lower_confidence_bound`, :func:`radius`, :func:`max_certifiable_radius` — the pure formulas.
* :func:`certified_accuracy_curve` — certified accuracy at each radius.

Noise is added in [0, 1] pixel space and NOT clipped back to [0, 1], as in Cohen et al.: the theorem is
about the Gaussian convolution of f, and clipping would change the noise distribution (it is no longer
a translation-invariant Gaussian), voiding the certificate. The model must therefore accept inputs outside
[0, 1] (every advlab model does: normalization is affine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, float64_device, on_model_device
from advlab.config import AdvlabError

__all__ = [
    "Certificate",
    "NoiseAverage",
    "certified_accuracy_curve",
    "certify",
    "gaussian_noise",
    "lower_confidence_bound",
    "max_certifiable_radius",
    "predict",
    "radius",
    "sample_counts",
]

ABSTAIN = -1


def _check_sigma(sigma: float) -> float:
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma) or sigma <= 0:
        raise AdvlabError(f"sigma must be a positive number (noise std in pixel units, e.g. 0.25), got {sigma!r}.")
    return float(sigma)


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise AdvlabError(f"alpha must be in (0, 1) (the failure probability, e.g. 0.001), got {alpha!r}.")
    return float(alpha)


def _check_n(n: int, name: str = "n") -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise AdvlabError(f"{name} must be a positive integer number of noise samples, got {n!r}.")
    return int(n)


def gaussian_noise(sigma: float) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """A ``perturb`` function for ``advlab.train.fit``: ``(model, xb, yb) -> xb + sigma * N(0, I)``.

    Training the base classifier under the same noise it will be smoothed with is what makes the smoothed
    classifier accurate (Cohen et al. 2019, Sec. 4). The result is not clipped to [0, 1] (see the module
    docstring).
    """
    sigma = _check_sigma(sigma)

    def perturb(model: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
        return xb + sigma * torch.randn_like(xb)

    return perturb


def train_under_noise(
    model: nn.Module, x: Tensor, y: Tensor, sigma: float, progress: bool = True, **fit_kwargs
) -> dict:
    """Train ``model`` on (x, y) under Gaussian noise of std ``sigma`` (Cohen et al.'s base classifier).

    A zoo ``"trainer"``: :func:`advlab.train.fit` with :func:`gaussian_noise` as the per-batch hook.
    """
    from advlab.train import fit

    hist = fit(model, x, y, perturb=gaussian_noise(_check_sigma(sigma)), progress=progress, **fit_kwargs)
    return {"sigma": float(sigma), "final_loss": round(hist.loss[-1], 4)}


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(int(seed))


@torch.no_grad()
def _counts(model: nn.Module, x: Tensor, sigma: float, n: int, batch_size: int,
            generator: torch.Generator | None) -> Tensor:
    """Class counts (N, K) of ``model`` on ``n`` noisy copies of each input (model already in eval mode)."""
    num = len(x)
    total = num * n
    counts: Tensor | None = None
    # Row r of the (n·N)-row job is noise draw r // N of input r % N; each iteration is one batch of draws.
    for start in range(0, total, batch_size):
        idx = torch.arange(start, min(start + batch_size, total), device=x.device) % num
        noise = torch.randn((len(idx), *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
        logits = model(x[idx] + sigma * noise)
        if counts is None:
            check_logits(logits)
            if logits.shape[1] < 2:
                raise AdvlabError("Smoothing needs a classifier with at least 2 classes.")
            counts = torch.zeros((num, logits.shape[1]), dtype=torch.long, device=x.device)
        # accumulate=True has a deterministic implementation on CUDA too
        counts.index_put_((idx, logits.argmax(1)), torch.ones_like(idx), accumulate=True)
    assert counts is not None
    return counts


@on_model_device
def sample_counts(model: nn.Module, x: Tensor, sigma: float, n: int, batch_size: int = 1000,
                  seed: int | None = None) -> Tensor:
    """How often the base classifier predicts each class under Gaussian noise.

    Args:
        model: base classifier returning (B, K) logits (evaluated in eval mode).
        x: (N, C, H, W) or (N, D) inputs in [0, 1].
        sigma: noise standard deviation in pixel units.
        n: noise draws per input.
        batch_size: rows per forward pass (noisy copies of all inputs are mixed in one batch).
        seed: seed for the noise (``None``: torch's global generator).

    Returns:
        (N, K) int64 counts, each row summing to n.
    """
    x, _ = check_inputs(x)
    sigma, n = _check_sigma(sigma), _check_n(n)
    _check_n(batch_size, "batch_size")
    with eval_mode(model):
        return _counts(model, x, sigma, n, batch_size, _generator(seed, x.device))


def _as_numpy(v) -> np.ndarray:
    return v.detach().cpu().double().numpy() if isinstance(v, Tensor) else np.asarray(v, dtype=np.float64)


def _like(result: np.ndarray, template):
    if isinstance(template, Tensor):  # float64: on the CPU where the template's device has none (mps)
        return torch.as_tensor(result, dtype=torch.float64, device=float64_device(template.device))
    return float(result) if np.ndim(result) == 0 else result


def lower_confidence_bound(k, n: int, alpha: float):
    """One-sided (1 - alpha) Clopper–Pearson lower bound on a binomial proportion after k successes in n.

    ``Beta(alpha; k, n - k + 1)`` quantile (0 when k = 0). This is the bound CERTIFY uses: only a lower
    bound on p_A is needed, so the whole alpha goes to one side (a two-sided interval would spend alpha/2
    and give a smaller bound). k: int, array or tensor; returns the same kind (float64; a tensor on k's device, or
    on the CPU where that device has no float64, mps).
    """
    n, alpha = _check_n(n), _check_alpha(alpha)
    kk = _as_numpy(k)
    if (kk < 0).any() or (kk > n).any() or (kk != np.round(kk)).any():
        raise AdvlabError(f"k must be integer counts in [0, n={n}].")
    with np.errstate(invalid="ignore"):
        low = np.where(kk > 0, stats.beta.ppf(alpha, np.maximum(kk, 1), n - kk + 1), 0.0)
    return _like(low, k)


def radius(p_a, sigma: float):
    """Certified L2 radius ``sigma · Φ⁻¹(p_a)`` for a lower bound p_a on the top-class probability.

    Only a certificate when p_a > 1/2 (the value is <= 0 otherwise). p_a: float, array or tensor in [0, 1];
    returns the same kind (a float64 tensor as in :func:`lower_confidence_bound`), in pixel units.
    """
    sigma = _check_sigma(sigma)
    p = _as_numpy(p_a)
    if (p < 0).any() or (p > 1).any() or np.isnan(p).any():
        raise AdvlabError("p_a must be a probability in [0, 1].")
    return _like(sigma * stats.norm.ppf(p), p_a)


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """The largest radius CERTIFY can return with n samples: all n agree, p_A = alpha^(1/n).

    ``sigma · Φ⁻¹(alpha^(1/n))``: the Clopper–Pearson lower bound for k = n is alpha^(1/n). With
    n = 100,000, alpha = 0.001 and sigma = 0.25 this is about 0.95: more samples, not a better model, are
    needed to certify beyond it.
    """
    n, alpha, sigma = _check_n(n), _check_alpha(alpha), _check_sigma(sigma)
    return sigma * float(stats.norm.ppf(alpha ** (1.0 / n)))


@dataclass(frozen=True)
class Certificate:
    """The result of :func:`certify` on N inputs; unpacks as ``pred, radius = cert``.

    Attributes:
        pred: (N,) int64 smoothed prediction, -1 where CERTIFY abstains.
        radius: (N,) float certified L2 radius in pixel units (0 where it abstains).
        n_a: (N,) int64 count of the selected class among the n estimation samples.
        p_a: (N,) float64 one-sided Clopper–Pearson lower bound on its probability (on the CPU when the model is on
            mps, which has no float64).
    """

    pred: Tensor
    radius: Tensor
    n_a: Tensor
    p_a: Tensor

    def __iter__(self) -> Iterator[Tensor]:
        yield from (self.pred, self.radius)

    @property
    def abstain(self) -> Tensor:
        """(N,) bool: where CERTIFY abstained."""
        return self.pred == ABSTAIN


class NoiseAverage(nn.Module):
    """The smoothed classifier's differentiable stand-in, to attack it (Salman et al. 2019's SmoothAdv objective).

    ``log`` of the base classifier's softmax averaged over ``draws`` Gaussian draws of standard deviation ``sigma``,
    drawn afresh at every call: an attack that takes a step per call averages its gradients over new noise at every
    step (expectation over transformation). The smoothed classifier itself (:func:`predict`) counts votes and has no
    gradient. As in :func:`certify`, the noisy inputs are not clipped to [0, 1].

    Args:
        base_model: the base classifier, (M, C, H, W) -> (M, K) logits.
        sigma: noise standard deviation (pixel units).
        draws: noise draws per input and call.
        generator: CPU generator of the noise, advanced by every call (``None``: one seeded with 0); the caller's
            global random state is never touched.

    Forward: x (N, C, H, W) in [0, 1] -> (N, K) log-probabilities, from a batch of ``draws · N`` noisy inputs.
    """

    def __init__(self, base_model: nn.Module, sigma: float, draws: int = 64,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base_model, self.sigma, self.draws = base_model, _check_sigma(sigma), _check_n(draws, "draws")
        self.generator = torch.Generator().manual_seed(0) if generator is None else generator
        if self.generator.device.type != "cpu":
            raise AdvlabError("NoiseAverage draws its noise on the CPU: pass a CPU torch.Generator.")

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn((self.draws, *x.shape), generator=self.generator, dtype=x.dtype).to(x.device)
        noisy = (x[None] + self.sigma * noise).flatten(0, 1)  # (draws · N, C, H, W)
        probs = self.base_model(noisy).softmax(1).view(self.draws, len(x), -1)
        return probs.mean(0).clamp_min(1e-12).log()


@on_model_device
def predict(model: nn.Module, x: Tensor, sigma: float, n: int = 100, alpha: float = 0.001,
            batch_size: int = 1000, seed: int | None = None) -> Tensor:
    """PREDICT (Cohen et al. 2019): the smoothed classifier's prediction, or -1 to abstain.

    With n noise samples, the top two classes' counts n_A, n_B are compared by a two-sided binomial test
    of p = 1/2 (``scipy.stats.binomtest(n_A, n_A + n_B)``); it abstains when the p-value exceeds alpha.
    Then the probability of returning a class other than g(x) is at most alpha.

    Args: see :func:`sample_counts`; alpha: the test's level.
    Returns: (N,) int64 classes, -1 where it abstains.
    """
    alpha = _check_alpha(alpha)
    counts = sample_counts(model, x, sigma, n, batch_size, seed)
    top2 = counts.topk(2, dim=1)
    n_a, n_b = top2.values[:, 0].cpu().numpy(), top2.values[:, 1].cpu().numpy()
    # Two-sided binomial test of p = 1/2, vectorised (equal to scipy.stats.binomtest(...).pvalue).
    pvalue = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(n_a, n_b), n_a + n_b, 0.5))
    keep = torch.as_tensor(pvalue <= alpha, device=counts.device)
    return torch.where(keep, top2.indices[:, 0], torch.full_like(top2.indices[:, 0], ABSTAIN))


@on_model_device
def certify(model: nn.Module, x: Tensor, sigma: float, n0: int = 100, n: int = 10_000, alpha: float = 0.001,
            batch_size: int = 1000, seed: int | None = None) -> Certificate:
    """CERTIFY (Cohen et al. 2019): smoothed prediction and certified L2 radius, each with prob. >= 1 - alpha.

    n0 selection samples pick the candidate class c_A; n fresh estimation samples count it (n_A), and
    ``p_A = lower_confidence_bound(n_A, n, alpha)`` (one-sided Clopper–Pearson). If p_A > 1/2 it returns
    c_A with radius ``sigma Φ⁻¹(p_A)``, otherwise it abstains (-1, radius 0). Selection and estimation
    use separate samples so that the bound is not biased by the choice of c_A.

    Args:
        model: base classifier; x: (N, ...) inputs in [0, 1]; sigma: noise std (pixel units).
        n0, n: selection and estimation sample counts; alpha: failure probability.
        batch_size: rows per forward pass; seed: noise seed (``None``: global generator).

    Returns:
        a :class:`Certificate` (unpacks as ``pred, radius``).
    """
    x, _ = check_inputs(x)
    sigma, alpha = _check_sigma(sigma), _check_alpha(alpha)
    n0, n = _check_n(n0, "n0"), _check_n(n)
    _check_n(batch_size, "batch_size")
    gen = _generator(seed, x.device)
    with eval_mode(model):
        c_a = _counts(model, x, sigma, n0, batch_size, gen).argmax(1)
        n_a = _counts(model, x, sigma, n, batch_size, gen).gather(1, c_a[:, None]).squeeze(1)
    p_a = lower_confidence_bound(n_a, n, alpha)  # float64: on the CPU if the device has none (mps)
    ok = p_a > 0.5
    r = torch.where(ok, radius(p_a.clamp_min(0.5), sigma), torch.zeros_like(p_a)).to(x.dtype).to(x.device)
    ok = ok.to(x.device)
    pred = torch.where(ok, c_a, torch.full_like(c_a, ABSTAIN))
    return Certificate(pred=pred, radius=r, n_a=n_a, p_a=p_a)


def certified_accuracy_curve(pred: Tensor, radius: Tensor, y: Tensor, radii: Sequence[float] | Tensor) -> Tensor:
    """Certified accuracy at each radius: fraction of inputs with ``pred == y`` AND ``radius >= r``.

    pred, radius, y: (N,) (abstentions, pred = -1, never count); radii: (R,). Returns (R,) float on the CPU.
    """
    if not (pred.shape == radius.shape == y.shape) or pred.ndim != 1:
        raise AdvlabError(f"pred, radius and y must all be (N,), got {tuple(pred.shape)}, {tuple(radius.shape)}, "
                          f"{tuple(y.shape)}.")
    r = torch.as_tensor(radii, dtype=radius.dtype, device=radius.device).reshape(-1)
    ok = (pred == y.to(pred.device))[None, :] & (radius[None, :] >= r[:, None])
    return ok.float().mean(1).cpu()
