"""Device and dtype choice, memory savers, and the timing a run reports (issue 15 items 1-2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import genunlearn as gu
from genunlearn.models import device as devmod
from genunlearn.models import sd


def test_device_names_are_checked_against_the_machine(monkeypatch):
    assert devmod.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devmod.resolve_device(None) == torch.device("cpu")  # default: a GPU only if visible
    with pytest.raises(gu.GenUnlearnError, match="no GPU is visible.*device='cpu'"):
        devmod.resolve_device("cuda")
    with pytest.raises(gu.GenUnlearnError, match="valid: cpu, cuda, cuda:N, mps"):
        devmod.resolve_device("tpu9")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devmod.resolve_device(None) == torch.device("cuda", 0)
    assert devmod.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(gu.GenUnlearnError, match="has 2 GPU.*cuda:0 .. cuda:1"):
        devmod.resolve_device("cuda:2")


def test_dtypes_are_checked_against_the_device(monkeypatch):
    assert devmod.resolve_dtype(None) is torch.float32
    assert devmod.resolve_dtype("bf16") is torch.bfloat16
    assert devmod.resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(gu.GenUnlearnError, match="valid: float32, float16, bfloat16"):
        devmod.resolve_dtype("int8")
    with pytest.raises(gu.GenUnlearnError, match="not supported"):
        devmod.resolve_dtype(torch.float64)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    with pytest.raises(gu.GenUnlearnError, match="V100 cannot compute in it; use float16"):
        devmod.resolve_dtype("bfloat16", torch.device("cuda", 0))


def test_loading_in_half_precision_keeps_every_weight_half(tiny_testbed):
    m = sd.SDAdapter.from_directory(tiny_testbed, dtype="float16")
    assert m.dtype is torch.float16 and {p.dtype for _, p in m.named_parameters()} == {
        torch.float16
    }
    cond = m.encode_prompt(["a red star in flat style"])
    assert cond.dtype is torch.float32  # adapter outputs are float32 whatever the weights
    eps = m.predict_noise(m.initial_noise(1, 0), torch.tensor([500]), cond)
    assert eps.dtype is torch.float32 and torch.isfinite(eps).all()


def _step_loss_and_grad(model):
    """One ESD-like student step on the K/V weights: its loss and gradients."""
    from genunlearn.core.params import trainable

    params = trainable(model, "kv")
    g = torch.Generator().manual_seed(0)
    x = model.randn((2, *model.latent_shape), g)
    cond = model.encode_prompt(["a red star in flat style", "a blue circle"])
    loss = F.mse_loss(model.predict_noise(x, torch.tensor([100, 800]), cond), torch.zeros_like(x))
    grads = torch.autograd.grad(loss, list(params.values()))
    for p in params.values():
        p.requires_grad_(False)
    return loss.detach(), grads


def test_gradient_checkpointing_and_attention_slicing_change_memory_not_numbers(tiny_model):
    plain = tiny_model.copy()
    saver = tiny_model.copy()
    saver.set_memory(gradient_checkpointing=True, attention_slicing=1)
    assert saver.pipe.unet.is_gradient_checkpointing and saver.memory == {
        "gradient_checkpointing": True, "attention_slicing": 1,
    }  # fmt: skip
    assert not plain.pipe.unet.is_gradient_checkpointing  # the copy made before is unaffected
    la, ga = _step_loss_and_grad(plain)
    lb, gb = _step_loss_and_grad(saver)
    assert torch.allclose(la, lb, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ga, gb, strict=True))
    assert saver.copy().memory == saver.memory  # copies keep the switches
    saver.set_memory(gradient_checkpointing=False, attention_slicing="off")
    assert not saver.pipe.unet.is_gradient_checkpointing


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"gradient_checkpointing": "yes"}, "true or false"),
        ({"attention_slicing": 0}, "auto, max, off or a slice size >= 1"),
        ({"optimizer_8bit": 1}, "true or false"),
    ],
)
def test_bad_memory_settings_are_clear_errors(tiny_model, kw, match):
    with pytest.raises(gu.GenUnlearnError, match=match):
        tiny_model.copy().set_memory(**kw)


def test_vae_slices_decode_as_one_batch(tiny_model, monkeypatch):
    z = tiny_model.initial_noise(5, 3)
    whole = tiny_model.decode(z)
    monkeypatch.setattr(sd, "VAE_PIXELS_PER_CALL", 2 * 32 * 32)  # two toy images per call
    calls = []
    real = tiny_model.pipe.vae.decode
    monkeypatch.setattr(tiny_model.pipe.vae, "decode", lambda x: calls.append(len(x)) or real(x))
    sliced = tiny_model.decode(z)
    assert calls == [2, 2, 1]
    assert torch.allclose(whole, sliced, atol=1e-5)  # batched kernels differ at ~5e-6


def test_eight_bit_optimiser_is_only_used_on_a_gpu(monkeypatch):
    from genunlearn.core import finetune as ft

    p = torch.nn.Parameter(torch.ones(3))
    with ft.training_options(optimizer_8bit=True):
        assert type(ft._optimizer("adam", [p], 1e-3, 0.0)) is torch.optim.Adam  # CPU params


def test_a_run_reports_its_seconds_per_training_step(tiny_model, tmp_path):
    import json

    run = gu.erase(tiny_model, "esd", "star", tmp_path / "run", preset="smoke", samples=False)
    eff = run.efficiency
    assert eff["train_steps"] == 2 and 0 < eff["seconds_per_step"] * 2 <= eff["seconds"]
    rec = json.loads((tmp_path / "run" / "config.json").read_text())
    assert rec["dtype"] == "float32" and rec["device"] == "cpu" and rec["memory"] == {}
    assert rec["efficiency"]["seconds_per_step"] == eff["seconds_per_step"]
    closed = gu.erase(tiny_model, "uce", "star", preset="smoke", samples=False)
    assert "seconds_per_step" not in closed.efficiency  # no training loop, no per-step time
