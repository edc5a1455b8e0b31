"""The random-weight fixture builder: toy-sd's structure, deterministic for a seed, seconds."""

from __future__ import annotations

import json

import pytest
import torch

import genunlearn as gu
from genunlearn.data import toycanvas
from genunlearn.testbed.tiny import FAST_SAMPLING, build_random_testbed


def _weights(path):
    return {f.parent.name: f.read_bytes() for f in sorted(path.glob("*/*.safetensors"))}


def test_structure_is_toy_sds_and_it_loads(tiny_testbed, tiny_model):
    names = {p.name for p in tiny_testbed.iterdir()}
    assert {"model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler",
            "world.json", "evaluator"} <= names  # fmt: skip
    world = json.loads((tiny_testbed / "world.json").read_text())
    assert world["sampling"] == FAST_SAMPLING and world["name"] == "toycanvas"
    assert tiny_model.world.heads == toycanvas.KINDS
    assert set(tiny_model.evaluator.heads_labels) == set(toycanvas.KINDS)
    layers = [n for n, _ in tiny_model.denoiser.named_modules() if n.endswith("attn2.to_k")]
    assert layers and all(".attentions." in n for n in layers)
    # every world word is one token, as in toy-sd
    tok = tiny_model.tokenizer
    for word in ("star", "checkered", "purple", "style"):
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    images = tiny_model.sample(["a red star in flat style"], n=2, seed=0)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_deterministic_for_a_seed_and_leaves_the_global_rng_alone(tiny_testbed, tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    again = build_random_testbed(tmp_path / "again", seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    assert _weights(again) == _weights(tiny_testbed)
    other = build_random_testbed(tmp_path / "other", seed=1)
    assert _weights(other)["unet"] != _weights(tiny_testbed)["unet"]
    with pytest.raises(gu.GenUnlearnError, match="not empty"):
        build_random_testbed(again, seed=0)
