"""unlearndiffatk: To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy to
Generate Unsafe Images ... For Now (Zhang, Jia, Chen, Chen, Zhang, Fan, Liu; ECCV 2024).

Paper: https://arxiv.org/abs/2310.11868 — official code: github.com/OPTML-Group/Diffusion-MU-Attack
(``src/attackers/text_grad_.py``).

Idea: the diffusion model is its own classifier. Prompts that let the *erased* model denoise an
image of the concept well are prompts that make it generate the concept. For each attack prompt
p the original model renders a target image x_tgt (same seed as the evaluation); k adversarial
tokens delta are prepended to p and optimised to minimise the erased model's denoising loss

    L(delta) = || eps - eps_theta*(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, t, E([delta; p])) ||^2,
    z0 = VAE(x_tgt).

delta is relaxed to a k x |V| matrix of token probabilities on the simplex: each step samples
one token per row (one-hot, straight-through gradient clipped by hardtanh), multiplies it by the
token-embedding table, takes an Adam step (lr 0.01, weight decay 0.1) and projects every row
back onto the simplex (``core.adversary.project_simplex``). Timesteps are visited in blocks
(paper: 50 blocks t = 10, 30, ..., 990, 40 steps each); after each block the rows are
discretised by argmax, the prompt is generated with the erased model at its evaluation seed and
judged; the attack stops at the first success. Prompts that already succeed unmodified count
towards pre-ASR and are not attacked.

Symbols: delta -> ``probs`` (k x C), theta* -> the attacked ``model`` (including its negative
prompt, if it has one: ``core.adversary.effective_noise``), x_tgt -> ``target``.

Differences from the official code:
- the token set is the tokenizer's whole-word tokens that re-tokenize to themselves (not all
  49,408 ids), so the decoded prompt that is replayed and reported is exactly the optimised one
  (the reference code generates from the ids but reports decoded text that may not reproduce);
- target images come from the original model through our sampler (DDIM, the model's default
  steps and guidance) instead of a 100-step LMS dataset; success is the world evaluator's label;
- blocks are spread evenly over the training timesteps: t_j = (j + 1/2) T / n_blocks.
Figures: docs/results.md#unlearndiffatk
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
class UnlearnDiffAtkConfig:
    """UnlearnDiffAtk settings (paper defaults for objects and styles).

    Args:
        n_prompts: attack prompts per concept.
        k: adversarial tokens (3 for objects/styles, 5 for nudity in the paper).
        position: "prefix" (paper) or "suffix".
        t_blocks: timestep blocks, visited from small to large t.
        iterations: Adam steps per block.
        lr: Adam learning rate on the token probabilities.
        weight_decay: Adam weight decay.
        rand_init: start rows uniform-random (projected) instead of uniform.
        loss: "mse" or "l1".
        seed: evaluation seed of prompt 0 (prompt i uses seed + i) and attack randomness.
        progress: show a progress bar.
        prompts_csv: an UnlearnDiffAtk-style attack set (prompt, seed, guidance, target image) to
            attack instead of the world's captions (``core.attack_loop.prompt_cases``).
    """

    n_prompts: int = 20
    k: int = 3
    position: str = "prefix"
    t_blocks: int = 50
    iterations: int = 40
    lr: float = 0.01
    weight_decay: float = 0.1
    rand_init: bool = False
    loss: str = "mse"
    seed: int = 0
    progress: bool = True
    prompts_csv: str | None = None


def block_timesteps(n_train: int, n_blocks: int) -> list[int]:
    """Block centres (j + 1/2) T / n: 10, 30, ..., 990 for T = 1000 and 50 blocks."""
    return [int((j + 0.5) * n_train / n_blocks) for j in range(n_blocks)]


def _check(cfg: UnlearnDiffAtkConfig) -> None:
    if cfg.position not in ("prefix", "suffix"):
        raise GenUnlearnError(f"position must be 'prefix' or 'suffix', got {cfg.position!r}")
    if cfg.loss not in ("mse", "l1"):
        raise GenUnlearnError(f"loss must be 'mse' or 'l1', got {cfg.loss!r}")
    if cfg.k < 1 or cfg.t_blocks < 1 or cfg.iterations < 1:
        raise GenUnlearnError("k, t_blocks and iterations must be >= 1")


@register_attack(
    "unlearndiffatk",
    config=UnlearnDiffAtkConfig,
    requires=(
        Capability.WORLD_EVALUATOR, Capability.TRAINABLE_DENOISER, Capability.TEXT_ENCODER,
        Capability.LATENT_VAE,
    ),
    presets={
        "paper": {},
        "toy": {"t_blocks": 10, "iterations": 10, "lr": 0.05},
        "smoke": {"k": 2, "t_blocks": 2, "iterations": 2, "progress": False},
    },
    paper="https://arxiv.org/abs/2310.11868",
)  # fmt: skip
def attack(model, task, cfg: UnlearnDiffAtkConfig, original=None):
    """Optimise k token distributions per failing prompt on the erased model's denoising loss."""
    _check(cfg)
    original = loop.original_model(model, original)
    cand = adv.word_tokens(model)
    vocab = adv.token_table(model)[cand]  # [C, D]
    blocks = block_timesteps(model.scheduler.config.num_train_timesteps, cfg.t_blocks)
    loss_fn = F.mse_loss if cfg.loss == "mse" else F.l1_loss

    def attack_one(i: int, case):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        z0 = adv.to_latents(model, loop.target_image(original, case))
        body = adv.text_ids(model, case.prompt)
        shape = (cfg.k, len(cand))  # drawn with the CPU generator, then moved to the vocabulary
        init = torch.rand(shape, generator=g, device="cpu") if cfg.rand_init else None
        init = init if init is not None else torch.ones(shape, device="cpu")
        probs = adv.project_simplex(init).to(vocab.device)
        probs.requires_grad_(True)
        opt = torch.optim.Adam([probs], lr=cfg.lr, weight_decay=cfg.weight_decay)
        for t in blocks:
            tt = torch.tensor([t], device="cpu")
            for _ in range(cfg.iterations):
                delta = adv.sample_one_hot(probs, g) @ vocab
                parts = [delta, body] if cfg.position == "prefix" else [body, delta]
                ids, embeds = adv.splice(model, parts)
                cond = adv.encode_embeds(model, ids, embeds)
                noise = model.randn(z0.shape, g)
                pred = adv.effective_noise(model, adv.noised(model, z0, tt, noise), tt, cond)
                loss = loss_fn(pred, noise)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    probs.copy_(adv.project_simplex(probs))
            tokens = cand[probs.detach().argmax(-1).cpu()].tolist()
            text = adv.decode(model, tokens + body if cfg.position == "prefix" else body + tokens)
            image = loop.render(model, text, case)
            if judge(model, image, task.targets)[0]:
                return text, image[0], True  # stop at the first success
        return text, image[0], False

    return loop.per_prompt_attack(
        "unlearndiffatk", model, task, cfg, attack_one, others=(original,), progress=cfg.progress,
        need_images=True,
    )  # fmt: skip
