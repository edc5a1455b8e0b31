"""Parameter selectors touch only their parameters; the training loop changes only what it trains."""

from __future__ import annotations

import math

import pytest
import torch

from genunlearn.core.finetune import finetune
from genunlearn.core.params import SELECTORS, select_parameters, trainable
from genunlearn.types import GenUnlearnError


def test_selectors_partition_unet_as_documented(tiny_model):
    unet = {n for n, _ in tiny_model.named_parameters() if n.startswith("unet.")}
    x = set(select_parameters(tiny_model, "xattn"))
    u = set(select_parameters(tiny_model, "noxattn"))
    kv = set(select_parameters(tiny_model, "kv"))
    a1 = set(select_parameters(tiny_model, "attn1"))
    assert x | u == unet and not (x & u)  # ESD-x and ESD-u split the UNet
    assert kv < x and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in kv)
    assert a1 and not (a1 & x) and all(".attn1." in n for n in a1)
    assert set(select_parameters(tiny_model, "full")) == unet
    te = set(select_parameters(tiny_model, "text_encoder"))
    assert te and all(n.startswith("text_encoder.") for n in te)
    assert set(select_parameters(tiny_model, "re:to_out")) == {
        n for n, _ in tiny_model.named_parameters() if "to_out" in n
    }


def test_bad_selectors_are_clear_errors(tiny_model):
    with pytest.raises(GenUnlearnError, match="Did you mean 'xattn'"):
        select_parameters(tiny_model, "xatn")
    with pytest.raises(GenUnlearnError, match="matches no parameter"):
        select_parameters(tiny_model, "re:^nothing_here$")
    with pytest.raises(GenUnlearnError, match="bad parameter regex"):
        select_parameters(tiny_model, "re:(")
    assert set(SELECTORS) >= {"xattn", "noxattn", "kv", "attn1", "full"}


def test_finetune_moves_only_selected_parameters_and_lowers_the_loss(tiny_model):
    m = tiny_model.copy()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    params = trainable(m, "kv")
    x = torch.randn(2, *m.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = m.encode_prompt(["a star", "a ring"]).detach()

    def loss_fn(step, g):
        return m.predict_noise(x, 500, cond).pow(2).mean()

    hist = finetune(params, loss_fn, steps=8, lr=1e-2, progress=False)
    assert hist[-1] < hist[0]
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(params)
    assert not any(p.requires_grad for _, p in m.named_parameters())


def test_finetune_gradient_mask_freezes_masked_entries(tiny_model):
    m = tiny_model.copy()
    params = trainable(m, "kv")
    name = next(iter(params))
    mask = {n: torch.zeros_like(p) for n, p in params.items()}
    mask[name].view(-1)[:3] = 1.0
    before = params[name].detach().clone()
    x = torch.randn(1, *m.latent_shape, generator=torch.Generator().manual_seed(1))
    cond = m.encode_prompt(["a star"]).detach()
    finetune(params, lambda s, g: m.predict_noise(x, 300, cond).pow(2).mean(), 2, 1e-2,
             optimizer="sgd", progress=False, mask=mask)  # fmt: skip
    diff = (params[name].detach() != before).view(-1)
    assert diff[:3].any() and not diff[3:].any()


def test_finetune_stops_on_a_diverging_loss_and_names_the_step():
    from genunlearn.core.finetune import DivergenceError

    w = torch.nn.Parameter(torch.ones(3))

    def loss_fn(step, g):
        # finite for three steps, then NaN
        return (w.sum() * (float("nan") if step == 3 else 1.0)) ** 2

    with pytest.raises(DivergenceError, match="step 3") as info:
        finetune([w], loss_fn, steps=10, lr=1e-3, seed=0, progress=False)
    assert info.value.step == 3


def test_a_diverging_erase_marks_its_run_failed_and_leaves_the_model(tiny_model, tmp_path):
    import genunlearn as gu

    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    # an absurd learning rate makes ESD's loss overflow within a few steps
    with pytest.raises(GenUnlearnError, match="step"):
        gu.erase(tiny_model, "esd", "star", tmp_path / "run", preset="smoke", lr=1e30, steps=6)
    assert (tmp_path / "run" / "INCOMPLETE").is_file()
    assert "step" in (tmp_path / "run" / "FAILED").read_text()
    with pytest.raises(GenUnlearnError, match="did not finish"):
        gu.load_run(tmp_path / "run", model=tiny_model)
    assert all(torch.equal(before[n], p) for n, p in tiny_model.named_parameters())


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_finetune_lr_schedule_sets_each_steps_rate(schedule):
    # loss = p has gradient 1, so plain SGD moves p by exactly the learning rate of each step
    p = torch.nn.Parameter(torch.zeros(()))
    steps, lr = 10, 0.1
    finetune([p], lambda step, g: p * 1.0, steps, lr, optimizer="sgd", progress=False, lr_schedule=schedule)  # fmt: skip
    if schedule == "constant":
        expected = steps * lr
    else:  # decays from lr at step 0 towards 0 at the end
        expected = sum(lr * 0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps))
        assert expected < steps * lr * 0.6
    assert float(p) == pytest.approx(-expected, rel=1e-5)


def test_finetune_unknown_lr_schedule_names_the_valid_ones():
    p = torch.nn.Parameter(torch.zeros(()))
    with pytest.raises(GenUnlearnError, match="constant.*cosine"):
        finetune([p], lambda step, g: p * 1.0, 2, 0.1, progress=False, lr_schedule="linear")
