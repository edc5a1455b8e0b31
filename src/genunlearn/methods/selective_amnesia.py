"""selective_amnesia: Selective Amnesia (Heng & Soh, NeurIPS 2023).

Paper: "Selective Amnesia: A Continual Learning Approach to Forgetting in Deep Generative
Models", https://arxiv.org/abs/2305.10120 — official code: github.com/clear-nus/selective-amnesia
(``sd/main_fim.py``, ``sd/ldm/models/diffusion/ddpm_fim.py``, ``ddpm_forget.py``).

Idea: forgetting as continual learning. The forget condition c_f is re-taught to mean a
*surrogate* distribution q (e.g. images of "a middle aged man" captioned "brad pitt"), while
generative replay (GR) of the original model's own samples and elastic weight consolidation (EWC)
keep everything else:

    L = E_q[ l(x, c_f) ]  +  gamma * E_GR[ l(x, c) ]  +  lambda * sum_i F_i (theta_i - theta*_i)^2

with l the ordinary epsilon-prediction loss, theta* the original weights and F the diagonal
empirical Fisher of the original model on the GR samples: for each GR sample, the gradient of
its diffusion loss summed over all timesteps, squared, averaged over samples
(:func:`diagonal_fisher`). The Fisher is computed once per base model and cached beside the
image cache (``core.cache.cache_dir()``).

Symbols: lambda = ``lam``; gamma = ``gamma``; q = images the original model generates from the
forget captions with the target swapped for the surrogate concept, captioned with the forget
captions; GR = images of remain captions (``core.concept_sets``). The surrogate concept is
``task.anchor`` if given; else, with ``surrogate="neutral"`` (default), the world's generic
concept of the target's kind (``World.neutral``: ToyCanvas's untextured "flat" style), as the
paper's surrogates are generic versions of the forgotten concept ("a middle aged man" for a
celebrity, "a person wearing clothes" for nudity), not a sibling; where the kind has no generic
concept (ToyCanvas objects), or ``surrogate="next"``, the next concept of the kind.

Paper defaults (SD-1.4, Brad Pitt config): full UNet, lambda 50, gamma 1, AdamW, base lr 1e-5
scaled by the CompVis trainer to 1.6e-4 for batch 4 x 4 GPUs, 200 epochs over 1000 surrogate
images (about 12 500 steps), Fisher over 5000 GR images with all 1000 timesteps. Nudity uses
``noxattn`` and 500 epochs.

Differences: GR prompts are the world's captions without the target (the paper uses
GPT-written prompts); surrogate, replay and Fisher sets are smaller in the toy preset; with
``fisher_timesteps`` < T the Fisher sums the gradient over evenly spaced timesteps and scales
it by T / ``fisher_timesteps`` (an estimate of the all-timestep sum, so lambda keeps its
meaning); EWC sums over the trained weights only (the others cannot move).

Toy preset: cross-attention (``xattn``) with lambda 0.1: the Fisher's scale is the model's, so
the paper's lambda 50 freezes toy-sd, and a full-UNet fine-tune turns other styles "noisy".
Figures (lambda frontier, surrogate choice): docs/results.md#selective_amnesia
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from genunlearn.core.cache import cache_dir, read_entry, write_entry
from genunlearn.core.concept_sets import caption_sets, denoising_loss, draw, generate_latents
from genunlearn.core.concept_sets import recaption as _recaption
from genunlearn.core.finetune import finetune
from genunlearn.core.params import trainable
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError

SURROGATES = ("neutral", "next")


@dataclass(frozen=True)
class SelectiveAmnesiaConfig:
    """Selective Amnesia settings (paper defaults, SD Brad Pitt config).

    Args:
        train_method: parameter selector trained (full, xattn, noxattn, ...).
        lam: lambda, weight of the EWC term.
        gamma: weight of the generative-replay loss.
        steps: training steps.
        lr: learning rate.
        batch_size: surrogate images (and replay images) per step.
        optimizer: "adamw" (CompVis default) or "adam" / "sgd".
        weight_decay: AdamW weight decay (torch's default 0.01, as the official trainer).
        n_surrogate_images: images of the surrogate distribution.
        n_replay_images: generative-replay images.
        n_fisher_samples: replay images the Fisher is averaged over.
        fisher_timesteps: timesteps the per-sample gradient sums over (T = all).
        fisher_chunk: timesteps per backward pass while computing the Fisher.
        surrogate: "neutral" (the world's generic concept of the target's kind, else the next
            one) or "next" (always the next concept of the kind); ``task.anchor`` overrides both.
        progress: show progress bars.
    """

    train_method: str = "full"
    lam: float = 50.0
    gamma: float = 1.0
    steps: int = 12500
    lr: float = 1.6e-4
    batch_size: int = 16
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    n_surrogate_images: int = 1000
    n_replay_images: int = 5000
    n_fisher_samples: int = 5000
    fisher_timesteps: int = 1000
    fisher_chunk: int = 50
    surrogate: str = "neutral"
    progress: bool = True


def diagonal_fisher(model, params, data, n_samples: int, timesteps: int, chunk: int, seed=0):
    """F_i = mean over samples of (sum over timesteps of d l(x, c, t) / d theta_i)^2.

    Args:
        model: the adapter (its current weights are the theta* of EWC).
        params: named parameters to compute the Fisher of.
        data: ``CaptionedLatents`` of replay samples (``n_samples`` of them, evenly spaced).
        n_samples: replay samples averaged over.
        timesteps: evenly spaced timesteps per sample (the sum is rescaled to T timesteps).
        chunk: timesteps per backward pass.
        seed: seeds the noise of every (sample, timestep).
    """
    T = model.scheduler.config.num_train_timesteps
    ts = torch.linspace(0, T - 1, timesteps, device="cpu").round().long()
    names, plist = list(params), list(params.values())
    flags = [p.requires_grad for p in plist]
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n = min(n_samples, len(data))
    try:
        for p in plist:
            p.requires_grad_(True)
        for s in range(n):
            j = s * len(data) // n  # samples spread evenly over the replay prompts
            g = torch.Generator().manual_seed(seed * 1_000_003 + s)
            per_sample = [torch.zeros_like(f) for f in fisher.values()]
            z0 = data.latents[j : j + 1].expand(len(ts), -1, -1, -1)
            noise_all = model.randn(z0.shape, g)  # drawn at once: chunking-invariant
            for part, noise in zip(ts.split(chunk), noise_all.split(chunk), strict=True):
                x_t = model.scheduler.add_noise(z0[: len(part)], noise, part)
                cond = data.emb[data.caption[j : j + 1]].expand(len(part), -1, -1)
                pred = model.predict_noise(x_t, part, cond)
                # sum over timesteps of each timestep's mean-squared error (the paper's ELBO sum)
                loss = (pred - noise).pow(2).mean(dim=(1, 2, 3)).sum() * (T / timesteps)
                for acc, gr in zip(per_sample, torch.autograd.grad(loss, plist), strict=True):
                    acc += gr.float()
            for f, acc in zip(fisher.values(), per_sample, strict=True):
                f += acc.pow(2) / n
    finally:
        for p, f in zip(plist, flags, strict=True):
            p.requires_grad_(f)
    return {k: fisher[k] for k in names}


def cached_fisher(model, params, data, cfg: SelectiveAmnesiaConfig) -> dict[str, torch.Tensor]:
    """:func:`diagonal_fisher` through a cache keyed by base model, weights, samples and settings."""
    ident = {
        "base": model.base_hash,
        "params": sorted(params),
        "prompts": hashlib.sha256("\n".join(data.prompts).encode()).hexdigest(),
        "n": min(cfg.n_fisher_samples, len(data)),
        "n_replay": len(data),
        "timesteps": cfg.fisher_timesteps,
        # the weights themselves (a cheap fingerprint): an already-edited model is not its base
        "weights": [
            [float(p.detach().double().sum()), float(p.detach().double().pow(2).sum())]
            for p in params.values()
        ],
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    f = cache_dir() / f"fisher_{key}.pt"

    def valid(hit) -> bool:
        return (
            isinstance(hit, dict)
            and set(hit) == set(params)
            and all(
                torch.is_tensor(hit[n]) and hit[n].shape == p.shape and torch.isfinite(hit[n]).all()
                for n, p in params.items()
            )
        )

    hit = read_entry(f, valid)  # stored on the CPU: moved to each parameter's device
    if hit is not None:
        return {n: v.to(params[n].device) for n, v in hit.items()}
    fisher = diagonal_fisher(
        model, params, data, cfg.n_fisher_samples, cfg.fisher_timesteps, cfg.fisher_chunk
    )
    write_entry({n: v.cpu() for n, v in fisher.items()}, f)
    return fisher


def ewc_penalty(params, fisher, theta_star) -> torch.Tensor:
    """sum_i F_i (theta_i - theta*_i)^2 over the named parameters."""
    return sum((fisher[n] * (p - theta_star[n]).pow(2)).sum() for n, p in params.items())


@register_method(
    "selective_amnesia",
    config=SelectiveAmnesiaConfig,
    requires=(Capability.TRAINABLE_DENOISER, Capability.LATENT_VAE),
    presets={
        "paper": {},
        "toy": {
            "train_method": "xattn",
            "steps": 300,
            "lr": 1e-3,
            "batch_size": 8,
            "n_surrogate_images": 80,
            "n_replay_images": 160,
            "n_fisher_samples": 64,
            "fisher_timesteps": 50,
            "lam": 0.1,
        },
        "smoke": {
            "steps": 2,
            "lr": 1e-3,
            "batch_size": 2,
            "n_surrogate_images": 2,
            "n_replay_images": 2,
            "n_fisher_samples": 2,
            "fisher_timesteps": 4,
            "fisher_chunk": 2,
            "progress": False,
        },
    },  # fmt: skip
    paper="https://arxiv.org/abs/2305.10120",
    modifies=r"^unet\.",
)
def erase(model, task, cfg: SelectiveAmnesiaConfig) -> ErasureResult:
    """Re-teach the forget captions on surrogate images, with replay and EWC."""
    if cfg.surrogate not in SURROGATES:
        raise GenUnlearnError(
            f"selective_amnesia surrogate must be one of {', '.join(SURROGATES)}, "
            f"got {cfg.surrogate!r}"
        )
    forget_p, surrogate_p, remain_p = caption_sets(model, task, neutral=cfg.surrogate == "neutral")
    # surrogate images: generated from the swapped captions, trained with the forget captions
    q = generate_latents(model, surrogate_p, cfg.n_surrogate_images)
    q = _recaption(model, q, surrogate_p, forget_p)
    replay = generate_latents(model, remain_p, cfg.n_replay_images)
    params = trainable(model, cfg.train_method)
    fisher = cached_fisher(model, params, replay, cfg)
    theta_star = {n: p.detach().clone() for n, p in params.items()}
    parts: dict[str, list[float]] = {"forget": [], "replay": [], "ewc": []}

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        l_f = denoising_loss(model, q, draw(q, cfg.batch_size, g), g)
        l_r = denoising_loss(model, replay, draw(replay, cfg.batch_size, g), g)
        ewc = cfg.lam * ewc_penalty(params, fisher, theta_star)
        for k, v in (("forget", l_f), ("replay", l_r), ("ewc", ewc)):
            parts[k].append(float(v.detach()))
        return l_f + cfg.gamma * l_r + ewc

    finetune(
        params, loss_fn, cfg.steps, cfg.lr, optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay, progress=cfg.progress, desc="selective_amnesia",
    )  # fmt: skip
    f_all = torch.cat([f.reshape(-1) for f in fisher.values()])
    return ErasureResult(
        info={
            "surrogate_prompts": surrogate_p[:3],
            "fisher_mean": float(f_all.mean()), "fisher_max": float(f_all.max()),
            "fisher_samples": min(cfg.n_fisher_samples, len(replay)),
            "ewc": parts["ewc"][:: max(1, len(parts["ewc"]) // 50)],
            "final_forget_loss": parts["forget"][-1] if parts["forget"] else None,
            "final_replay_loss": parts["replay"][-1] if parts["replay"] else None,
        }
    )  # fmt: skip
