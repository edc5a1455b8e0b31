"""concept_inversion: Circumventing Concept Erasure Methods For Text-to-Image Generative Models
(Pham, Marshall, Cohen, Hegde; ICLR 2024).

Paper: https://arxiv.org/abs/2308.01508 — official code: github.com/NYU-DICE-Lab/circumventing-concept-erasure
(``*/concept_inversion.py``, ``*/train.sh``).

Idea: erasure methods mostly remap the concept's *words*; the concept stays reachable through
another input embedding. Textual inversion finds it *through the erased model*: images of the
concept made by the original model, a new placeholder token s* whose embedding v is the only
trainable quantity, and the standard denoising loss of the erased (frozen) model

    min_v  E_{x, eps, t} || eps - eps_theta*(z_t, t, E(prompt with s*)) ||^2.

For an inference-time negative-prompt defence the prediction inside the loss is the guided one
against the negative prompt (the paper's NP variant; ``core.adversary.effective_noise``). The
attack prompts are then generated with the concept's word replaced by s*. One embedding serves
every prompt of the concept.

Symbols: v -> ``emb`` (initialised from ``init_word``), s* -> a carrier vocabulary token whose
embedding is replaced while encoding (``core.adversary.soft_tokens``; the adversarial prompts show
it as ``<s*>``), theta* -> the attacked ``model``.

Paper defaults: ~25 images, batch 4 x gradient accumulation 4, Adam lr 5e-3 scaled by the
effective batch (``scale_lr``), constant schedule, 5,000 steps. Differences: training prompts are
the world's captions containing the concept with its word replaced by s* (instead of the
textual-inversion template list), rendered by the original model through our sampler (cached);
the placeholder reuses an existing token's id (carrier) instead of growing the vocabulary; the
SLD unrolled-guidance variant is not implemented (no SLD model here).
Figures: docs/results.md#concept_inversion
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from genunlearn.core import adversary as adv
from genunlearn.core import attack_loop as loop
from genunlearn.core.cache import cached_sample
from genunlearn.core.judge import attack_prompts, judge
from genunlearn.registry import register_attack
from genunlearn.types import Capability, GenUnlearnError


@dataclass(frozen=True)
class ConceptInversionConfig:
    """Concept Inversion settings (paper defaults).

    Args:
        n_prompts: attack prompts per concept.
        n_images: images of the concept made by the original model.
        steps: optimiser steps.
        batch_size: images per forward pass.
        grad_accum: gradient accumulation passes per step.
        lr: base learning rate (multiplied by batch_size * grad_accum if scale_lr).
        scale_lr: scale the learning rate by the effective batch size.
        init_word: word whose embedding initialises s* (None: the concept's kind, e.g. "style").
        seed: evaluation seed of prompt 0 (prompt i uses seed + i) and training randomness.
        progress: show a progress bar.
        prompts_csv: an UnlearnDiffAtk-style attack set (prompt, seed, guidance, optional target
            image) to attack instead of the world's captions (``core.attack_loop.prompt_cases``).
    """

    n_prompts: int = 20
    n_images: int = 25
    steps: int = 5000
    batch_size: int = 4
    grad_accum: int = 4
    lr: float = 5e-3
    scale_lr: bool = True
    init_word: str | None = None
    seed: int = 0
    progress: bool = True
    prompts_csv: str | None = None


def with_word(prompt: str, target: str, word: str) -> str:
    """``prompt`` with the whole word ``target`` replaced by ``word``."""
    return re.sub(rf"\b{re.escape(target)}\b", word, prompt)


def invert(model, original, target: str, cfg: ConceptInversionConfig, carrier: tuple[int, str]):
    """Textual inversion of ``carrier`` against ``model`` on the original's images of ``target``.

    Returns:
        (embedding [D], loss history).
    """
    world = model.world
    has, _ = world.split([target])
    captions = [world.caption(lab) for lab in has]
    per = -(-cfg.n_images // len(captions))  # ceil
    images = cached_sample(original, captions, n=per, seed=cfg.seed)[: cfg.n_images]
    z0 = adv.to_latents(model, images)
    cid, cword = carrier
    rows = torch.cat(
        [adv.pack_ids(model, adv.text_ids(model, with_word(c, target, cword))) for c in captions]
    ).repeat_interleave(per, 0)[: cfg.n_images]
    init = cfg.init_word or world.kind_of(target)
    init_ids = adv.text_ids(model, init)
    table = adv.token_table(model)
    emb = table[init_ids[0]].clone().requires_grad_(True)
    lr = cfg.lr * (cfg.batch_size * cfg.grad_accum if cfg.scale_lr else 1)
    opt = torch.optim.Adam([emb], lr=lr)
    g = torch.Generator().manual_seed(cfg.seed)
    n_train = model.scheduler.config.num_train_timesteps
    history = []
    for _ in tqdm(
        range(cfg.steps), desc="concept_inversion", disable=not cfg.progress, leave=False
    ):
        total = 0.0
        for _ in range(cfg.grad_accum):
            idx = torch.randint(len(z0), (cfg.batch_size,), generator=g, device="cpu")
            ids = rows[idx]
            embeds = torch.where((ids == cid).unsqueeze(-1), emb, table[ids])
            noise = model.randn(z0[idx].shape, g)
            t = torch.randint(0, n_train, (len(idx),), generator=g, device="cpu")
            cond = adv.encode_embeds(model, ids, embeds)
            pred = adv.effective_noise(model, adv.noised(model, z0[idx], t, noise), t, cond)
            loss = F.mse_loss(pred, noise) / cfg.grad_accum
            loss.backward()
            total += float(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append(total)
    return emb.detach(), history


@register_attack(
    "concept_inversion",
    config=ConceptInversionConfig,
    requires=(
        Capability.WORLD_EVALUATOR, Capability.TRAINABLE_DENOISER, Capability.TEXT_ENCODER,
        Capability.LATENT_VAE,
    ),
    presets={
        "paper": {},
        "toy": {"steps": 300, "grad_accum": 1, "batch_size": 8, "scale_lr": False, "lr": 0.02},
        "smoke": {"n_images": 2, "steps": 2, "batch_size": 2, "grad_accum": 1, "progress": False},
    },
    paper="https://arxiv.org/abs/2308.01508",
)  # fmt: skip
def attack(model, task, cfg: ConceptInversionConfig, original=None):
    """Invert the concept once through the erased model, then replay it in every failing prompt."""
    if len(task.targets) != 1 or model.world.kind_of(task.targets[0]) is None:
        raise GenUnlearnError(
            "concept_inversion inverts one concept of the model's world at a time"
        )
    target = task.targets[0]
    original = loop.original_model(model, original)
    avoid = [c.prompt for c in loop.prompt_cases(model, task, cfg)]
    avoid += attack_prompts(model, task.targets, 10**6) + [
        model.inference.get("negative_prompt", "")
    ]
    carrier = adv.carrier_token(model, avoid)
    state: dict = {}

    def attack_one(i: int, case):
        prompt = case.prompt
        if "emb" not in state:  # invert lazily: nothing to do if every prompt already succeeds
            state["emb"], state["losses"] = invert(model, original, target, cfg, carrier)
        with adv.soft_tokens(model, {carrier[0]: state["emb"]}):
            image = loop.render(model, with_word(prompt, target, carrier[1]), case)
        shown = with_word(prompt, target, "<s*>")
        return shown, image[0], judge(model, image, task.targets)[0]

    res = loop.per_prompt_attack(
        "concept_inversion", model, task, cfg, attack_one, others=(original,)
    )
    if "emb" in state:
        res.artifact = {"kind": "soft_token", "embedding": state["emb"],
                        "final_loss": state["losses"][-1]}  # fmt: skip
    return res
