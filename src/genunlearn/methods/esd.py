"""esd: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023).

Paper: https://arxiv.org/abs/2303.07345 — official code: github.com/rohitgandikota/erasing.

Idea: distil a frozen copy's *negatively guided* prediction into the model, so that conditioning
on the concept c steers away from it. Each iteration draws k ~ U{0..n-1} of an n-step DDIM
schedule, samples x_t by running the current model from noise with the concept prompt at
``start_guidance`` for k steps, and regresses

    eps_theta(x_t, c, t)  onto  eps*(x_t, a, t) - eta * [eps*(x_t, c, t) - eps*(x_t, a, t)]

with MSE, where eps* is the frozen original and a is the empty prompt. ``erase_from`` = B is the
newer code's "erase concept A from B" (``esd_sd.py``): the trajectories are drawn with B, the
*student is conditioned on B*, and the target keeps B's own prediction minus A's guidance,

    eps_theta(x_t, B, t)  onto  eps*(x_t, B, t) - eta * [eps*(x_t, c, t) - eps*(x_t, a, t)],

so "erase hat from cowboy" trains the cowboy prompt to lose the hat (c = A = the concept). That
script uses eta 2 by default; without B its target eps*(c) - eta (eps*(c) - eps*(a)) equals the
paper's with eta - 1, so the paper's form (above) is kept there.

Symbols: eta = ``negative_guidance``; n = ``ddim_steps``; the trained weights are a selector
(``core.params``): ``xattn`` = ESD-x (cross-attention; styles, specific concepts), ``noxattn`` =
ESD-u (everything but cross-attention; global concepts such as nudity), ``full``, ``kv``
(= "esd-x-strict").

Defaults are the paper-era code: 1000 iterations, Adam lr 1e-5, batch 1, start guidance 3,
negative guidance 1, 50 DDIM steps. Differences from the official code: one implementation for
both code generations (the newer diffusers script's defaults are 200 iterations, lr 5e-5, eta 2,
and it draws the trajectories with the frozen original; here the current model draws them, as in
the paper-era code, also with ``erase_from``);
several targets are erased by drawing one target per iteration (as the newer "alt" script does);
``batch_size`` > 1 averages the loss over several trajectories per step (the toy preset uses 4
to cut variance on a CPU).

The default prompt is the world's phrase (``World.prompt``: "a shape in striped style", "a
star"), because toy-sd barely reacts to the bare words ("striped style"), which left ESD's target
nearly the model's own output. The ``toy`` preset (ESD-x, lr 1e-4, 200 steps) draws each
iteration's prompt from the world's full captions that contain the concept (``prompt="captions"``,
at most ``max_prompts`` of them; the newer code also trains several prompts), the point of the lr
frontier that erases completely. Figures: docs/results.md#esd
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from genunlearn.core.concept_sets import caption_sets
from genunlearn.core.finetune import finetune
from genunlearn.core.losses import negative_guidance_target
from genunlearn.core.params import trainable
from genunlearn.core.sampling import partial_trajectory
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult


@dataclass(frozen=True)
class ESDConfig:
    """ESD settings (paper-era defaults).

    Args:
        train_method: parameter selector: xattn (ESD-x), noxattn (ESD-u), full, kv, re:<regex>.
        steps: training iterations.
        lr: Adam learning rate.
        negative_guidance: eta, how far the target is pushed past the unconditional prediction.
        start_guidance: CFG scale of the partial trajectories.
        ddim_steps: length of the DDIM schedule the trajectories are drawn from.
        batch_size: trajectories per iteration.
        erase_from: prompt B to erase the concept from (None: erase it everywhere). The student
            is conditioned on B and regressed onto eps*(B) - eta (eps*(c) - eps*(empty)).
        prompt: the concept prompt c (None: each target's in-distribution prompt from the model's
            world, ``World.prompt``: "a shape in striped style", "a star"; free text as given;
            "captions": the world's full captions that contain the target, one drawn per
            iteration, e.g. "a red star in striped style").
        max_prompts: with ``prompt="captions"``, at most this many captions (evenly spread).
        progress: show a progress bar.
    """

    train_method: str = "xattn"
    steps: int = 1000
    lr: float = 1e-5
    negative_guidance: float = 1.0
    start_guidance: float = 3.0
    ddim_steps: int = 50
    batch_size: int = 1
    erase_from: str | None = None
    prompt: str | None = None
    max_prompts: int = 40
    progress: bool = True


@register_method(
    "esd",
    config=ESDConfig,
    requires=(Capability.CROSS_ATTENTION, Capability.TRAINABLE_DENOISER),
    presets={
        "paper": {},
        "toy": {
            "steps": 200,
            "lr": 1e-4,
            "ddim_steps": 25,
            "batch_size": 4,
            "prompt": "captions",
        },
        "smoke": {"steps": 2, "lr": 1e-3, "ddim_steps": 3, "progress": False},
    },
    paper="https://arxiv.org/abs/2303.07345",
    modifies=r"^unet\.",
)
def erase(model, task, cfg: ESDConfig) -> ErasureResult:
    """Fine-tune the selected UNet weights towards the negatively guided teacher."""
    teacher = model.frozen_copy()
    world = getattr(model, "world", None)
    if cfg.prompt == "captions":
        texts = caption_sets(model, task, cfg.max_prompts)[0]
    elif cfg.prompt:
        texts = [cfg.prompt]
    else:
        texts = [world.prompt(t) if world and world.kind_of(t) else t for t in task.targets]
    with torch.no_grad():
        emb_c = model.encode_prompt(texts)
        emb_u = model.encode_prompt([""])
        emb_b = model.encode_prompt([cfg.erase_from]) if cfg.erase_from else None
    params = trainable(model, cfg.train_method)
    b = cfg.batch_size

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        i = int(torch.randint(len(texts), (1,), generator=g, device="cpu"))
        k = int(torch.randint(cfg.ddim_steps, (1,), generator=g, device="cpu"))
        c = emb_c[i : i + 1].expand(b, -1, -1)
        u = emb_u.expand(b, -1, -1)
        # the prompt the student is trained on (and the trajectories drawn with): the concept
        # itself, or B of "erase c from B"
        s = c if emb_b is None else emb_b.expand(b, -1, -1)
        noise = model.randn((b, *model.latent_shape), g)
        x_t, t = partial_trajectory(model, s, u, cfg.ddim_steps, k, cfg.start_guidance, noise)
        with torch.no_grad():  # every term of the target comes from the frozen original
            e_c = teacher.predict_noise(x_t, t, c)
            e_u = teacher.predict_noise(x_t, t, u)
            if emb_b is None:
                target = negative_guidance_target(e_c, e_u, cfg.negative_guidance)
            else:
                target = teacher.predict_noise(x_t, t, s) - cfg.negative_guidance * (e_c - e_u)
        return F.mse_loss(model.predict_noise(x_t, t, s), target)

    losses = finetune(
        params, loss_fn, cfg.steps, cfg.lr, progress=cfg.progress, desc="esd"
    )  # fmt: skip
    return ErasureResult(
        info={
            "prompts": texts, "student_prompts": [cfg.erase_from] if cfg.erase_from else texts,
            "first_loss": losses[0], "final_loss": losses[-1],
        }
    )  # fmt: skip
