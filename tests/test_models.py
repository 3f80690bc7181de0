import pytest
import torch
from conftest import DEVICES

from advlab import AdvlabError, models


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "name,shape,kwargs",
    [
        ("logistic", (1, 28, 28), {}),
        ("mlp", (1, 28, 28), {"width": 0.5}),
        ("mnist_net", (1, 28, 28), {}),
        ("madry_cnn", (1, 28, 28), {"width": 0.25}),
        ("preact_resnet18", (3, 32, 32), {"width": 0.125}),
    ],
)
def test_models_take_pixels_and_return_logits(name, shape, kwargs, device):
    model = models.build(name, **kwargs).to(device).eval()
    assert isinstance(model[0], models.Normalize), "normalization must live inside the model"
    x = torch.rand(4, *shape, device=device)
    out = model(x)
    assert out.shape == (4, 10)
    assert out.requires_grad and torch.isfinite(out).all()


def test_width_multiplier_scales_capacity():
    small, big = models.num_parameters(models.madry_cnn(width=0.5)), models.num_parameters(models.madry_cnn(width=2))
    assert big > 4 * small
    assert models.num_parameters(models.madry_cnn()) > 3_000_000  # conv32-conv64-FC1024 as in Madry et al.


def test_normalize_is_per_channel():
    norm = models.Normalize((0.5, 0.0, 1.0), (0.5, 1.0, 2.0))
    x = torch.ones(1, 3, 2, 2)
    assert torch.allclose(norm(x)[0, :, 0, 0], torch.tensor([1.0, 1.0, 0.0]))


def test_unknown_architecture():
    with pytest.raises(AdvlabError, match="mnist_net"):
        models.build("resnet9000")
