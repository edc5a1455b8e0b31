"""Contract tests over every registered method on the tiny testbed (mechanics, not quality)."""

from __future__ import annotations

import re

import pytest
import torch

import genunlearn as gu
from genunlearn import registry


def _erase(model, method, concept, *args, **kw):
    """Erase with the method's 'smoke' preset (shrunk settings; every method has one)."""
    return gu.erase(model, method, concept, *args, preset="smoke", **kw)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


METHODS = gu.list_methods()


@pytest.mark.parametrize("method", METHODS)
def test_method_leaves_input_model_untouched_and_changes_only_declared(method, tiny_model):
    entry = registry.get("method", method)
    before = _params(tiny_model)
    concept = "star"
    run = _erase(tiny_model, method, concept, seed=0)
    after = _params(tiny_model)
    assert all(torch.equal(before[n], after[n]) for n in before), "erase changed its input model"
    allowed = re.compile(entry.modifies) if entry.modifies else None
    for name in run.result.changed:
        assert allowed is not None and allowed.search(name), (
            f"{method} changed {name}, outside its declared modifies={entry.modifies!r}"
        )
    # the changed tensors are exactly the parameters that differ from the base model
    erased = _params(run.model)
    differ = {n for n in before if not torch.equal(before[n], erased[n])}
    assert differ == set(run.result.changed)


@pytest.mark.parametrize("method", METHODS)
def test_teachers_keep_their_weights_while_sharing_storage(method, tiny_model, monkeypatch):
    """Copies share weight storage with their model (no second UNet in memory), so a method
    that wrote a weight in place without giving it storage of its own first would change its
    frozen teacher (or the user's model) behind its back. Every teacher a method makes must end
    with the weights it started with."""
    from genunlearn.models.sd import SDAdapter

    made, real = [], SDAdapter.frozen_copy

    def recording(self):
        teacher = real(self)
        made.append((teacher, _params(teacher)))
        return teacher

    monkeypatch.setattr(SDAdapter, "frozen_copy", recording)
    _erase(tiny_model, method, "star", seed=0)
    for teacher, start in made:
        now = _params(teacher)
        moved = [n for n in start if not torch.equal(start[n], now[n])]
        assert not moved, f"{method} changed its frozen teacher: {moved[:3]}"


def test_copies_share_storage_until_written(tiny_model):
    """The memory claim itself: a copy and a teacher hold no weight of their own until one is
    trained or written, and writing one leaves the other as it was."""
    from genunlearn.core.params import trainable

    work = tiny_model.copy(share=True)
    teacher = work.frozen_copy()
    ptr = {n: p.data_ptr() for n, p in tiny_model.named_parameters()}
    for m in (work, teacher):
        assert all(p.data_ptr() == ptr[n] for n, p in m.named_parameters())
    params = trainable(work, "kv")
    with torch.no_grad():
        for p in params.values():
            p.add_(1.0)
    for n, p in tiny_model.named_parameters():
        assert p.data_ptr() == ptr[n] and dict(teacher.named_parameters())[n].data_ptr() == ptr[n]
    assert set(work.state_delta(tiny_model)) == set(params)
    assert not teacher.state_delta(tiny_model)


@pytest.mark.parametrize("method", METHODS)
def test_method_is_deterministic(method, tiny_model):
    a = _erase(tiny_model, method, "striped", seed=3)
    b = _erase(tiny_model, method, "striped", seed=3)
    assert a.result.changed.keys() == b.result.changed.keys()
    for k in a.result.changed:
        assert torch.equal(a.result.changed[k], b.result.changed[k])
    assert a.result.inference == b.result.inference


@pytest.mark.parametrize("method", METHODS)
def test_artifact_round_trip(method, tiny_model, tmp_path):
    run = _erase(tiny_model, method, "red", tmp_path / "run", seed=1)
    assert not (tmp_path / "run" / "INCOMPLETE").exists()
    loaded = gu.load_run(tmp_path / "run", model=tiny_model)
    want = _params(run.model)
    got = _params(loaded)
    assert all(torch.equal(want[n], got[n]) for n in want)
    assert loaded.inference == run.model.inference
    prompts = ["a red star in flat style"]
    assert torch.equal(run.model.sample(prompts, n=2, seed=5), loaded.sample(prompts, n=2, seed=5))


@pytest.mark.parametrize("method", METHODS)
def test_method_has_paper_presets_and_docstring(method):
    entry = registry.get("method", method)
    assert {"toy", "paper"} <= set(entry.presets)
    mod = __import__(entry.fn.__module__, fromlist=["_"])
    assert re.search(r"arxiv|doi|https?://", (mod.__doc__ or "")[:1500], re.I)


def test_negative_prompt_is_inference_only_and_used_by_sampler(tiny_model):
    run = gu.erase(tiny_model, "negative_prompt", "striped")
    assert run.result.changed == {}
    assert run.model.inference["negative_prompt"] == "striped style"
    p = ["a red star in striped style"]
    manual = tiny_model.sample(p, n=2, seed=0, negative_prompt="striped style")
    assert torch.equal(run.model.sample(p, n=2, seed=0), manual)
    assert not torch.equal(tiny_model.sample(p, n=2, seed=0), manual)


def test_unknown_method_and_bad_override_are_clear_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="Did you mean 'negative_prompt'"):
        gu.erase(tiny_model, "negative_promt", "star")
    with pytest.raises(gu.GenUnlearnError, match="unknown key 'txt'.*text"):
        gu.erase(tiny_model, "negative_prompt", "star", txt="x")
    with pytest.raises(gu.GenUnlearnError, match="Did you mean 'star'"):
        gu.erase(tiny_model, "original", "strar")


def test_resolve_config_layers_defaults_preset_file_and_overrides(tiny_model, tmp_path):
    entry = registry.get("method", "esd")
    paper = gu.resolve_config(tiny_model, "method", "esd", preset="paper")
    assert paper == entry.config()  # the paper preset is the config class's defaults
    toy = gu.resolve_config(tiny_model, "method", "esd")  # a model with a world: toy preset
    for key, value in entry.presets["toy"].items():
        assert getattr(toy, key) == value
    (tmp_path / "c.yaml").write_text("lr: 0.5\nsteps: 7\n")
    cfg = gu.resolve_config(tiny_model, "method", "esd", config=tmp_path / "c.yaml", steps=3)
    assert (cfg.lr, cfg.steps) == (0.5, 3)  # file over preset, keyword over file
    with pytest.raises(gu.GenUnlearnError, match="has no preset 'fast'; presets: .*toy"):
        gu.resolve_config(tiny_model, "method", "esd", preset="fast")
    with pytest.raises(gu.GenUnlearnError, match="Did you mean 'esd'"):
        gu.resolve_config(tiny_model, "method", "edd")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_its_presets_and_its_own_test_file(method):
    """paper (the paper's defaults), toy (toy-sd on a CPU) and smoke (seconds, for these
    contract tests) presets, and tests/methods/test_<name>.py pinning its objective."""
    from pathlib import Path

    assert {"paper", "toy", "smoke"} <= set(registry.get("method", method).presets)
    path = Path(__file__).parents[1] / "methods" / f"test_{method}.py"
    assert path.is_file(), f"method {method!r} has no {path.name} pinning its objective"
