"""Cached experiment results (advlab.results): keys, caching, corruption, and the zoo's delegation to them."""

import dataclasses
import json

import pytest

import advlab
from advlab import results, zoo


def test_every_shipped_result_matches_its_entry():
    shipped = sorted(results.RESULTS_SHIPPED.glob("*.json"))
    assert shipped, "no cached results shipped"
    for path in shipped:
        record = json.loads(path.read_text())
        key, _ = results.result_key(record["name"], record["profile"])
        assert record["key"] == key, (
            f"{path.name} is stale (its entry or a zoo model it uses changed): "
            f"recompute it with python -m advlab.results {record['name']} --ship"
        )


@pytest.fixture
def tiny_result(monkeypatch):
    """A RESULTS entry backed by a counting function that returns a dataclass holding a tuple."""

    @dataclasses.dataclass
    class Out:
        value: tuple
        n: int

    calls = []

    def experiment(n, progress=True):
        calls.append(n)
        return Out((n, n + 1), n)

    monkeypatch.setitem(results.FUNCTIONS, "tiny-experiment", experiment)
    monkeypatch.setitem(
        results.RESULTS,
        "tiny-result",
        {"description": "test entry", "fn": "tiny-experiment", "zoo": ["mnist-logistic"],
         "kwargs": {"fast": {"n": 3}, "full": {"n": 4}}, "version": 1},
    )
    return calls


def test_result_is_computed_once_then_cached(tiny_result):
    out = zoo.result("tiny-result", profile="fast", progress=False)
    assert out == {"value": [3, 4], "n": 3} and tiny_result == [3]  # a dataclass, JSON round trip: tuple -> list
    assert zoo.result("tiny-result", profile="fast", progress=False) == out and tiny_result == [3]
    folder = advlab.cache_dir() / "results"
    key, record = results.result_key("tiny-result", "fast")
    assert (folder / f"tiny-result-fast-{key}.json").exists() and not list(folder.glob("*.tmp"))
    assert record["zoo_keys"]["mnist-logistic"] == zoo.cache_key("mnist-logistic", "fast")[0]
    assert record["version"] == 1 and "sources" not in record  # keyed on the entry, not on source text


def test_result_key_covers_version_models_and_kwargs(tiny_result, monkeypatch):
    key, _ = results.result_key("tiny-result", "fast")
    monkeypatch.setitem(results.RESULTS["tiny-result"]["kwargs"], "fast", {"n": 5})
    assert results.result_key("tiny-result", "fast")[0] != key
    assert zoo.result_info("tiny-result", "fast", compute=False) is None and tiny_result == []
    monkeypatch.setitem(results.RESULTS["tiny-result"]["kwargs"], "fast", {"n": 3})
    assert results.result_key("tiny-result", "fast")[0] == key
    monkeypatch.setitem(results.RESULTS["tiny-result"], "version", 2)  # the computation changed: a new key
    assert results.result_key("tiny-result", "fast")[0] != key
    monkeypatch.setitem(results.RESULTS["tiny-result"], "version", 1)
    assert results.result_key("tiny-result", "fast")[0] == key
    monkeypatch.setitem(zoo.RECIPES["mnist-logistic"]["fit"], "fast", {"epochs": 1})
    assert results.result_key("tiny-result", "fast")[0] != key
    with pytest.raises(advlab.AdvlabError, match="tiny-result"):
        zoo.result("no-such-result")


def test_a_corrupt_result_is_recomputed(tiny_result):
    zoo.result("tiny-result", profile="fast", progress=False)
    before = len(tiny_result)  # 0 or 1: an earlier test may have cached it already
    key, _ = results.result_key("tiny-result", "fast")
    (advlab.cache_dir() / "results" / f"tiny-result-fast-{key}.json").write_text("{not json")
    with pytest.warns(UserWarning, match="recomputed"):
        assert zoo.result("tiny-result", profile="fast", progress=False)["n"] == 3
    assert len(tiny_result) == before + 1


def test_a_course_seeded_result_follows_the_course_seed(tiny_result, monkeypatch):
    """An entry with "course_seed" runs with seed=ADVLAB_SEED: the course under another seed recomputes it (so the
    perturbed-seed pass tests its claims afresh); without the flag the seed is the entry's own."""
    monkeypatch.delenv("ADVLAB_SEED", raising=False)
    plain, _ = results.result_key("tiny-result", "fast")
    monkeypatch.setitem(results.RESULTS["tiny-result"], "course_seed", True)
    key0, record0 = results.result_key("tiny-result", "fast")
    assert record0["kwargs"] == {"n": 3, "seed": 0} and key0 != plain
    monkeypatch.setenv("ADVLAB_SEED", "7")
    key7, record7 = results.result_key("tiny-result", "fast")
    assert record7["kwargs"] == {"n": 3, "seed": 7} and key7 != key0
    monkeypatch.setitem(results.FUNCTIONS, "tiny-experiment", lambda n, seed, progress=True: {"n": n, "seed": seed})
    assert zoo.result("tiny-result", profile="fast", progress=False) == {"n": 3, "seed": 7}
    monkeypatch.delitem(results.RESULTS["tiny-result"], "course_seed")
    assert results.result_key("tiny-result", "fast")[0] == plain  # the flag off: the seed does not matter


def test_every_entry_ships_its_fast_result(monkeypatch):
    """The notebooks read these on a fresh machine (Binder, CI): a missing one would be recomputed there (minutes)."""
    monkeypatch.delenv("ADVLAB_SEED", raising=False)  # shipped under the default course seed
    for name in results.RESULTS:
        key, _ = results.result_key(name, "fast")
        assert (results.RESULTS_SHIPPED / f"{name}-fast-{key}.json").exists(), (
            f"{name} is not shipped for the fast profile: python -m advlab.results {name} --ship")
