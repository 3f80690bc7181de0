"""Lipschitz constants, Lipschitz-constrained layers and the certificates they give.

A network ``f`` is L-Lipschitz in L2 when ``||f(x) - f(x')||_2 <= L ||x - x'||_2`` for all inputs. Then
no perturbation of L2 norm below ``margin / (sqrt(2) L)`` can change its prediction (Tsuzuku et al.
2018), which turns a cheap forward pass into a robustness certificate.

This module holds

* spectral norms by power iteration, estimates from below: dense layers
  (:func:`spectral_norm_linear`), convolutions as the operators they are on a given input shape
  (:func:`spectral_norm_conv`, not the reshaped kernel), and any linear map (:func:`spectral_norm_operator`);
* an upper bound on the Lipschitz constant of an ``nn.Sequential`` as the product of its layers' constants
  (:func:`layer_lipschitz`, :func:`layer_bounds`, :func:`network_lipschitz`). Each factor is a true upper bound,
  rounded outward: dense layers by an SVD, zero-padded convolutions and average pooling by the Fourier bound of
  the circular convolution that contains them (Sedghi et al. 2019);
* a network that is 1-Lipschitz by construction: almost-orthogonal layers (:class:`AOLLinear`, Prach & Lampert
  2022) with the :class:`GroupSort` / :class:`MaxMin` activation (Anil et al. 2019), built by
  :func:`lipschitz_mlp` (the zoo's ``mnist-lipschitz``);
* certificates: :func:`certified_radius`, :func:`certified_radius_pairwise`, :func:`certify`,
  :func:`certified_accuracy`.

Everything is in L2 and in pixel units ([0, 1] inputs). Power iteration approaches the spectral norm from
below; with the default settings it agrees with an SVD to about 1e-5 relative (the tests require 1e-3), so the
certificates never use it, except for convolutions with reflect, replicate or circular padding.
Bounds hold for the model in eval mode (batch norm with running statistics, no dropout).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.attacks.tensors import check_inputs, check_logits, eval_mode, logits_of, model_device, on_model_device
from advlab.config import AdvlabError
from advlab.models import Normalize

__all__ = [
    "AOLLinear",
    "GroupSort",
    "MaxMin",
    "certified_accuracy",
    "certified_radius",
    "certified_radius_pairwise",
    "certify",
    "layer_bounds",
    "layer_lipschitz",
    "lipschitz_mlp",
    "network_lipschitz",
    "spectral_norm_conv",
    "spectral_norm_linear",
    "spectral_norm_operator",
]

# --------------------------------------------------------------------------------------------------
# Power iteration
# --------------------------------------------------------------------------------------------------


def _normalized(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(1e-30)


def _gram_step(op: Callable[[Tensor], Tensor], v: Tensor) -> tuple[Tensor, Tensor]:
    """One power step for a linear ``op``: returns ``(op(v), op^T op(v))``, the transpose via autograd."""
    with torch.enable_grad():
        x = v.detach().requires_grad_(True)
        y = op(x)
        (g,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
    return y.detach(), g


def _orthonormal_rows(v: Tensor) -> Tensor:
    """Orthonormalise the rows of a (b, *shape) tensor (QR of the flattened rows)."""
    q, _ = torch.linalg.qr(v.flatten(1).T)
    return q.T.reshape(v.shape)


def spectral_norm_operator(
    op: Callable[[Tensor], Tensor],
    input_shape: Sequence[int],
    max_iter: int = 500,
    tol: float = 1e-7,
    block: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Largest singular value of a linear map ``op`` by (block) power iteration on ``op^T op``.

    ``op^T`` is never formed: ``op^T op v`` is the gradient of ``<op(x), op(v)>`` at ``x = v``, taken by
    autograd, so ``op`` may be any linear function of a tensor (convolution with any stride, padding or
    padding mode, average pooling, ...). ``op`` must have no bias (op(0) = 0) and treat the rows of a batch
    independently. ``block`` vectors are iterated together (subspace iteration with a Rayleigh–Ritz step),
    which converges fast even when the top singular values are close, as they are for convolutions;
    ``block=1`` is plain power iteration.

    Args:
        op: a linear function of a (b, *input_shape) batch.
        input_shape: the shape of one input, without the batch dimension, e.g. (C, H, W).
        max_iter: maximum number of steps (a cap: ``tol`` stops earlier).
        tol: stop when the estimate of sigma² changes by less than ``tol`` (relative) between steps.
        block: number of vectors iterated together (capped at the input dimension).
        seed: seed of the random start (a fixed seed makes the estimate reproducible).
        device, dtype: where to compute.

    Returns:
        ``(sigma, v)``: sigma a 0-dim tensor, ``||op(v)||_2``, a lower estimate that converges to the
        spectral norm from below, and v the (1, *input_shape) unit-norm top right singular vector.
    """
    if max_iter < 1:
        raise AdvlabError(f"max_iter must be >= 1, got {max_iter}.")
    shape = tuple(int(s) for s in input_shape)
    b = max(1, min(int(block), math.prod(shape)))
    start = torch.randn((b, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v = _orthonormal_rows(start.to(dtype).to(device=device))  # cast on the CPU: a float64 tensor cannot reach mps
    top = torch.zeros((), device=v.device, dtype=v.dtype)
    for _ in range(max_iter):
        y, g = _gram_step(op, v)
        y = y.flatten(1)
        ritz, vecs = torch.linalg.eigh(y @ y.T)  # V^T A^T A V, ascending eigenvalues
        new_top = ritz[-1]
        best = (vecs[:, -1:].T @ v.flatten(1)).reshape(1, *shape)  # Ritz vector of the top value
        v = _orthonormal_rows(g)
        converged = (new_top - top).abs() <= tol * new_top.abs()
        top = new_top
        if bool(converged):
            break
    best = best / best.norm().clamp_min(1e-30)
    with torch.no_grad():
        sigma = op(best).norm()
    return sigma.detach(), best.detach()


def spectral_norm_linear(weight: Tensor, max_iter: int = 500, tol: float = 1e-7, block: int = 8
                         ) -> tuple[Tensor, Tensor]:
    """Spectral norm ``||W||_2`` (largest singular value) of a (out, in) matrix by power iteration.

    Returns ``(sigma, v)``: sigma a 0-dim tensor, v the (in,) unit top right singular vector, so
    ``||W v|| = sigma``. Matches ``torch.linalg.matrix_norm(W, ord=2)`` to about 1e-6 relative.
    """
    if weight.ndim != 2:
        raise AdvlabError(f"weight must be a (out, in) matrix, got shape {tuple(weight.shape)}; for a conv kernel "
                          "use spectral_norm_conv with the input shape.")
    w = weight.detach()
    sigma, v = spectral_norm_operator(lambda x: x @ w.T, (w.shape[1],), max_iter=max_iter, tol=tol, block=block,
                                      device=w.device, dtype=w.dtype)
    return sigma, v[0]


def _conv_op(
    conv: nn.Module | Tensor, stride=1, padding=0, dilation=1, groups: int = 1, float64: bool = False
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The bias-free linear operator of a conv module (any padding mode) or of a raw kernel; with ``float64`` its
    weights in float64 on the CPU."""
    if isinstance(conv, nn.Conv2d):
        w = conv.weight.detach().cpu().double() if float64 else conv.weight.detach()
        return (lambda x: conv._conv_forward(x, w, None)), w
    if isinstance(conv, nn.ConvTranspose2d):
        w = conv.weight.detach().cpu().double() if float64 else conv.weight.detach()
        c = conv
        return (
            lambda x: F.conv_transpose2d(x, w, None, c.stride, c.padding, c.output_padding, c.groups, c.dilation)
        ), w
    if isinstance(conv, Tensor):
        if conv.ndim != 4:
            raise AdvlabError(f"A conv kernel must be (out, in/groups, kh, kw), got shape {tuple(conv.shape)}.")
        w = conv.detach()
        return (lambda x: F.conv2d(x, w, None, stride, padding, dilation, groups)), w
    raise AdvlabError(f"Expected an nn.Conv2d, nn.ConvTranspose2d or a 4-d kernel, got {type(conv).__name__}.")


def spectral_norm_conv(
    conv: nn.Module | Tensor,
    input_shape: Sequence[int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    max_iter: int = 500,
    tol: float = 1e-7,
) -> tuple[Tensor, Tensor]:
    """Spectral norm of a 2-d convolution as a linear operator on inputs of shape ``input_shape``.

    The operator itself is used (its transpose through autograd), not the reshaped kernel, so stride,
    padding (any padding mode) and the input size are all accounted for exactly.

    Args:
        conv: an ``nn.Conv2d`` / ``nn.ConvTranspose2d`` (its stride, padding, dilation and groups are used and
            the remaining arguments ignored), or a kernel (out, in/groups, kh, kw).
        input_shape: (C, H, W) or (N, C, H, W) (N is dropped).
        stride, padding, dilation, groups: as in ``F.conv2d``, for a raw kernel.
        max_iter, tol: see :func:`spectral_norm_operator`.

    Returns:
        ``(sigma, v)``: sigma a 0-dim tensor, v the (1, C, H, W) unit top right singular vector.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3:
        raise AdvlabError(f"input_shape must be (C, H, W), got {tuple(input_shape)}.")
    op, w = _conv_op(conv, stride, padding, dilation, groups)
    try:
        op(torch.zeros((1, *shape), device=w.device, dtype=w.dtype))
    except RuntimeError as err:
        raise AdvlabError(f"The convolution cannot be applied to inputs of shape {shape}: {err}") from err
    return spectral_norm_operator(op, shape, max_iter=max_iter, tol=tol, device=w.device, dtype=w.dtype)


# --------------------------------------------------------------------------------------------------
# Activations that are 1-Lipschitz in L2
# --------------------------------------------------------------------------------------------------


class GroupSort(nn.Module):
    """Sort features in groups of ``group_size`` along dim 1 (Anil et al. 2019). 1-Lipschitz in L2.

    x: (N, C, ...) with C divisible by ``group_size``; output has the same shape. It only permutes the
    coordinates (differently for each input), so it preserves gradient norms, unlike ReLU.
    """

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        if group_size < 2:
            raise AdvlabError(f"group_size must be >= 2, got {group_size}.")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c % self.group_size:
            raise AdvlabError(f"GroupSort({self.group_size}) needs a number of features divisible by "
                              f"{self.group_size}, got {c}; change the layer width.")
        g = x.reshape(x.shape[0], c // self.group_size, self.group_size, *x.shape[2:])
        return g.sort(dim=2, descending=True).values.reshape(x.shape)

    def lipschitz(self, in_shape: Sequence[int]) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    """GroupSort with groups of 2: each pair (a, b) becomes (max(a, b), min(a, b)). 1-Lipschitz in L2."""

    def __init__(self) -> None:
        super().__init__(2)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window_overlap(kernel, stride, dilation=1) -> int:
    """The largest number of pooling windows that contain one input pixel."""
    count = 1
    for k, s, d in zip(_pair(kernel), _pair(stride), _pair(dilation), strict=True):
        count *= min(k, (d * (k - 1)) // s + 1)
    return count


# --------------------------------------------------------------------------------------------------
# Layer and network bounds
# --------------------------------------------------------------------------------------------------

_ONE_LIPSCHITZ = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Flatten, nn.Unflatten, nn.Identity,
                  nn.Dropout, nn.Dropout2d)


def _adaptive_overlap(size_in: int, size_out: int) -> int:
    counts = [0] * size_in
    for i in range(size_out):
        for j in range((i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)):
            counts[j] += 1
    return max(counts)


def layer_lipschitz(layer: nn.Module, in_shape: Sequence[int], max_iter: int = 500, tol: float = 1e-7,
                    device: torch.device | str | None = None) -> float:
    """An upper bound on the L2 Lipschitz constant of one layer on inputs shaped ``in_shape`` (eval mode).

    Supported: ``nn.Linear`` (the exact largest singular value, rounded outward: a true upper bound),
    ``nn.Conv2d`` / ``nn.ConvTranspose2d`` and average pooling: the exact norm of their matrix when it has at most
    :data:`EXPLICIT_ENTRIES` entries (rounded outward), else for zero padding the Fourier bound of the circular
    convolution that contains the layer (:func:`_conv_upper_bound`, a true upper bound) and for average pooling
    :func:`_avg_pool_upper_bound`; only large convolutions with reflect, replicate or circular padding fall back on
    power iteration, an estimate from below to within ``tol``. Parametrized weights are included.
    :class:`~advlab.models.Normalize` (1 / min |std|),
    ``nn.BatchNorm`` in eval mode (max |gamma| / sqrt(var + eps)), 1-Lipschitz activations (ReLU, ReLU6, Tanh, Hardtanh,
    Softplus, LeakyReLU and ELU with slope/alpha <= 1 or their larger slope, Sigmoid: 1/4), Flatten,
    Identity, Dropout, max pooling (sqrt of the window overlap), nested ``nn.Sequential`` (product), and any module
    with a ``lipschitz(in_shape)`` method.

    Args:
        layer: the module.
        in_shape: the shape of one input to the layer, without batch dimension.
        max_iter, tol: power-iteration settings for linear layers.
        device: where to run parameter-free linear layers (average pooling); default: the CPU.

    Raises:
        AdvlabError: for a layer it cannot bound (e.g. residual blocks, attention).
    """
    shape = tuple(int(s) for s in in_shape)
    if hasattr(layer, "lipschitz") and callable(layer.lipschitz):
        return float(layer.lipschitz(shape))
    if isinstance(layer, nn.Sequential):
        return network_lipschitz(layer, shape, max_iter=max_iter, tol=tol)
    if isinstance(layer, nn.Linear):
        return _dense_upper_bound(layer.weight)
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        exact = _explicit_upper_bound(_linear_layer_double(layer), shape)
        if exact is not None:  # small enough for its matrix: the exact norm
            return exact
        if isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros":
            return _conv_upper_bound(layer.weight, shape[-2:], layer.stride, layer.padding, layer.dilation,
                                     layer.groups)
        if isinstance(layer, nn.ConvTranspose2d) and layer.padding_mode == "zeros":
            # the adjoint of the convolution with the same kernel from the output shape to the input shape
            out_hw = layer(torch.zeros((1, *shape), device=layer.weight.device, dtype=layer.weight.dtype)).shape[-2:]
            return _conv_upper_bound(layer.weight, out_hw, layer.stride, layer.padding, layer.dilation, layer.groups)
        if isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return _avg_pool_upper_bound(layer, shape)
        # large inputs, reflect/replicate padding: power iteration
        return float(spectral_norm_conv(layer, shape, max_iter=max_iter, tol=tol)[0])
    if isinstance(layer, Normalize):
        return float(1.0 / layer.std.abs().min())
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        if layer.running_var is None:
            raise AdvlabError("A BatchNorm layer without running statistics has no fixed Lipschitz constant; "
                              "build it with track_running_stats=True.")
        scale = (layer.running_var + layer.eps).rsqrt()
        if layer.weight is not None:
            scale = scale * layer.weight.detach().abs()
        return float(scale.max())
    if isinstance(layer, _ONE_LIPSCHITZ):
        return 1.0
    if isinstance(layer, nn.LeakyReLU):
        return max(1.0, abs(layer.negative_slope))
    if isinstance(layer, nn.ELU):
        return max(1.0, layer.alpha)
    if isinstance(layer, nn.Sigmoid):
        return 0.25
    if isinstance(layer, nn.MaxPool2d):
        stride = layer.stride if layer.stride is not None else layer.kernel_size
        return math.sqrt(_window_overlap(layer.kernel_size, stride, layer.dilation))
    if isinstance(layer, nn.AdaptiveMaxPool2d):
        size = layer.output_size
        out_h, out_w = (size, size) if isinstance(size, int) else size
        out_h, out_w = shape[-2] if out_h is None else out_h, shape[-1] if out_w is None else out_w
        return math.sqrt(_adaptive_overlap(shape[-2], out_h) * _adaptive_overlap(shape[-1], out_w))
    raise AdvlabError(
        f"Cannot bound the Lipschitz constant of layer {type(layer).__name__}. Supported: Linear, Conv2d, "
        "Normalize, BatchNorm (eval), ReLU-like activations, GroupSort/MaxMin, pooling, Flatten, "
        "nested nn.Sequential; give a custom module a `lipschitz(in_shape) -> float` method."
    )


def layer_bounds(
    model: nn.Module, in_shape: Sequence[int], max_iter: int = 500, tol: float = 1e-7
) -> list[tuple[str, str, float]]:
    """Per-layer Lipschitz bounds of an ``nn.Sequential`` on inputs shaped ``in_shape`` (no batch dimension).

    Returns a list of ``(name, layer type, bound)``; the network's bound is their product. Shapes are
    propagated with a forward pass on zeros in eval mode.
    """
    if not isinstance(model, nn.Sequential):
        raise AdvlabError(
            f"network_lipschitz needs an nn.Sequential (got {type(model).__name__}); residual or branching "
            "models need their own bound (for x + g(x): 1 + Lip(g))."
        )
    shape = tuple(int(s) for s in in_shape)
    rows: list[tuple[str, str, float]] = []
    with eval_mode(model, warn=False), torch.no_grad():
        h = torch.zeros((1, *shape), device=model_device(model))
        for name, layer in model.named_children():
            bound = layer_lipschitz(layer, tuple(h.shape[1:]), max_iter, tol, device=h.device)
            rows.append((name, type(layer).__name__, bound))
            h = layer(h)
    return rows


def network_lipschitz(model: nn.Module, in_shape: Sequence[int], max_iter: int = 500, tol: float = 1e-7) -> float:
    """Upper bound on the L2 Lipschitz constant of an ``nn.Sequential``: the product of its layers' bounds.

    Args:
        model: an ``nn.Sequential`` of supported layers (see :func:`layer_lipschitz`).
        in_shape: the shape of one input, e.g. (1, 28, 28).
        max_iter, tol: power-iteration settings.

    Returns:
        L such that ``||f(x) - f(x')||_2 <= L ||x - x'||_2`` (in eval mode), in logits per pixel unit.
    """
    return math.prod(b for _, _, b in layer_bounds(model, in_shape, max_iter, tol))


# --------------------------------------------------------------------------------------------------
# A network that is 1-Lipschitz by construction
# --------------------------------------------------------------------------------------------------


class AOLLinear(nn.Module):
    """Almost-orthogonal layer (Prach & Lampert 2022): weight ``W diag(d)``, ``d_j = (sum_i |W^T W|_ij)^(-1/2)``.

    x: (N, in) -> (N, out). The rescaling guarantees ``||W diag(d)||_2 <= 1`` for every W, with no iteration,
    so the layer is 1-Lipschitz by construction (not necessarily orthogonal).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.param = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.orthogonal_(self.param)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> Tensor:
        d = (self.param.T @ self.param).abs().sum(1).clamp_min(1e-12).rsqrt()
        return self.param * d

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def lipschitz(self, in_shape: Sequence[int]) -> float:
        with torch.no_grad():
            return float(torch.linalg.matrix_norm(self.weight, ord=2))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def lipschitz_mlp(in_shape: Sequence[int] = (1, 28, 28), classes: int = 10, width: int = 256, depth: int = 3,
                  layer: str = "aol", group_size: int = 2) -> nn.Sequential:
    """A 1-Lipschitz (L2) MLP from [0, 1] inputs to logits.

    Flatten → (1-Lipschitz Linear → GroupSort) × (depth - 1) → 1-Lipschitz Linear.

    Args:
        in_shape: one input's shape.
        classes: number of logits.
        width: hidden units (a multiple of ``group_size``).
        depth: number of linear layers (>= 1).
        layer: ``"aol"`` (:class:`AOLLinear`), the one 1-Lipschitz layer (the zoo's recipe names it).
        group_size: GroupSort group size (2 = MaxMin).

    There is no Normalize layer: dividing by the data std would multiply the Lipschitz constant; the
    biases absorb the mean.
    """
    if layer != "aol":
        raise AdvlabError(f"Unknown 1-Lipschitz layer {layer!r}; the one layer is 'aol' (AOLLinear).")
    if depth < 1 or width < 1 or width % group_size:
        raise AdvlabError(f"Need depth >= 1 and width a positive multiple of group_size={group_size}; "
                          f"got depth={depth}, width={width}.")
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(in_shape)
    for _ in range(depth - 1):
        layers += [AOLLinear(fan_in, width), GroupSort(group_size)]
        fan_in = width
    layers.append(AOLLinear(fan_in, classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------------


def _cpu64(v: float | Tensor) -> Tensor:
    """``v`` as a float64 tensor on the CPU (where every float64 part of a bound is computed: mps has none); a
    tensor is moved before it is cast, a Python number is converted exactly."""
    return v.detach().cpu().double() if isinstance(v, Tensor) else torch.as_tensor(v, dtype=torch.float64)


def _round_up(value: float, rel: float = 1e-9) -> float:
    """``value`` inflated by ``rel`` (relative) and rounded to the next float up: a bound that covers the float64
    error of the SVD/FFT that computed it."""
    return math.nextafter(value * (1 + rel), math.inf)


def _dense_upper_bound(weight: Tensor) -> float:
    """A true upper bound on ``||W||_2``: the exact largest singular value (SVD in float64), rounded outward.

    Power iteration converges from below, so its estimate can sit under the norm (by 5e-5 relative on a
    near-degenerate layer); a certificate needs a bound from above. LAPACK's SVD is backward stable, with a relative
    error of a small multiple of ``max(out, in) · 2⁻⁵³``; the result is inflated by 1e-9 relative, far more than that.
    """
    sigma = float(torch.linalg.matrix_norm(_cpu64(weight), ord=2))
    return _round_up(sigma)


EXPLICIT_ENTRIES = 8_000_000
"""Linear layers whose matrix (inputs × outputs) has at most this many entries are bounded exactly: their matrix is
built in float64 (64 MB at most) and its largest singular value computed by an SVD, rounded outward."""


def _linear_layer_double(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """The bias-free operator of a convolution (float64 weights, on the CPU) or of an average pooling layer."""
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        return _conv_op(layer, float64=True)[0]
    return layer


def _explicit_upper_bound(op: Callable[[Tensor], Tensor], in_shape: Sequence[int]) -> float | None:
    """The exact L2 norm of a small linear ``op`` (float64), rounded outward; None if its matrix is too large.

    The matrix is built column block by column block from unit inputs (each entry is a weight times 1, exact in
    float64), and LAPACK's SVD is backward stable: a relative inflation of 1e-9 covers its error many times over.
    """
    shape = tuple(int(v) for v in in_shape)
    d = math.prod(shape)
    with torch.no_grad():
        out = op(torch.zeros((1, *shape), dtype=torch.float64)).numel()
        if d * out > EXPLICIT_ENTRIES:
            return None
        cols = []
        for i in range(0, d, 256):  # 256 unit inputs at a time: never the whole d × d identity
            block = torch.zeros(min(256, d - i), d, dtype=torch.float64)
            block[torch.arange(len(block)), torch.arange(i, i + len(block))] = 1.0
            cols.append(op(block.reshape(-1, *shape)).reshape(-1, out))
        sigma = float(torch.linalg.matrix_norm(torch.cat(cols), ord=2))
    return _round_up(sigma)


def _conv_upper_bound(
    weight: Tensor, in_hw: Sequence[int], stride=1, padding=0, dilation=1, groups: int = 1
) -> float:
    """A true upper bound on the L2 operator norm of a zero-padded 2-d convolution on (H, W) inputs.

    The convolution is a restriction of a *circular* one: embed the input in its zero-padded grid (an isometry), run
    the circular correlation on that grid (its valid outputs are the linear ones), keep the outputs the layer keeps
    (a restriction, norm <= 1). A stride s is first turned into a stride-1 convolution with s² times the input
    channels (space-to-depth, a permutation of the pixels, and the matching polyphase split of the kernel), so the
    bound does not pay for outputs that the stride drops. The circular operator on an (M, M') grid is block-diagonal
    in the Fourier basis (Sedghi et al., 2019): its norm is the largest spectral norm of the (out, in·s²) matrices
    of the kernel's 2-d DFT at the M·M' frequencies, computed here in float64 and rounded outward. Groups are blocks.
    """
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    w = _cpu64(weight)
    out_c, in_g, kh, kw = w.shape
    if dh > 1 or dw > 1:  # the dilated kernel, zeros in between
        dil = w.new_zeros(out_c, in_g, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dil[:, :, ::dh, ::dw] = w
        w, kh, kw = dil, dil.shape[2], dil.shape[3]
    if isinstance(padding, str):
        pads = (0, 0) if padding == "valid" else (kh - 1, kw - 1)  # "same": total padding d·(k - 1)
    else:
        ph, pw = _pair(padding)
        pads = (2 * ph, 2 * pw)
    grid = []
    for n, pad, k, st in ((in_hw[0], pads[0], kh, sh), (in_hw[1], pads[1], kw, sw)):
        size = max(int(n) + pad, k)
        grid.append(-(-size // st))  # the padded grid, rounded up to a multiple of the stride, over the stride
    # polyphase split: kernel (out, in, kh, kw) -> (out, in·sh·sw, ceil(kh/sh), ceil(kw/sw))
    kh2, kw2 = -(-kh // sh), -(-kw // sw)
    padded = w.new_zeros(out_c, in_g, kh2 * sh, kw2 * sw)
    padded[:, :, :kh, :kw] = w
    poly = padded.view(out_c, in_g, kh2, sh, kw2, sw).permute(0, 1, 3, 5, 2, 4).reshape(out_c, in_g * sh * sw,
                                                                                       kh2, kw2)
    m_h, m_w = max(grid[0], kh2), max(grid[1], kw2)
    spectrum = torch.fft.fft2(poly, s=(m_h, m_w))  # (out, in·s², M, M') complex128
    per_group = out_c // groups
    sigma = 0.0
    for g in range(groups):
        block = spectrum[g * per_group:(g + 1) * per_group].permute(2, 3, 0, 1)  # (M, M', out/g, in·s²)
        sigma = max(sigma, float(torch.linalg.matrix_norm(block, ord=2).max()))
    # float64 FFT + SVD errors are a small multiple of 2⁻⁵³·log2(M)·Σ|w| per entry: inflate well beyond that
    slack = 1e-12 * float(w.abs().sum(dim=(2, 3)).max()) * math.sqrt(out_c * in_g * sh * sw)
    return _round_up(sigma + slack)


def _pool_windows(n: int, k: int, s: int, p: int, ceil_mode: bool) -> list[tuple[int, int, int]]:
    """``(start, end, pool_size)`` per output along one axis of ``nn.AvgPool2d`` (PyTorch's rule): the window's real
    pixels are ``[start, end)``; ``pool_size`` also counts the zero padding inside the padded input."""
    span = n + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    windows = []
    for j in range(out):
        lo = j * s - p
        hi = min(lo + k, n + p)
        windows.append((max(lo, 0), min(hi, n), hi - lo))
    return windows


def _avg_pool_upper_bound(layer: nn.Module, shape: Sequence[int]) -> float:
    """A true upper bound on the L2 norm of average pooling on (C, H, W) inputs, by the Schur test.

    Output o is ``c_o · Σ_{i in S_o} x_i`` (the same for every channel), so ``||A||² <= max_o c_o|S_o| ·
    max_i Σ_{o ∋ i} c_o`` (largest row sum times largest column sum). Windows and divisors are products of one
    factor per axis, and so are both maxima. Exact for non-overlapping windows.
    """
    h, w = int(shape[-2]), int(shape[-1])
    if isinstance(layer, nn.AvgPool2d):
        (kh, kw), (sh, sw), (ph, pw) = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size), \
            _pair(layer.padding)
        axes = [_pool_windows(h, kh, sh, ph, layer.ceil_mode), _pool_windows(w, kw, sw, pw, layer.ceil_mode)]
        override = layer.divisor_override
        by_pool_size = layer.count_include_pad
    else:
        size = layer.output_size
        out_h, out_w = (size, size) if isinstance(size, int) else size
        out_h, out_w = h if out_h is None else out_h, w if out_w is None else out_w
        axes = [[((j * n) // o, -((-(j + 1) * n) // o), -((-(j + 1) * n) // o) - (j * n) // o) for j in range(o)]
                for n, o in ((h, out_h), (w, out_w))]
        override, by_pool_size = None, False
    rows, cols = 1.0, 1.0
    for n, windows in zip((h, w), axes, strict=True):
        # per axis: c = 1 / divisor factor (or 1 for an override, applied once below)
        div = [1.0 if override else float(size if by_pool_size else end - start) for start, end, size in windows]
        rows *= max((end - start) / d for (start, end, _), d in zip(windows, div, strict=True))
        col = [0.0] * n
        for (start, end, _), d in zip(windows, div, strict=True):
            for i in range(start, end):
                col[i] += 1.0 / d
        cols *= max(col)
    if override:
        rows, cols = rows / override, cols / override
    # (1 + 1e-6): the layer divides in its own dtype, whose 1/divisor may round up (float32: by < 6e-8)
    return _round_up(math.sqrt(rows * cols), 1e-6)


def _round_down(exact: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast float64 radii to ``dtype`` rounding towards -inf, so that a certified radius is never rounded up."""
    out = exact.to(dtype)
    up = out.double() > exact
    return torch.where(up, torch.nextafter(out, torch.full_like(out, -math.inf)), out)


def _check_L(L: float | Tensor, name: str = "L") -> None:
    if bool(torch.as_tensor(L).le(0).any()) or not bool(torch.isfinite(torch.as_tensor(L)).all()):
        raise AdvlabError(f"{name} must be a positive finite Lipschitz constant, got {L}.")


def certified_radius(logits: Tensor, L: float | Tensor) -> Tensor:
    """L2 radius within which the prediction of an L-Lipschitz network cannot change.

    ``margin / (sqrt(2) L)`` with margin = top logit - runner-up (Tsuzuku et al. 2018): moving by δ changes
    the logit vector by at most L·||δ||, and closing a gap between two logits takes a change of at least
    gap/sqrt(2). logits: (N, K), K >= 2; L: scalar or (N,). Returns (N,) radii in pixel units.
    """
    check_logits(logits)
    if logits.shape[1] < 2:
        raise AdvlabError("Certificates need at least 2 classes.")
    _check_L(L)
    # in float64 on the CPU (mps has no float64): the margin of float32 logits is exact there
    top2 = _cpu64(logits).topk(2, dim=1).values
    L64 = _cpu64(L)
    return _round_down((top2[:, 0] - top2[:, 1]) / (math.sqrt(2) * L64), logits.dtype).to(logits.device)


def certified_radius_pairwise(logits: Tensor, weight: Tensor, L_penultimate: float | Tensor) -> Tensor:
    """Tighter radius using the last (linear) layer: ``min_{j != ŷ} (z_ŷ - z_j) / (L_pen ||w_ŷ - w_j||)``.

    For ``z = W h(x) + b`` with h L_pen-Lipschitz, ``z_ŷ - z_j = (w_ŷ - w_j)·h + const`` changes by at most
    ``||w_ŷ - w_j|| L_pen ||δ||``. Since ``||w_ŷ - w_j|| <= sqrt(2) ||W||_2`` this is never smaller than
    :func:`certified_radius` with L = L_pen ||W||_2.

    Args:
        logits: (N, K).
        weight: (K, D) the last layer's weight.
        L_penultimate: Lipschitz constant of everything before the last layer (scalar or (N,)).

    Returns:
        (N,) radii (``inf`` where no other class can ever overtake ŷ).
    """
    check_logits(logits)
    if weight.ndim != 2 or weight.shape[0] != logits.shape[1]:
        raise AdvlabError(f"weight must be (K, D) with K = {logits.shape[1]} classes, got {tuple(weight.shape)}.")
    _check_L(L_penultimate, "L_penultimate")
    z = _cpu64(logits)  # in float64 (on the CPU: mps has none), rounded down to the logits' dtype
    w = _cpu64(weight)
    pred = z.argmax(1)
    gaps = z.gather(1, pred[:, None]) - z  # (N, K), >= 0
    dist = (w[pred][:, None, :] - w[None, :, :]).norm(dim=2)  # (N, K)
    L = _cpu64(L_penultimate).reshape(-1, 1)
    ratio = torch.where(dist > 0, gaps / (L * dist).clamp_min(1e-300), torch.full_like(gaps, math.inf))
    ratio = ratio.scatter(1, pred[:, None], math.inf)  # exclude j = ŷ
    return _round_down(ratio.min(1).values, logits.dtype).to(logits.device)


def _last_weight(model: nn.Module) -> Tensor:
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        raise AdvlabError("The pairwise certificate needs an nn.Sequential whose last layer is linear.")
    w = getattr(model[-1], "weight", None)
    if not isinstance(w, Tensor) or w.ndim != 2:
        raise AdvlabError(f"The last layer must be linear with a (K, D) weight, got {type(model[-1]).__name__}; "
                          "use pairwise=False.")
    return w.detach()


@on_model_device
def certify(model: nn.Module, x: Tensor, L: float | None = None, pairwise: bool = False,
            batch_size: int = 1024, *, L_penultimate: float | None = None) -> tuple[Tensor, Tensor]:
    """Predictions and certified L2 radii of a Lipschitz-bounded model on a batch.

    Args:
        model: an ``nn.Sequential`` taking [0, 1] inputs (eval mode is used).
        x: (N, C, H, W) or (N, D) in [0, 1].
        L: the whole network's Lipschitz bound, for ``pairwise=False`` (computed by :func:`network_lipschitz`
            when None).
        pairwise: use :func:`certified_radius_pairwise` with the last layer's weight.
        L_penultimate: for ``pairwise=True``: the bound of everything before the last layer, ``model[:-1]``
            (computed when None). The two constants are different things, so each has its own name.

    Returns:
        ``(pred, radius)``, both (N,): predicted class and the radius in pixel units within which it
        provably does not change.
    """
    if pairwise and L is not None:
        raise AdvlabError("With pairwise=True the certificate needs the bound of model[:-1], not of the whole network: "
                          "pass L_penultimate= (or nothing, and it is computed).")
    if not pairwise and L_penultimate is not None:
        raise AdvlabError("L_penultimate is the bound of model[:-1], used only with pairwise=True; pass L= (the "
                          "whole network's bound) otherwise.")
    x, _ = check_inputs(x)
    with eval_mode(model):
        logits = logits_of(model, x, batch_size)
        if pairwise:
            weight = _last_weight(model)
            L_pen = network_lipschitz(model[:-1], x.shape[1:]) if L_penultimate is None else L_penultimate
            radius = certified_radius_pairwise(logits, weight, L_pen)
        else:
            radius = certified_radius(logits, network_lipschitz(model, x.shape[1:]) if L is None else L)
    return logits.argmax(1), radius


@on_model_device
def certified_accuracy(model: nn.Module, x: Tensor, y: Tensor, radii: Sequence[float] | Tensor,
                       L: float | None = None, pairwise: bool = False, batch_size: int = 1024, *,
                       L_penultimate: float | None = None) -> Tensor:
    """Certified accuracy at each radius: the fraction of inputs classified correctly AND with radius >= r.

    Args:
        model, x, L, pairwise, batch_size, L_penultimate: see :func:`certify`.
        y: (N,) labels.
        radii: the L2 radii (pixel units) to report.

    Returns:
        (len(radii),) float tensor on the CPU; at r = 0 it is the clean accuracy.
    """
    x, y = check_inputs(x, y)
    pred, radius = certify(model, x, L=L, pairwise=pairwise, batch_size=batch_size, L_penultimate=L_penultimate)
    r = torch.as_tensor(radii, dtype=radius.dtype, device=radius.device).reshape(-1)
    ok = (pred == y)[None, :] & (radius[None, :] >= r[:, None])
    return ok.float().mean(1).cpu()
