"""The real toy-sd recipe end to end on ToyCanvas (shrunk steps and batches): every stage runs,
the export loads like toy-sd, and a run interrupted in the UNet stage and resumed ends with
exactly the weights of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

import genunlearn as gu
from genunlearn.testbed import toy_sd
from genunlearn.testbed.loop import load_checkpoint
from genunlearn.testbed.toy_sd import TrainRecipe, train_testbed

RECIPE = TrainRecipe(
    n_images=48, evaluator_steps=2, evaluator_batch=8, vae_steps=2, vae_batch=8, unet_steps=4,
    unet_batch=8, warmup=2, checkpoint_every=2,
)  # fmt: skip


class _Crash(Exception):
    """Stands for a crash or Ctrl-C during training."""


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the recipe uses every core; give the other tests their setting


def test_recipe_end_to_end_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    full = train_testbed(tmp_path / "a", RECIPE, progress=False)
    model = gu.load_model(full)
    assert model.world.name == "toycanvas" and model.evaluator is not None
    assert model.tokenizer.model_max_length == toy_sd.TOY_MAX_TOKENS
    assert any(n.endswith("attn2.to_k") for n, _ in model.denoiser.named_modules())
    assert model.sample(["a red star in flat style"], n=1, steps=2, seed=0).shape == (1, 3, 32, 32)

    # crash in the third UNet step: the checkpoint of step 2 is on disk, the export is not
    real, calls = toy_sd.min_snr_step, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise _Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(toy_sd, "min_snr_step", crashing)
    with pytest.raises(_Crash):
        train_testbed(tmp_path / "b", RECIPE, progress=False)
    work = tmp_path / "b" / "work"
    assert load_checkpoint(work / "unet_ckpt.pt")["step"] == 2
    assert not (tmp_path / "b" / "toy-sd").exists()
    monkeypatch.setattr(toy_sd, "min_snr_step", real)
    resumed = train_testbed(tmp_path / "b", RECIPE, progress=False)
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")]

    # the last checkpoints hold the float32 weights, optimiser state and EMA of both runs
    a = load_checkpoint(tmp_path / "a" / "work" / "unet_ckpt.pt")
    b = load_checkpoint(work / "unet_ckpt.pt")
    assert a["step"] == b["step"] == RECIPE.unet_steps
    for part in ("unet", "te"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"], strict=True))
    for sub in ("unet", "text_encoder", "vae", "evaluator"):
        fa = sorted((full / sub).glob("*.safetensors"))
        assert fa and [f.read_bytes() for f in fa] == [
            (resumed / sub / f.name).read_bytes() for f in fa
        ]
