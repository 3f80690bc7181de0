"""The models of the course. Every model takes [0, 1] pixels and returns logits.

Normalization lives inside the model (:class:`Normalize` as the first layer), so attacks, projections
and ε are always in pixel units. ``width`` multiplies the number of channels / hidden units, for the
capacity experiments of Madry et al. (2017).

=================== ======================================================= ==========
name                architecture                                            input
=================== ======================================================= ==========
``logistic``        Normalize → Flatten → Linear                            any
``mlp``             Normalize → Flatten → (Linear → ReLU) × depth → Linear  any
``mnist_net``       conv16 4×4/2 → conv32 4×4/2 → FC100 → FC (Wong 2020)   1×28×28
``madry_cnn``       conv32 5×5 → pool → conv64 5×5 → pool → FC1024 → FC     1×28×28
``preact_resnet18`` PreAct-ResNet-18 (He et al. 2016)                       3×32×32
=================== ======================================================= ==========
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from advlab.config import AdvlabError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the model's first layer. x: (N, C, H, W) or (N, D)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def _scaled(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def logistic(in_shape: Sequence[int] = (1, 28, 28), classes: int = 10, mean=MNIST_MEAN, std=MNIST_STD) -> nn.Sequential:
    """Multinomial logistic regression: a linear model on the flattened, normalized input."""
    return nn.Sequential(Normalize(mean, std), nn.Flatten(), nn.Linear(math.prod(in_shape), classes))


def mlp(
    in_shape: Sequence[int] = (1, 28, 28),
    classes: int = 10,
    hidden: int = 256,
    depth: int = 2,
    width: float = 1.0,
    mean=MNIST_MEAN,
    std=MNIST_STD,
) -> nn.Sequential:
    """A ReLU MLP with ``depth`` hidden layers of ``hidden·width`` units."""
    h = _scaled(hidden, width)
    layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
    fan_in = math.prod(in_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, h), nn.ReLU()]
        fan_in = h
    return nn.Sequential(*layers, nn.Linear(fan_in, classes))


def mnist_net(width: float = 1.0, classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """Wong et al. (2020)'s small MNIST CNN: two stride-2 4×4 convs and FC 100. ~0.17M params at width 1."""
    c1, c2, fc = _scaled(16, width), _scaled(32, width), _scaled(100, width)
    return nn.Sequential(
        Normalize(MNIST_MEAN, MNIST_STD),
        nn.Conv2d(in_channels, c1, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, fc),
        nn.ReLU(),
        nn.Linear(fc, classes),
    )


def madry_cnn(width: float = 1.0, classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """Madry et al. (2017)'s MNIST CNN: conv32 5×5, max-pool, conv64 5×5, max-pool, FC 1024."""
    c1, c2, fc = _scaled(32, width), _scaled(64, width), _scaled(1024, width)
    return nn.Sequential(
        Normalize(MNIST_MEAN, MNIST_STD),
        nn.Conv2d(in_channels, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, fc),
        nn.ReLU(),
        nn.Linear(fc, classes),
    )


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN → ReLU → conv3×3 → BN → ReLU → conv3×3, plus shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


def preact_resnet18(classes: int = 10, width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    """PreAct-ResNet-18 for 32×32 inputs (CIFAR-10), widths 64-128-256-512 times ``width``."""
    widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
    layers: list[nn.Module] = [
        Normalize(CIFAR_MEAN, CIFAR_STD),
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
    ]
    c_in = widths[0]
    for i, c in enumerate(widths):
        for j in range(2):
            layers.append(PreActBlock(c_in, c, stride=2 if (i > 0 and j == 0) else 1))
            c_in = c
    layers += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


ARCHITECTURES = {
    "logistic": logistic,
    "mlp": mlp,
    "mnist_net": mnist_net,
    "madry_cnn": madry_cnn,
    "preact_resnet18": preact_resnet18,
}


def build(name: str, **kwargs) -> nn.Sequential:
    """Build an architecture by name (see :data:`ARCHITECTURES`)."""
    if name not in ARCHITECTURES:
        raise AdvlabError(f"Unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name](**kwargs)


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
