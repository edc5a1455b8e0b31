"""Registry: built-in names, near-match errors and duplicate registration."""

from __future__ import annotations

import pytest

from genunlearn import registry
from genunlearn.types import GenUnlearnError


def test_builtin_method_names_are_listed_sorted():
    names = registry.names("method")
    assert {"original", "negative_prompt"} <= set(names)
    assert names == sorted(names)


def test_get_returns_the_registered_entry():
    entry = registry.get("method", "original")
    assert entry.name == "original" and callable(entry.fn)
    assert entry.fn.__module__ == "genunlearn.methods.original"
    # The summary is the first line of the method module's docstring.
    assert entry.summary.startswith("original")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(GenUnlearnError) as e:
        registry.get("method", "negative_promt")
    msg = str(e.value)
    assert "Did you mean 'negative_prompt'" in msg
    assert "'negative_promt'" in msg and "original" in msg


def test_unknown_name_message_without_close_match():
    msg = registry.unknown_name_message("attack", "qqqqqq", ["alpha", "beta"])
    assert "Did you mean" not in msg and "alpha, beta" in msg and "'qqqqqq'" in msg
    assert "(none)" in registry.unknown_name_message("metric", "x", [])


def test_registering_an_existing_builtin_name_raises_and_keeps_the_original():
    before = registry.get("method", "original").fn
    with pytest.raises(GenUnlearnError, match="registered twice"):
        registry.register_method("original")(lambda model, task, cfg: None)
    assert registry.get("method", "original").fn is before


def test_duplicate_registration_raises_in_a_fresh_registry(monkeypatch):
    fresh = {"method": {}, "attack": {}, "metric": {}}
    monkeypatch.setattr(registry, "_REGISTRIES", fresh)

    def first(model, task, cfg):
        return None

    def second(model, task, cfg):
        return None

    registry.register_attack("probe", presets={"toy": {"steps": 1}})(first)
    assert fresh["attack"]["probe"].fn is first
    assert fresh["attack"]["probe"].presets == {"toy": {"steps": 1}}
    with pytest.raises(GenUnlearnError, match="probe"):
        registry.register_attack("probe")(second)
    assert fresh["attack"]["probe"].fn is first
    # Same name in a different kind is allowed.
    registry.register_metric("probe")(second)
    assert fresh["metric"]["probe"].fn is second


def test_free_text_target_unknown_to_the_world_warns_with_its_tokens(tiny_model):
    import warnings

    from genunlearn.api import resolve_task

    with pytest.warns(UserWarning, match="tokenizes to"):
        resolve_task(tiny_model, "van gogh painting")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_task(tiny_model, "a striped star")  # known words: no warning
