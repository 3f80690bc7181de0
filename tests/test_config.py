import pytest
import torch

import advlab
from advlab import config


def test_device_default_and_override(monkeypatch):
    monkeypatch.delenv("ADVLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    dev = advlab.device()
    if expected:
        assert dev.type == expected
    assert isinstance(dev, torch.device)
    monkeypatch.setenv("ADVLAB_DEVICE", "cpu")
    assert advlab.device() == torch.device("cpu")
    monkeypatch.setenv("ADVLAB_DEVICE", "not-a-device")
    with pytest.raises(advlab.AdvlabError, match="ADVLAB_DEVICE"):
        advlab.device()


def test_profile_env_and_setter(monkeypatch):
    monkeypatch.delenv("ADVLAB_PROFILE", raising=False)
    assert advlab.profile() == "fast"
    monkeypatch.setenv("ADVLAB_PROFILE", "full")
    assert advlab.profile() == "full"
    try:
        assert advlab.set_profile("fast") == "fast"
        assert advlab.profile() == "fast"
    finally:
        advlab.set_profile(None)
    monkeypatch.setenv("ADVLAB_PROFILE", "huge")
    with pytest.raises(advlab.AdvlabError, match="fast"):
        advlab.profile()
    with pytest.raises(advlab.AdvlabError):
        advlab.set_profile("huge")


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path / "c"))
    assert advlab.cache_dir() == tmp_path / "c"
    assert (tmp_path / "c").is_dir()
    monkeypatch.delenv("ADVLAB_CACHE")
    assert str(advlab.cache_dir()).endswith(".cache/advlab")


def test_seed_everything_repeats_streams():
    advlab.seed_everything(3)
    a = torch.rand(5)
    advlab.seed_everything(3)
    assert torch.equal(a, torch.rand(5))
    assert torch.are_deterministic_algorithms_enabled()
    g = config.seed_everything(4)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(4)))


def test_every_listed_submodule_loads_lazily():
    for name in advlab._SUBMODULES:
        assert getattr(advlab, name).__name__ == f"advlab.{name}"
    with pytest.raises(AttributeError):
        advlab.not_a_module  # noqa: B018
