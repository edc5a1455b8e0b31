"""P4D's signature: teacher-student loss, N free tokens, K tokens interleaved with the prompt."""

from __future__ import annotations

import torch

import genunlearn as gu
from genunlearn.attacks import p4d
from genunlearn.core import adversary as adv


def test_layout_inserts_one_learnable_token_per_three_prompt_tokens():
    k = p4d.P4DConfig(variant="k")
    assert p4d.layout([1, 2, 3, 4, 5, 6, 7], k) == [None, 1, 2, 3, None, 4, 5, 6, None, 7]
    assert p4d.layout([1, 2, 3, 4, 5, 6], k) == [None, 1, 2, 3, None, 4, 5, 6, None]
    assert p4d.layout([1, 2], p4d.P4DConfig(variant="n", n_tokens=5)) == [None] * 5


def test_teacher_student_loss_vanishes_only_at_the_teachers_prompt(tiny_model):
    m = tiny_model
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, *m.latent_shape, generator=g)
    noise = torch.randn(z0.shape, generator=g)
    t = torch.tensor([400])
    prompt = "a red star in flat style"
    teacher = m.encode_prompt([prompt])
    ids, embeds = adv.splice(m, [adv.text_ids(m, prompt)])
    with torch.no_grad():
        same = p4d.teacher_student_loss(m, m, z0, t, noise, teacher, ids, embeds)
        ids2, embeds2 = adv.splice(m, [adv.text_ids(m, "a blue moon in wavy style")])
        other = p4d.teacher_student_loss(m, m, z0, t, noise, teacher, ids2, embeds2)
    # the target is the teacher's prediction, not the noise (which would leave a residual)
    assert float(same) < 1e-10 < float(other)


def test_p4d_n_replaces_the_prompt_with_n_tokens(tiny_model, forced_judge):
    calls = forced_judge(p4d, pre=False, post=False)
    res = gu.attack(tiny_model, "p4d", "star", preset="smoke", n_prompts=2, n_tokens=4)
    assert calls == [1, 1]  # one judged (best-similarity) image per prompt
    assert all(len(a.split()) == 4 for a in res.adversarial_prompts)


def test_p4d_k_keeps_the_prompt_words_in_order(tiny_model, forced_judge):
    forced_judge(p4d, pre=False, post=False)
    res = gu.attack(tiny_model, "p4d", "star", preset="smoke", n_prompts=2, variant="k")
    for p, a in zip(res.prompts, res.adversarial_prompts, strict=True):
        words, adv_words = p.split(), a.split()
        assert len(adv_words) == len(words) + len(words) // 3 + (len(words) % 3 == 0)
        kept = [w for j, w in enumerate(adv_words) if j % 4 != 0]
        assert kept == words


def _matching_grad(student, teacher, proj, prompt, z0, t, noise):
    """d/d(projected tokens) of ||eps_teacher(z_t, t, E(prompt)) - eps_student(z_t, t, E(p*))||^2
    for P4D-N (p* = the projected tokens alone)."""
    point = proj.detach().clone().requires_grad_(True)
    ids, embeds = adv.splice(student, [point[j : j + 1] for j in range(len(point))])
    x_t = student.scheduler.add_noise(z0, noise, t)
    with torch.no_grad():
        goal = teacher.predict_noise(x_t, t, teacher.encode_prompt([prompt]))
    pred = student.predict_noise(x_t, t, adv.encode_embeds(student, ids, embeds))
    (grad,) = torch.autograd.grad(torch.nn.functional.mse_loss(pred, goal), [point])
    return grad


def test_objective_matches_the_erased_student_to_the_original_teacher(
    erased_pair, forced_judge, optimizer_steps, spy
):
    """Each AdamW step's gradient is that of ||eps_orig(z_t, t, E(p)) - eps_erased(z_t, t,
    E(p*))||^2 on noised latents of the original's image of p, taken at the nearest-token
    projection (PEZ): not teacher and student swapped, not the noise as target
    (UnlearnDiffAtk's loss), not the erased model's own image, not a flipped sign, not the
    gradient at the continuous embeddings (which leave the vocabulary after the first step)."""
    original, erased = erased_pair
    forced_judge(p4d, pre=False, post=False)
    projections, noised = spy(adv, "nearest_tokens"), spy(adv, "noised")
    res = gu.attack(erased, "p4d", "star", original=original, preset="smoke", n_prompts=1,
                    n_tokens=2, iterations=2, eval_every=1, seed=3)  # fmt: skip
    assert len(optimizer_steps) == len(projections) == len(noised) == 2
    prompt = res.prompts[0]
    with torch.no_grad():
        z_orig = original.encode_images(original.sample([prompt], n=1, seed=3))
    for (_, [(soft, grad)]), (_, _, (_, proj)), ((_, z0, t, noise), _, _) in zip(
        optimizer_steps, projections, noised, strict=True
    ):
        assert torch.equal(z0, z_orig)  # the target latent is the original model's image
        want = _matching_grad(erased, original, proj, prompt, z_orig, t, noise)
        assert soft.shape == want.shape and want.abs().sum() > 0
        assert torch.allclose(grad, want, rtol=1e-4, atol=1e-9)
    swapped = _matching_grad(original, erased, proj, prompt, z_orig, t, noise)
    assert not torch.allclose(swapped, want, rtol=1e-2, atol=1e-8)  # the check can fail
