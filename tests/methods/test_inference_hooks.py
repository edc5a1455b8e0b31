"""An inference-time method lives in one file: it registers its own install hook.

The throwaway method below sets a negative prompt and installs an output filter; nothing under
``src/`` knows it, yet erase, the run directory and ``load_run`` carry both parts.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import genunlearn as gu
from genunlearn import registry

NAME = "throwaway_halve"


class Halve:
    """An output filter: halves every image, blocks none."""

    def __init__(self, factor: float):
        self.factor = torch.tensor(factor)

    def __call__(self, images):
        return images * self.factor, torch.zeros(len(images), dtype=torch.bool)


@dataclass(frozen=True)
class HalveConfig:
    factor: float = 0.5


def _install(model, inference, addon):
    model.apply_inference({"negative_prompt": inference["negative_prompt"]})
    model.output_filters.append(Halve(inference["factor"]))


@pytest.fixture
def throwaway(monkeypatch):
    """Register the method in a copy of the registries (gone again after the test)."""
    registry.load_builtin()
    copied = {k: dict(v) for k, v in registry._REGISTRIES.items()}
    monkeypatch.setattr(registry, "_REGISTRIES", copied)

    @gu.register_method(
        NAME, config=HalveConfig, presets={"toy": {}, "smoke": {}}, install=_install
    )
    def erase(model, task, cfg):
        state = {"negative_prompt": ", ".join(task.targets), "factor": cfg.factor}
        _install(model, state, None)
        return gu.ErasureResult(inference=state)

    return NAME


def test_inference_method_round_trips_through_its_own_hook(throwaway, tiny_model, tmp_path):
    run = gu.erase(tiny_model, throwaway, "star", tmp_path / "run", samples=False)
    assert tiny_model.output_filters == [] and "negative_prompt" not in tiny_model.inference
    prompts = ["a red circle in flat style", "a blue star in striped style"]
    want = 0.5 * tiny_model.sample(prompts, n=2, seed=4, negative_prompt="star")
    plain = tiny_model.sample(prompts, n=2, seed=4)
    assert not torch.allclose(want, 0.5 * plain)  # the negative prompt matters for these images
    for model in (run.model, gu.load_run(tmp_path / "run", model=tiny_model)):
        assert torch.equal(model.sample(prompts, n=2, seed=4), want)
        assert model.weights_fingerprint() == run.model.weights_fingerprint()
    assert run.model.weights_fingerprint() != tiny_model.weights_fingerprint()


def test_hookless_run_refuses_state_nothing_reads(tiny_model, tmp_path):
    """A method without an install hook may only leave the sampler's negative prompt."""
    from genunlearn.api import install

    m = tiny_model.copy()
    with pytest.raises(gu.GenUnlearnError, match="no install hook"):
        install(m, "esd", {"factor": 0.5})
    install(m, "negative_prompt", {"negative_prompt": "star"})
    assert m.inference == {"negative_prompt": "star"}


def test_models_name_no_method():
    """No code under models/ tests for a method's name (docstrings may mention them)."""
    root = Path(gu.__file__).parent / "models"
    # "negative_prompt" is also the sampler's own argument (diffusers' name), which the method of
    # that name merely sets
    methods = set(gu.list_methods()) - {"negative_prompt"}
    hits = []
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text())
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                if n.value in methods:
                    hits.append(f"{f.name}:{n.lineno} {n.value!r}")
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                mod = getattr(n, "module", None) or ""
                names = [a.name for a in n.names]
                if mod.startswith("genunlearn.methods") or any(
                    a.startswith("genunlearn.methods") for a in names
                ):
                    hits.append(f"{f.name}:{n.lineno} imports {mod or names}")
    assert not hits, f"models/ names methods: {hits}"
