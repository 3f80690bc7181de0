import pytest
import torch

import advlab
from advlab import config


def test_device_default_and_override(monkeypatch):
    monkeypatch.delenv("ADVLAB_DEVICE", raising=False)
    # the default prefers cuda, then mps, then the cpu; the accelerators are simulated so every branch runs here
    for cuda, mps, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda mps=mps: mps)
        assert advlab.device() == torch.device(expected), (cuda, mps)
    monkeypatch.undo()
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
    # unset or empty: ~/.cache/advlab in the user's home, created on demand (stand-in homes, not the user's cache)
    for home, unset in (("a", monkeypatch.delenv), ("b", lambda name: monkeypatch.setenv(name, ""))):
        monkeypatch.setenv("HOME", str(tmp_path / home))
        unset("ADVLAB_CACHE")
        assert advlab.cache_dir() == tmp_path / home / ".cache" / "advlab"
        assert (tmp_path / home / ".cache" / "advlab").is_dir()


def test_seed_everything_repeats_streams():
    advlab.seed_everything(3)
    a = torch.rand(5)
    advlab.seed_everything(3)
    assert torch.equal(a, torch.rand(5))
    assert torch.are_deterministic_algorithms_enabled()
    # the fill is off (why: test_training_is_bit_identical_without_the_deterministic_modes_memory_fill)
    assert not torch.utils.deterministic.fill_uninitialized_memory
    g = config.seed_everything(4)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(4)))


def test_every_listed_submodule_loads_lazily():
    import importlib

    for name in advlab._SUBMODULES:  # (advlab.lipschitz and advlab.smoothing are names of defenses' modules)
        assert getattr(advlab, name) is importlib.import_module(f"advlab.{name}")
    with pytest.raises(AttributeError):
        advlab.not_a_module  # noqa: B018


def test_course_seed_comes_from_advlab_seed(monkeypatch):
    monkeypatch.delenv("ADVLAB_SEED", raising=False)
    assert advlab.seed() == 0 and advlab.seed(3) == 3
    monkeypatch.setenv("ADVLAB_SEED", "5")
    assert advlab.seed() == 5 and advlab.seed(2) == 7
    expected = torch.rand(4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.rand(4, generator=advlab.generator(1)), expected)
    advlab.seed_everything()  # None: the course seed
    a = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3))
    monkeypatch.setenv("ADVLAB_SEED", "one")
    with pytest.raises(advlab.AdvlabError, match="ADVLAB_SEED"):
        advlab.seed()


