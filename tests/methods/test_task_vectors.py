"""Task vectors' signature: the result is theta_0 - alpha (theta_ft - theta_0) on the tuned weights."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.methods.task_vectors import ema_decay_at


def _erase(model, **kw):
    return gu.erase(model, "task_vectors", "star", preset="smoke", seed=0, **kw)


def test_result_is_linear_in_alpha(tiny_model):
    # theta_0 + alpha' tau at alpha' = -alpha: runs at two alphas lie on one line through theta_0
    # (which *way* the line points is pinned by the one-step test below, not here)
    base = {n: p.detach() for n, p in tiny_model.named_parameters()}
    minus_one = _erase(tiny_model, alpha=-1.0).result.changed
    erased = _erase(tiny_model, alpha=1.75).result.changed
    assert minus_one and set(erased) == set(minus_one)
    for n, ft in minus_one.items():
        want = base[n] - 1.75 * (ft - base[n])
        assert torch.allclose(erased[n], want, atol=1e-6, rtol=1e-5), n


def test_alpha_zero_leaves_the_model_unchanged(tiny_model):
    assert _erase(tiny_model, alpha=0.0).result.changed == {}


def test_task_vector_lives_in_the_tuned_weights_only(tiny_model):
    names = set(_erase(tiny_model, train_method="xattn").result.changed)
    assert names and all(".attn2." in n for n in names)


def test_theta_ft_is_the_ema_of_the_fine_tune(tiny_model):
    # EMA off: theta_ft is the last iterate, which differs from the averaged one
    ema = _erase(tiny_model, alpha=-1.0).result.changed
    raw = _erase(tiny_model, alpha=-1.0, ema_decay=0.0).result.changed
    assert any(not torch.equal(ema[n], raw[n]) for n in ema)
    assert ema_decay_at(1, 0.9999) == 0.0  # the first update copies the weights
    assert abs(ema_decay_at(2, 0.9999) - 2 / 11) < 1e-12
    assert ema_decay_at(10**6, 0.9999) == 0.9999


def test_task_vector_is_one_fine_tune_step_on_the_concept_images_with_the_empty_caption(
    tiny_model, monkeypatch
):
    """With one step, theta_ft is one AdamW step (clipped gradient) of the denoising loss of the
    base model's concept images under the *empty* caption, and the result is theta_0 - alpha tau;
    both are recomputed here from the gradient alone. Fails if the images keep their concept
    captions, the fine-tune ascends instead of descending, or the task vector is added."""
    import pytest

    from genunlearn.core import finetune as core_finetune
    from genunlearn.core.concept_sets import caption_sets, generate_latents
    from genunlearn.methods import task_vectors

    alpha, lr, wd, b = 1.5, 1e-3, 1e-2, 2
    first = []

    def recording_finetune(params, loss_fn, *a, **kw):
        def wrapped(step, g):
            loss = loss_fn(step, g)
            first.append(loss.item())
            return loss

        return core_finetune.finetune(params, wrapped, *a, **kw)

    monkeypatch.setattr(task_vectors, "finetune", recording_finetune)
    run = _erase(tiny_model, alpha=alpha, steps=1, lr=lr, batch_size=b, train_method="xattn")
    data = generate_latents(tiny_model, caption_sets(tiny_model, gu.ErasureTask("star"))[0], 2)
    m = tiny_model.copy()
    params = {n: p for n, p in m.named_parameters() if ".attn2." in n}
    for p in params.values():
        p.requires_grad_(True)
    sched = m.scheduler
    g = torch.Generator().manual_seed(0)  # finetune's generator of step 0 for seed 0
    i = torch.randint(len(data), (b,), generator=g)
    noise = torch.randn(data.latents[i].shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=g)
    with torch.no_grad():
        empty = m.encode_prompt([""] * b)
    pred = m.predict_noise(sched.add_noise(data.latents[i], noise, t), t, empty)
    loss = (pred - noise).pow(2).mean()
    assert first[0] == pytest.approx(loss.item(), rel=1e-4)
    grads = torch.autograd.grad(loss, list(params.values()))
    norm = torch.sqrt(sum((gr * gr).sum() for gr in grads))
    scale = min(1.0, 1.0 / (float(norm) + 1e-6))  # max grad norm 1
    assert set(run.result.changed) == set(params)
    for (n, p0), gr in zip(params.items(), grads, strict=True):
        gc = gr * scale
        # AdamW's first step: decoupled decay, then lr * m_hat / (sqrt(v_hat) + eps) = lr * g/|g|
        tau = -lr * wd * p0.detach() - lr * gc / (gc.abs() + 1e-8)
        want = p0.detach() - alpha * tau
        assert torch.allclose(run.result.changed[n], want, rtol=1e-4, atol=0.05 * lr), n
