"""p4d: Prompting4Debugging — Red-Teaming Text-to-Image Diffusion Models by Finding Problematic
Prompts (Chin, Jiang, Huang, Chen, Chiu; ICML 2024).

Paper: https://arxiv.org/abs/2309.06135 — official code: github.com/joycenerd/P4D
(``prompt_optimization/optimize_n.py``, ``optimize_k.py``).

Idea: use the unconstrained original model as a teacher. For a prompt p that shows the concept
on the original model, find a prompt p* such that the *defended* model's noise prediction for
p* matches the original's prediction for p, on noised latents of the original's image of p:

    min_{p*}  || eps_orig(z_t, t, E(p)) - eps_safe(z_t, t, E(p*)) ||^2,  t ~ U[0, T).

p* is a sequence of continuous token embeddings optimised PEZ-style: every step projects them
to the nearest vocabulary embeddings (cosine), computes the gradient at the projected point and
applies it to the continuous copy (AdamW, lr 0.1, weight decay 0.1). For a negative-prompt
defence eps_safe is the guided prediction against the negative prompt (as the official code's
SD-NEGP branch). Every ``eval_every`` steps the projected prompt is decoded, generated with the
defended model and compared with the target image; the prompt with the highest image similarity
is the attack's output, and it succeeds if the judge sees the concept in its image.

Variants: P4D-N (``variant="n"``) optimises 16 free tokens that replace the prompt (random
initialisation); P4D-K (``variant="k"``) keeps the prompt's tokens frozen and learns one token
before every 3 of them.

Symbols: eps_orig -> ``original`` (teacher), eps_safe -> the attacked ``model`` (student), p* ->
``soft`` (continuous) / its projection.

Differences from the official code: image similarity uses the world evaluator's features
(cosine) instead of CLIP ViT-H-14; one target image and one judged image per prompt (the seed of
the evaluation, so pre-ASR and ASR use the same image) instead of the most unsafe of three;
tokens come from the whole-word vocabulary that re-tokenizes exactly (``core.adversary``), so the
replayed text is the optimised prompt; one model on one device instead of two GPUs.
Figures: docs/results.md#p4d
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from genunlearn.core import adversary as adv
from genunlearn.core import attack_loop as loop
from genunlearn.core.judge import judge
from genunlearn.registry import register_attack
from genunlearn.types import Capability, GenUnlearnError


@dataclass(frozen=True)
class P4DConfig:
    """P4D settings (paper defaults).

    Args:
        n_prompts: attack prompts per concept.
        variant: "n" (free tokens) or "k" (tokens interleaved with the prompt).
        n_tokens: learnable tokens of P4D-N.
        every_k: P4D-K inserts one learnable token per ``every_k`` prompt tokens.
        iterations: optimisation steps per prompt.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        eval_every: steps between generations that pick the best prompt.
        seed: evaluation seed of prompt 0 (prompt i uses seed + i) and attack randomness.
        progress: show a progress bar.
        prompts_csv: an UnlearnDiffAtk-style attack set (prompt, seed, guidance, target image) to
            attack instead of the world's captions (``core.attack_loop.prompt_cases``).
    """

    n_prompts: int = 20
    variant: str = "n"
    n_tokens: int = 16
    every_k: int = 3
    iterations: int = 3000
    lr: float = 0.1
    weight_decay: float = 0.1
    eval_every: int = 50
    seed: int = 0
    progress: bool = True
    prompts_csv: str | None = None


def layout(body: list[int], cfg: P4DConfig) -> list[int | None]:
    """Token slots of the adversarial prompt: None = learnable, an id = frozen prompt token."""
    if cfg.variant == "n":
        return [None] * cfg.n_tokens
    out: list[int | None] = []
    for j, tok in enumerate(body):
        if j % cfg.every_k == 0:
            out.append(None)
        out.append(tok)
    return out + [None] if len(body) % cfg.every_k == 0 else out


def teacher_student_loss(model, original, z0, t, noise, teacher_cond, ids, embeds):
    """MSE between the original's prediction for the prompt and the attacked model's for p*."""
    x_t = adv.noised(model, z0, t, noise)
    with torch.no_grad():
        goal = original.predict_noise(x_t, t, teacher_cond)
    return F.mse_loss(
        adv.effective_noise(model, x_t, t, adv.encode_embeds(model, ids, embeds)), goal
    )


@register_attack(
    "p4d",
    config=P4DConfig,
    requires=(
        Capability.WORLD_EVALUATOR, Capability.TRAINABLE_DENOISER, Capability.TEXT_ENCODER,
        Capability.LATENT_VAE,
    ),
    presets={
        "paper": {},
        "toy": {"iterations": 200, "eval_every": 20},
        "smoke": {"n_tokens": 3, "iterations": 3, "eval_every": 2, "progress": False},
    },
    paper="https://arxiv.org/abs/2309.06135",
)  # fmt: skip
def attack(model, task, cfg: P4DConfig, original=None):
    """Teacher-student prompt optimisation with nearest-token projection, per failing prompt."""
    if cfg.variant not in ("n", "k"):
        raise GenUnlearnError(f"variant must be 'n' or 'k', got {cfg.variant!r}")
    original = loop.original_model(model, original)
    cand = adv.word_tokens(model)
    table = adv.token_table(model)
    n_train = model.scheduler.config.num_train_timesteps

    def attack_one(i: int, case):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        prompt = case.prompt
        target = loop.target_image(original, case)
        z0 = adv.to_latents(model, target)
        with torch.no_grad():
            teacher_cond = original.encode_prompt([prompt])
            goal_feat = model.evaluator.features(target)
        slots = layout(adv.text_ids(model, prompt), cfg)
        free = [j for j, s in enumerate(slots) if s is None]
        pick = torch.randint(len(cand), (len(free),), generator=g, device="cpu")
        soft = table[cand[pick]].clone()
        soft.requires_grad_(True)
        opt = torch.optim.AdamW([soft], lr=cfg.lr, weight_decay=cfg.weight_decay)
        best = (-2.0, None, None)
        for step in range(cfg.iterations):
            proj_ids, proj = adv.nearest_tokens(soft, table, cand)
            point = proj.clone().requires_grad_(True)  # the gradient is taken at the projection
            parts, k = [], 0
            for s in slots:
                parts.append([s] if s is not None else point[k : k + 1])
                k += s is None
            ids, embeds = adv.splice(model, parts)
            noise = model.randn(z0.shape, g)
            t = torch.randint(0, n_train, (1,), generator=g, device="cpu")
            loss = teacher_student_loss(model, original, z0, t, noise, teacher_cond, ids, embeds)
            (soft.grad,) = torch.autograd.grad(loss, [point])
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % cfg.eval_every == 0 or step == cfg.iterations - 1:
                it = iter(proj_ids.tolist())
                text = adv.decode(model, [s if s is not None else next(it) for s in slots])
                image = loop.render(model, text, case)
                with torch.no_grad():
                    sim = float(F.cosine_similarity(model.evaluator.features(image), goal_feat))
                if sim > best[0]:
                    best = (sim, text, image)
        _, text, image = best
        return text, image[0], judge(model, image, task.targets)[0]

    return loop.per_prompt_attack(
        "p4d", model, task, cfg, attack_one, others=(original,), progress=cfg.progress,
        need_images=True,
    )  # fmt: skip