def _mlp():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def test_jitter_is_off_by_default(monkeypatch):
    monkeypatch.delenv("ADVLAB_JITTER", raising=False)
    model, ref = _mlp(), _mlp()
    config.jitter_weights(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_jitter_moves_last_bits_reproducibly_and_privately(monkeypatch):
    monkeypatch.setenv("ADVLAB_JITTER", "1e-6")
    ref = _mlp()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = config.jitter_weights(_mlp()), config.jitter_weights(_mlp())
    assert torch.equal(torch.random.get_rng_state(), before), "the caller's random state must not change"
    moved = 0
    for (name, pa), pb, p0 in zip(a.state_dict().items(), b.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(pa, pb), f"{name}: jitter must be the same on every call"
        if not p0.is_floating_point():
            assert torch.equal(pa, p0), f"{name}: integer buffers are left alone"
            continue
        rel = ((pa - p0).abs() / p0.abs().clamp_min(1e-30)).max().item()
        assert rel < 1e-5, f"{name}: jitter of 1e-6 moved a value by {rel:.1e} (relative)"
        moved += int(not torch.equal(pa, p0))
    assert moved >= 4, "the weights, biases and batch-norm statistics should all move"


@pytest.mark.parametrize("value", ["-1e-6", "0.5", "nan", "tiny"])
def test_jitter_rejects_bad_levels(monkeypatch, value):
    monkeypatch.setenv("ADVLAB_JITTER", value)
    with pytest.raises(advlab.AdvlabError, match="ADVLAB_JITTER"):
        config.jitter_weights(_mlp())


def test_zoo_models_and_training_are_jittered(monkeypatch):
    from advlab import data, train, zoo

    monkeypatch.delenv("ADVLAB_JITTER", raising=False)
    plain = zoo.load("mnist-logistic", progress=False)
    monkeypatch.setenv("ADVLAB_JITTER", "1e-6")
    jittered = zoo.load("mnist-logistic", progress=False)
    diffs = [(p - q).abs().max().item() for p, q in zip(plain.parameters(), jittered.parameters())]
    assert 0 < max(diffs) < 1e-4
    x, y, _ = data.load("mnist", "train", n=64)
    runs = []
    for level in ("0", "1e-6"):
        monkeypatch.setenv("ADVLAB_JITTER", level)
        model = zoo.build("mnist-logistic")
        train.fit(model, x, y, epochs=1, progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(*runs), "train.fit must start from jittered weights"


def test_zoo_refuses_to_train_and_cache_under_jitter(monkeypatch, tmp_path):
    from advlab import zoo

    monkeypatch.setenv("ADVLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("ADVLAB_JITTER", "1e-6")
    with pytest.raises(advlab.AdvlabError, match="ADVLAB_JITTER"):
        zoo.load("mnist-logistic", retrain=True, progress=False)
    assert not list(tmp_path.rglob("*.pt"))


def _global_state():
    import random

    import numpy as np

    return (random.getstate(), np.random.get_state()[1].tobytes(), torch.random.get_rng_state(),  # noqa: NPY002
            torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.utils.deterministic.fill_uninitialized_memory)


def _same(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and a[3:] == b[3:]


def test_training_is_bit_identical_without_the_deterministic_modes_memory_fill(monkeypatch):
    # seed_everything switches off the NaN fill of new tensors that deterministic mode adds (a pass per allocation,
    # 2-6 % of a PGD-AT epoch on CPU): that is only sound if no op of a training run reads memory it did not write,
    # which the fill would turn into NaN weights, and garbage would make them differ
    from advlab import data, models, train
    from advlab.defenses.adversarial import PGDPerturb

    x, y, _ = data.load("mnist", "train", n=96)
    seed_everything = config.seed_everything
    weights = []
    for fill in (True, False):

        def seeded(*args, fill=fill, **kwargs):  # fit's own seeding, then the fill of this run
            gen = seed_everything(*args, **kwargs)
            torch.utils.deterministic.fill_uninitialized_memory = fill
            return gen

        monkeypatch.setattr(config, "seed_everything", seeded)
        torch.manual_seed(0)
        net = models.mnist_net()
        train.fit(net, x, y, epochs=1, batch_size=32, progress=False, seed=5, perturb=PGDPerturb(0.3, steps=2))
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert bool(weights[0].isfinite().all())
    assert torch.equal(weights[0], weights[1])


def test_library_calls_leave_the_callers_random_state_and_flags_alone():
    # zoo.load (through build), train.fit and a results helper seed the global RNGs to be reproducible; the caller's
    # streams and the deterministic-algorithms flag must be as they were (issue: every zoo.load reseeded them to 0).
    from advlab import data, models, train, zoo

    torch.use_deterministic_algorithms(False)
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = True  # what seed_everything switches off
    try:
        net = models.mlp(hidden=8, depth=1)  # (its initialisation draws from the global stream, so before `before`)
        x, y, _ = data.load("mnist", "train", n=64)
        torch.manual_seed(1234)
        before = _global_state()
        zoo.load("mnist-cnn", progress=False)
        train.fit(net, x, y, epochs=1, batch_size=32, progress=False, seed=3)
        assert _same(before, _global_state())
        draw = torch.rand(3)
        torch.manual_seed(1234)
        assert torch.equal(draw, torch.rand(3))  # the caller's next draw is the one it would have had
    finally:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def test_preserved_random_state_restores_after_an_error():
    torch.manual_seed(7)
    before = _global_state()
    with pytest.raises(RuntimeError), config.preserved_random_state():
        config.seed_everything(99, deterministic=not torch.are_deterministic_algorithms_enabled())
        torch.rand(10)
        raise RuntimeError("boom")
    assert _same(before, _global_state())
