"""The model zoo: shipped checkpoints, cache keys, atomic writes and corruption handling."""

import json
import subprocess
import sys

import pytest
import torch

import advlab
from advlab import config, data, train, zoo


@pytest.fixture
def tiny_entry(monkeypatch):
    """A zoo entry that trains in a second or two, so the cache paths can be exercised."""
    monkeypatch.setitem(
        zoo.RECIPES,
        "tiny-logistic",
        {
            "description": "test entry",
            "arch": ["logistic", {}],
            "data": "toy-circle",
            "fit": {"fast": {"epochs": 1, "batch_size": 256, "lr": 0.01, "optimizer": "adam"}, "full": {"epochs": 2}},
        },
    )
    # a 2-D toy with a logistic model on 2 inputs and 2 classes
    monkeypatch.setitem(
        zoo.RECIPES["tiny-logistic"],
        "arch",
        ["logistic", {"in_shape": (2,), "classes": 2, "mean": (0.0,), "std": (1.0,)}],
    )
    return "tiny-logistic"


def test_shipped_mnist_cnn_loads_without_training_and_is_accurate(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the shipped checkpoint should have been used")

    monkeypatch.setattr(zoo, "train_entry", no_training)
    model = zoo.load("mnist-cnn", progress=False)
    assert not model.training
    record = zoo.info("mnist-cnn")
    assert record is not None and record["profile"] == "fast"
    x, y, _ = data.load("mnist", "test")
    acc = train.accuracy(model, x, y)
    assert acc == pytest.approx(record["metrics"]["test_accuracy"], abs=1e-3)
    assert acc >= 0.97


def test_every_shipped_checkpoint_matches_its_recipe():
    shipped = sorted(zoo.SHIPPED.glob("*.json"))
    assert shipped, "no checkpoints shipped"
    for meta in shipped:
        record = json.loads(meta.read_text())
        key, _ = zoo.cache_key(record["name"], record["profile"])
        assert record["key"] == key, f"{meta.name} is stale: rebuild it with python -m advlab.zoo build --ship"


def test_train_cache_and_reload(tiny_entry):
    model = zoo.load(tiny_entry, progress=False)
    key, _ = zoo.cache_key(tiny_entry, "fast")
    folder = advlab.cache_dir() / "zoo"
    pt, meta = folder / f"{tiny_entry}-fast-{key}.pt", folder / f"{tiny_entry}-fast-{key}.json"
    assert pt.exists() and meta.exists()
    assert not list(folder.glob("*.tmp")), "temp files must not be left behind"
    record = json.loads(meta.read_text())
    assert record["data_fingerprint"] and record["advlab_version"] == advlab.__version__
    assert 0.5 <= record["metrics"]["test_accuracy"] <= 1
    again = zoo.load(tiny_entry, progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_key_covers_what_changes_the_weights(tiny_entry, monkeypatch):
    key, _ = zoo.cache_key(tiny_entry, "fast")
    monkeypatch.setitem(zoo.RECIPES[tiny_entry], "description", "words do not change weights")
    assert zoo.cache_key(tiny_entry, "fast")[0] == key
    monkeypatch.setitem(zoo.RECIPES[tiny_entry]["fit"], "full", {"epochs": 99})
    assert zoo.cache_key(tiny_entry, "fast")[0] == key
    assert zoo.cache_key(tiny_entry, "full")[0] != key
    monkeypatch.setitem(
        zoo.RECIPES[tiny_entry]["fit"], "fast", {"epochs": 2, "batch_size": 256, "lr": 0.01, "optimizer": "adam"}
    )
    assert zoo.cache_key(tiny_entry, "fast")[0] != key
    before = zoo.cache_key(tiny_entry, "fast")[0]
    monkeypatch.setattr(config, "VERSION", "9.9.9")  # advlab.__version__
    assert zoo.cache_key(tiny_entry, "fast")[0] != before


@pytest.mark.parametrize("damage", ["truncate", "wrong_shape", "garbage_json"])
def test_corrupt_checkpoints_are_rebuilt(tiny_entry, damage):
    zoo.load(tiny_entry, progress=False)
    key, _ = zoo.cache_key(tiny_entry, "fast")
    folder = advlab.cache_dir() / "zoo"
    pt, meta = folder / f"{tiny_entry}-fast-{key}.pt", folder / f"{tiny_entry}-fast-{key}.json"
    if damage == "truncate":
        pt.write_bytes(pt.read_bytes()[:100])
    elif damage == "wrong_shape":
        torch.save({"1.weight": torch.zeros(3, 3), "1.bias": torch.zeros(3)}, pt)
        record = json.loads(meta.read_text())
        record["sha256"] = zoo._sha256(pt)  # even with a matching checksum, shapes are checked
        meta.write_text(json.dumps(record))
    else:
        meta.write_text("{not json")
    with pytest.warns(UserWarning, match="rebuilt"):
        model = zoo.load(tiny_entry, progress=False)
    assert model[-1].weight.shape == (2, 2)
    assert json.loads(meta.read_text())["sha256"] == zoo._sha256(pt)


def test_a_rebuild_starts_from_fresh_weights(tiny_entry, monkeypatch):
    # A checkpoint whose first tensor fits and whose second does not: load_state_dict copies the first before it
    # fails. The rebuild must train from a freshly initialised model, not from those copied weights.
    zoo.load(tiny_entry, progress=False)
    key, _ = zoo.cache_key(tiny_entry, "fast")
    pt = advlab.cache_dir() / "zoo" / f"{tiny_entry}-fast-{key}.pt"
    state = torch.load(pt, weights_only=True)
    first, second = list(state)[:2]
    bad = {k: torch.full_like(v, 7.0) for k, v in state.items()}
    bad[second] = torch.zeros(3, 3)
    torch.save(bad, pt)
    meta = pt.with_suffix(".json")
    record = json.loads(meta.read_text())
    record["sha256"] = zoo._sha256(pt)  # a matching checksum, so that loading gets as far as load_state_dict
    meta.write_text(json.dumps(record))
    started_from = {}

    def record_start(model, *args, **kwargs):
        started_from["first"] = model.state_dict()[first].clone()
        raise RuntimeError("stop before training")

    monkeypatch.setattr(zoo, "save", record_start)
    with pytest.warns(UserWarning, match="rebuilt"), pytest.raises(RuntimeError, match="stop before training"):
        zoo.load(tiny_entry, progress=False)
    assert torch.equal(started_from["first"], zoo.build(tiny_entry, "fast").state_dict()[first])


def test_unknown_name_is_clear():
    with pytest.raises(advlab.AdvlabError, match="mnist-cnn"):
        zoo.load("mnist-resnet-9000")


def test_recipes_may_choose_the_architecture_per_profile():
    from advlab import models

    assert zoo.architecture("mnist-cnn-pgd", "full")[0] == "madry_cnn"  # Madry et al.'s CNN, paper-sized
    assert zoo.architecture("mnist-cnn-pgd", "fast")[0] == "mnist_net"
    assert isinstance(zoo.build("mnist-cnn-pgd", "full")[1], torch.nn.Conv2d)
    assert models.num_parameters(zoo.build("mnist-cnn-pgd", "full")) > 3_000_000


# --- registration from above -------------------------------------------------------------------------------------


def test_the_zoo_knows_the_registered_entries_after_only_importing_it():
    # A fresh interpreter: importing the zoo imports no upper layer; its first use registers them all, so that
    # zoo.load("mnist-cnn-pgd") finds the shipped checkpoint (a wrong key would mean training: zoo.save refuses).
    code = """
import sys
from advlab import zoo
upper = ("advlab.defenses", "advlab.eval", "advlab.vae", "advlab.results", "advlab.features", "advlab.manifold")
assert not [m for m in upper if m in sys.modules], sorted(m for m in sys.modules if m.startswith(upper))
def refuse(*args, **kwargs):
    raise SystemExit("zoo.load trained instead of loading the shipped checkpoint")
zoo.save = refuse
model = zoo.load("mnist-cnn-pgd", profile="fast", progress=False)
assert "mnist-vae" in zoo.names() and "mnist-lipschitz" in zoo.names()
assert zoo.result_info("data-size-mnist", "fast", compute=False) is not None
print(type(model).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Sequential"


def test_every_shipped_cached_result_is_found_through_the_zoo():
    from advlab import results

    shipped = sorted(results.RESULTS_SHIPPED.glob("*.json"))
    assert shipped, "no cached results shipped"
    for path in shipped:
        record = json.loads(path.read_text())
        found = zoo.result_info(record["name"], record["profile"], compute=False)
        assert found is not None and found["key"] == record["key"], f"{path.name} is not found by its key"


def test_an_unregistered_name_is_a_clear_error():
    with pytest.raises(advlab.AdvlabError, match="registered"):
        zoo.function("advlab.nowhere:trainer")


# --- recorded evaluation and the build check ---------------------------------------------------------------------


@pytest.fixture
def tiny_evaluated(tiny_entry, monkeypatch):
    """tiny_entry with the AutoAttack-grade record every classifier entry carries (L∞, a small radius)."""
    monkeypatch.setitem(zoo.RECIPES[tiny_entry], "eval", zoo.autoattack_eval(0.05, "inf"))
    return tiny_entry


def test_the_recorded_robust_accuracy_is_the_autoattack_grade_default(tiny_evaluated):
    from advlab.eval import robust_accuracy

    model = zoo.load(tiny_evaluated, progress=False)
    rec = zoo.info(tiny_evaluated, "fast")["metrics"]["autoattack_grade"]
    xt, yt, _ = data.load("toy-circle", "test", profile="fast")
    rep = robust_accuracy(model, xt, yt, 0.05, "inf")
    assert rec["n"] == len(yt) and rec["correct"] == int(rep.robust.sum())
    assert rec["accuracy"] == rec["correct"] / rec["n"]
    assert rec["interval_95"][0] <= rec["accuracy"] <= rec["interval_95"][1]
    assert rec["chain"].startswith("apgd-ce") and "square" in rec["chain"] and rec["norm"] == "Linf"
    assert rec["accuracy"] < rec["clean_accuracy"]  # a logistic model on the circle is not robust at 0.05


def test_reevaluate_refreshes_metrics_without_touching_the_weights(tiny_evaluated):
    zoo.load(tiny_evaluated, progress=False)
    key, _ = zoo.cache_key(tiny_evaluated, "fast")
    folder = advlab.cache_dir() / "zoo"
    pt, meta = folder / f"{tiny_evaluated}-fast-{key}.pt", folder / f"{tiny_evaluated}-fast-{key}.json"
    weights, record = pt.read_bytes(), json.loads(meta.read_text())
    record["metrics"]["pgd_accuracy"] = 0.99  # a retired metric from an older record
    record["metrics"]["autoattack_grade"]["accuracy"] = 1.5  # a stale number
    meta.write_text(json.dumps(record))
    fresh = zoo.reevaluate(tiny_evaluated, "fast", folder)
    assert pt.read_bytes() == weights and fresh["sha256"] == record["sha256"]
    assert "pgd_accuracy" not in fresh["metrics"] and fresh["metrics"]["autoattack_grade"]["accuracy"] <= 1
    assert fresh["metrics"]["train_seconds"] == record["metrics"]["train_seconds"]  # training metrics are kept
    assert json.loads(meta.read_text()) == fresh


def test_build_fails_when_a_recorded_robust_accuracy_drops_by_more_than_the_tolerance(tiny_evaluated, monkeypatch):
    zoo.load(tiny_evaluated, progress=False)
    key, _ = zoo.cache_key(tiny_evaluated, "fast")
    meta = advlab.cache_dir() / "zoo" / f"{tiny_evaluated}-fast-{key}.json"
    recorded = json.loads(meta.read_text())["metrics"]["autoattack_grade"]["accuracy"]

    def claim(accuracy):
        record = json.loads(meta.read_text())
        record["metrics"]["autoattack_grade"]["accuracy"] = accuracy
        meta.write_text(json.dumps(record))

    claim(recorded + 0.015)  # within 2 pp of what the rebuild measures: passes
    assert zoo._main(["build", tiny_evaluated]) == 0
    claim(recorded + 0.03)  # the rebuild would be 3 pp below the record: fails
    assert zoo._main(["build", tiny_evaluated]) == 1
    claim(recorded + 0.03)
    assert zoo._main(["build", tiny_evaluated, "--tolerance", "0.05"]) == 0
