"""Fixtures for attack tests: forced judge answers, a distinguishable (original, erased) pair, and
recorders of the optimisation an attack runs (its optimiser steps and the helpers it calls)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from genunlearn.core import attack_loop


@pytest.fixture
def forced_judge(monkeypatch):
    """``force(module, pre, post)``: unmodified prompts are judged ``pre``, attacked ones ``post``.

    Returns the list of image counts the attack module's own judge was called with.
    """

    def force(module, pre: bool = False, post: bool = False) -> list[int]:
        calls: list[int] = []
        monkeypatch.setattr(
            attack_loop, "judge", lambda model, images, targets: [pre] * len(images)
        )

        def judge(model, images, targets):
            calls.append(len(images))
            return [post] * len(images)

        monkeypatch.setattr(module, "judge", judge)
        return calls

    return force


@pytest.fixture
def erased_pair(tiny_model, monkeypatch, tmp_path):
    """(original, erased): the tiny testbed and a copy whose UNet and text encoder (all but the
    token-embedding table, which the attacks' vocabularies read) are perturbed, so the two models'
    noise predictions, prompt encodings and images all differ. The image cache is emptied, so an
    image cached for one model is never served for the other."""
    monkeypatch.setenv("GENUNLEARN_CACHE", str(tmp_path / "cache"))
    erased = tiny_model.copy()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for module in (erased.denoiser, erased.text_encoder):
            for name, p in module.named_parameters():
                if "token_embedding" not in name:
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    return tiny_model, erased


@pytest.fixture
def optimizer_steps():
    """Every optimiser step taken while the test runs: ``(optimizer, [(param, grad copy)])``,
    recorded just before the step (so the gradient is the one the objective produced)."""
    steps: list = []

    def hook(opt, args, kwargs):
        params = [p for group in opt.param_groups for p in group["params"]]
        grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        steps.append((opt, list(zip(params, grads, strict=True))))

    handle = register_optimizer_step_pre_hook(hook)
    yield steps
    handle.remove()


@pytest.fixture
def spy(monkeypatch):
    """``spy(module, name)``: wraps ``module.name`` and returns its calls as ``(args, kwargs, out)``
    (for recording the random draws of an attack: samples, noise, timesteps)."""

    def install(module, name: str) -> list:
        calls: list = []
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            calls.append((args, kwargs, out))
            return out

        monkeypatch.setattr(module, name, wrapper)
        return calls

    return install
