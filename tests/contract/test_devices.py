"""Devices and precision over the whole registry: every method, attack and protocol runs on a
model in bfloat16, and on a model that lives on another device than the one tensors land on by
default.

No GPU is needed for the second: :class:`Elsewhere` sends every tensor that genunlearn's own code
creates without naming a device (``torch.zeros(3)``, ``torch.randn(shape, generator=g)``) to the
``meta`` device, while the model stays on the CPU. On a GPU such a tensor would land on the CPU
beside a CUDA model; here it lands on ``meta`` beside a CPU model, and meeting the model's tensors
fails in the same way ("Tensor on device meta is not on the expected device cpu", or "Cannot copy
out of meta tensor" where CPU noise is moved to the model). Library code (torch, diffusers,
transformers) is left alone: only calls made from files under ``src/genunlearn/`` are redirected,
so code that means the CPU must say ``device="cpu"`` (e.g. noise drawn with a CPU generator and
then moved, as ``SDAdapter.randn`` does).
"""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

import genunlearn as gu
from genunlearn import registry

FACTORIES = {
    torch.arange, torch.as_tensor, torch.empty, torch.eye, torch.full, torch.linspace,
    torch.logspace, torch.normal, torch.ones, torch.rand, torch.randint, torch.randn,
    torch.randperm, torch.scalar_tensor, torch.tensor, torch.zeros,
}  # fmt: skip
SRC = "/src/genunlearn/"


class Elsewhere(TorchFunctionMode):
    """Tensor factories called from genunlearn's code without ``device=`` create meta tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            f = sys._getframe(1)
            while f is not None and "/torch/" in f.f_code.co_filename:
                f = f.f_back
            if f is not None and SRC in f.f_code.co_filename.replace("\\", "/"):
                kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def test_the_emulation_catches_a_tensor_left_on_the_default_device(tiny_model):
    """The mode itself: code under src/ that forgets the device fails, code that names it runs."""
    import genunlearn.core.losses as losses

    x = tiny_model.initial_noise(1, 0)
    src = "def f(x):\n    return x + __import__('torch').zeros(x.shape)\n"
    code = compile(src, losses.__file__, "exec")  # a function "defined under src/"
    scope: dict = {}
    exec(code, scope)
    with Elsewhere():
        with pytest.raises((RuntimeError, NotImplementedError)):
            scope["f"](x)
        noise = tiny_model.randn(x.shape, torch.Generator().manual_seed(0))  # names the CPU
        assert noise.device == x.device and torch.isfinite(noise).all()
    assert torch.equal(scope["f"](x), x)  # outside the mode the same code runs


@pytest.fixture(scope="module")
def bf16_model(tiny_testbed):
    """The tiny testbed loaded in bfloat16."""
    from genunlearn.models.sd import SDAdapter

    return SDAdapter.from_directory(tiny_testbed, dtype="bfloat16")


@pytest.mark.parametrize("method", gu.list_methods())
def test_every_method_runs_in_bfloat16(method, bf16_model):
    run = gu.erase(bf16_model, method, "star", preset="smoke", seed=0, samples=False)
    allowed = re.compile(registry.get("method", method).modifies or "^$")
    for n, p in run.model.named_parameters():  # what the method may not change stays half
        assert allowed.search(n) or p.dtype == torch.bfloat16, n
    for n, v in run.result.changed.items():  # trained weights are float32 (pruning may keep half)
        assert torch.isfinite(v).all() and v.dtype in (torch.float32, torch.bfloat16), n
    images = run.model.sample(["a red star in flat style"], n=1, seed=0)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


@pytest.mark.parametrize("attack", gu.list_attacks())
def test_every_attack_runs_in_bfloat16(attack, bf16_model):
    res = gu.attack(bf16_model, attack, "circle", preset="smoke", original=bf16_model, n_prompts=2)
    assert 0.0 <= res.pre_asr <= res.asr <= 1.0 and len(res.prompts) == 2


@pytest.mark.parametrize("method", gu.list_methods())
def test_every_method_runs_with_the_model_elsewhere(method, tiny_model):
    assert tiny_model.evaluator is not None  # loaded outside the mode, like the weights
    with Elsewhere():
        run = gu.erase(tiny_model, method, "star", preset="smoke", seed=0, samples=False)
        run.model.sample(["a red star in flat style"], n=1, seed=0)


@pytest.mark.parametrize("attack", gu.list_attacks())
def test_every_attack_runs_with_the_model_elsewhere(attack, tiny_model):
    assert tiny_model.evaluator is not None
    with Elsewhere():
        gu.attack(tiny_model, attack, "circle", preset="smoke", original=tiny_model, n_prompts=2)


@pytest.mark.parametrize("protocol", ["unlearncanvas", "fidelity"])
def test_protocols_run_with_the_model_elsewhere(protocol, tiny_model):
    assert tiny_model.evaluator is not None
    task = "circle" if protocol == "unlearncanvas" else None
    with Elsewhere():
        out = gu.evaluate(tiny_model, task, protocol=protocol, n_per_prompt=1)
    assert all(0.0 <= v <= 1.0 for k, v in out.items() if k.endswith("acc") or k == "ua")
