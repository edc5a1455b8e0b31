"""Issue-20 safety properties: checkpoints never run code, the image cache keys on the weights
that made the images, non-finite images are never labelled, undefined metrics are absent."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch

from genunlearn.core import cache
from genunlearn.data.world import World
from genunlearn.metrics.fid import frechet_distance, kernel_distance
from genunlearn.types import ErasureTask, GenUnlearnError


class _Payload:
    """A pickle that would create a file when loaded without ``weights_only``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_training_checkpoint_runs_no_code(tmp_path):
    from genunlearn.testbed.loop import load_checkpoint

    ck = tmp_path / "unet_ckpt.pt"
    witness = tmp_path / "pwned"
    torch.save({"step": 3, "x": _Payload(witness)}, ck)
    with pytest.raises(GenUnlearnError, match="delete it"):
        load_checkpoint(ck)
    assert not witness.exists()
    torch.save({"step": 3, "opt": {"state": {0: {"exp_avg": torch.ones(2)}}}}, ck)
    assert load_checkpoint(ck)["step"] == 3  # plain checkpoints still resume


def test_cache_keys_on_the_weights_not_the_base_hash(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path))
    base = tiny_model
    edited = base.copy()
    with torch.no_grad():
        next(edited.denoiser.parameters()).add_(0.5)
    assert edited.base_hash == base.base_hash  # what the old key used
    prompts = ["a red star in striped style"]
    first = cache.cached_sample(base, prompts, n=2, seed=0, steps=2)
    got = cache.cached_sample(edited, prompts, n=2, seed=0, steps=2)
    assert torch.equal(got, edited.sample(prompts, n=2, seed=0, steps=2))
    assert not torch.equal(got, first)
    # the base model's entry is still its own
    assert torch.equal(cache.cached_sample(base, prompts, n=2, seed=0, steps=2), first)


@pytest.mark.parametrize("damage", ["garbage", "pickle", "wrong-shape", "nan"])
def test_a_damaged_cache_entry_is_regenerated(tiny_model, monkeypatch, tmp_path, damage):
    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path))
    prompts = ["a blue circle in dotted style"]
    good = cache.cached_sample(tiny_model, prompts, n=1, seed=3, steps=2)
    (entry,) = list(cache.cache_dir().glob("*.pt"))
    if damage == "garbage":
        entry.write_bytes(os.urandom(64))
    elif damage == "pickle":
        torch.save({"x": _Payload(tmp_path / "pwned")}, entry)
    elif damage == "wrong-shape":
        torch.save(torch.zeros(5, 3, 4, 4), entry)
    else:
        torch.save(torch.full_like(good, float("nan")), entry)
    assert torch.equal(cache.cached_sample(tiny_model, prompts, n=1, seed=3, steps=2), good)
    assert not (tmp_path / "pwned").exists()


def test_weights_fingerprint_follows_every_weight_and_the_inference_state(tiny_model):
    a = tiny_model.copy()
    f0 = a.weights_fingerprint()
    assert a.copy().weights_fingerprint() == f0
    with torch.no_grad():
        p = list(a.text_encoder.parameters())[-1]  # one text-encoder number, nothing else
        p.view(-1)[0] += 1e-3
    f1 = a.weights_fingerprint()
    assert f1 != f0
    a.apply_inference({"negative_prompt": "star"})
    assert a.weights_fingerprint() != f1


def test_the_evaluator_refuses_non_finite_images(tiny_model):
    ev = tiny_model.evaluator
    img = torch.rand(2, 3, 32, 32)
    ev.predict(img)
    img[1, 0, 0, 0] = float("nan")
    with pytest.raises(GenUnlearnError, match="NaN"):
        ev.predict(img)


def test_nan_features_give_a_nan_fid_not_an_error():
    a, b = torch.randn(20, 4), torch.randn(20, 4)
    assert math.isfinite(frechet_distance(a, b))
    a[3, 1] = float("nan")
    assert math.isnan(frechet_distance(a, b)) and math.isnan(kernel_distance(a, b))


def test_finetune_refuses_weights_that_became_non_finite_after_the_last_step():
    from genunlearn.core.finetune import DivergenceError, finetune

    w = torch.nn.Parameter(torch.ones(3))
    # the loss is finite at every evaluation; the last SGD step sends the weights to infinity
    with pytest.raises(DivergenceError, match="NaN or infinity"):
        finetune([w], lambda s, g: (w * 1e30).sum(), steps=1, lr=1e30, optimizer="sgd",
                 progress=False)  # fmt: skip


class _FolderModel:
    """A one-head world (as `testbed train --data` makes) with an evaluator that is right on
    odd-numbered images: enough to check which rates exist and what they rest on."""

    def __init__(self, classes):
        self.world = World("folder", {"class": tuple(classes)}, "a photo of {class}")
        self.evaluator_dir = "x"
        self.sampled: list[int] = []
        self.evaluator = SimpleNamespace(predict=self._predict)

    def sample(self, prompts, n=1, steps=None, guidance=None, seed=0):
        self.sampled.append(n)
        self._labels = [p.split()[-1] for p in prompts for _ in range(n)]
        return torch.zeros(len(prompts) * n, 3, 4, 4)

    def _predict(self, images):
        other = self.world.heads["class"][0]
        return {"class": [c if i % 2 else other for i, c in enumerate(self._labels)]}


def test_a_one_head_world_has_no_cra_and_rates_rest_on_enough_images():
    import genunlearn as gu

    model = _FolderModel(["apples", "leaves", "pears"])
    out = gu.evaluate(model, ErasureTask("leaves"), protocol="unlearncanvas", fid=False)
    assert "cra" not in out and "target_cra" not in out and "cra_n" not in out
    assert out["ua_n"] >= 50 and out["ira_n"] >= 50
    assert out["n_target_images"] == out["ua_n"]
    # an explicit n_per_prompt is what the user asked for, and the counts say so
    out = gu.evaluate(model, ErasureTask("leaves"), protocol="unlearncanvas", fid=False,
                      n_per_prompt=2)  # fmt: skip
    assert out["ua_n"] == 2 and out["ira_n"] == 4


def test_toycanvas_rates_carry_their_counts(tiny_model):
    import genunlearn as gu

    out = gu.evaluate(tiny_model, "star", n_per_prompt=1, fid=False)
    world = tiny_model.world
    has, without = world.split(["star"])
    assert (out["ua_n"], out["ira_n"], out["cra_n"]) == (len(has), len(without), len(without))
    assert 0.0 <= out["cra"] <= 1.0
