"""task_vectors: Robust Concept Erasure Using Task Vectors (Pham, Marshall, Cohen, Hegde, 2024).

Paper: https://arxiv.org/abs/2404.03631 — official code:
github.com/mnpham0417/prompt-agnostic-concept-erasure (``generate_training_images.py``,
``scripts/finetune.sh`` over diffusers' ``train_text_to_image.py``, ``save_tv.py``).

Idea: task arithmetic (Ilharco et al.). Fine-tune the UNet *towards* the concept on images the
model generates of it, captioned with the **empty prompt** so that what is learned is not tied to
any wording, take the task vector tau = theta_ft - theta_0, and subtract it:

    theta_erased = theta_0 - alpha * tau = theta_0 - alpha (theta_ft - theta_0).

Because the edit is a weight-space direction rather than a prompt-to-prompt mapping, it is meant to
hold against adversarial prompts; the paper picks alpha with "Diverse Inversion" (the smallest
alpha at which a diverse set of learned adversarial embeddings fails). That selection procedure
is not in the official code and not implemented here: alpha is a setting (script default 1.75).

Symbols: alpha = ``alpha``; theta_ft = the EMA weights of the fine-tune (``--use_ema``, the
weights diffusers saves), with diffusers' EMA schedule decay_k = min(``ema_decay``, k / (9 + k))
at optimisation step k (``ema_decay`` 0 = the raw final weights).

Paper defaults (script): 1000 generated images, 200 steps, lr 1e-5 constant, batch 4 x gradient
accumulation 4 (= ``batch_size`` 16), max grad norm 1, EMA 0.9999, full UNet, fp16.

Differences: images are the base model's samples of every world caption with the target
(``core.forget_sets``; free text: the target prompt), cached; no random flip / crop (ToyCanvas
images are 32x32 and arrows / moons are oriented); fp32; one batch of 16 instead of 4 x 4
accumulation (the same gradient). ``alpha`` < 0 adds the task vector instead (used by the tests:
alpha = -1 returns theta_ft itself).

Toy preset: 150 steps at lr 3e-4, alpha 1.25, the knee of the alpha frontier: learnt from the
empty caption, the vector moves the image distribution, not one word, so past it the other
kind's accuracy falls about as fast as the concept goes. Figures: docs/results.md#task_vectors
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genunlearn.core.concept_sets import caption_sets, denoising_loss, draw, generate_latents
from genunlearn.core.finetune import finetune
from genunlearn.core.params import trainable
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError


@dataclass(frozen=True)
class TaskVectorsConfig:
    """Task-vector erasure settings (official script defaults).

    Args:
        alpha: scale of the negated task vector.
        train_method: parameter selector fine-tuned (the task vector lives there).
        caption: the caption the concept images are fine-tuned with ("" = prompt-agnostic).
        steps: fine-tuning steps.
        lr: learning rate (AdamW, as diffusers' script).
        batch_size: images per step.
        n_images: generated concept images.
        ema_decay: maximum EMA decay of theta_ft (0 = no EMA).
        grad_clip: maximum gradient norm.
        progress: show progress bars.
    """

    alpha: float = 1.75
    train_method: str = "full"
    caption: str = ""
    steps: int = 200
    lr: float = 1e-5
    batch_size: int = 16
    n_images: int = 1000
    ema_decay: float = 0.9999
    grad_clip: float = 1.0
    progress: bool = True


def ema_decay_at(k: int, max_decay: float) -> float:
    """diffusers' EMA decay at optimisation step k (1-based; step 1 copies the weights)."""
    return 0.0 if k <= 1 else min(max_decay, k / (9 + k))


@register_method(
    "task_vectors",
    config=TaskVectorsConfig,
    requires=(Capability.TRAINABLE_DENOISER, Capability.LATENT_VAE),
    presets={
        "paper": {},
        "toy": {"steps": 150, "lr": 3e-4, "batch_size": 16, "n_images": 160, "alpha": 1.25},
        "smoke": {"steps": 3, "lr": 1e-3, "batch_size": 2, "n_images": 2, "progress": False},
    },
    paper="https://arxiv.org/abs/2404.03631",
    modifies=r"^unet\.",
)
def erase(model, task, cfg: TaskVectorsConfig) -> ErasureResult:
    """Fine-tune towards the concept, then apply theta_0 - alpha (theta_ft - theta_0)."""
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise GenUnlearnError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    forget_p, _, _ = caption_sets(model, task)
    data = generate_latents(model, forget_p, cfg.n_images)
    data = data.recaptioned(model, [cfg.caption] * len(data.prompts))
    params = trainable(model, cfg.train_method)
    theta_0 = {n: p.detach().clone() for n, p in params.items()}
    ema = {n: p.detach().clone() for n, p in params.items()}

    def ema_update(k: int) -> None:
        d = ema_decay_at(k, cfg.ema_decay)
        with torch.no_grad():
            for n, p in params.items():
                ema[n].mul_(d).add_(p.detach(), alpha=1 - d)

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        if step > 0:  # the weights after optimisation step `step` enter the average
            ema_update(step)
        return denoising_loss(model, data, draw(data, cfg.batch_size, g), g)

    losses = finetune(
        params, loss_fn, cfg.steps, cfg.lr, optimizer="adamw", weight_decay=1e-2,
        grad_clip=cfg.grad_clip, progress=cfg.progress, desc="task_vectors",
    )  # fmt: skip
    if cfg.steps > 0:
        ema_update(cfg.steps)
    theta_ft = ema if cfg.ema_decay > 0 else {n: p.detach() for n, p in params.items()}
    norm2 = 0.0
    with torch.no_grad():
        for n, p in params.items():
            tau = theta_ft[n] - theta_0[n]
            norm2 += float(tau.double().pow(2).sum())
            p.copy_(theta_0[n] - cfg.alpha * tau)
    return ErasureResult(
        info={
            "alpha": cfg.alpha, "task_vector_norm": norm2**0.5, "n_images": len(data),
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
        }
    )  # fmt: skip
