"""spm: Concept Semi-Permeable Membrane, a one-dimensional adapter (Lyu et al., CVPR 2024).

Paper: "One-dimensional Adapter to Rule Them All: Concepts, Diffusion Models and Erasing
Applications" (Lyu, Yang, Hong, Chen, Jin, He, Xue, Han, Ding),
https://arxiv.org/abs/2312.16145 — official code: github.com/Con6924/SPM.

Idea: the base model is frozen; a rank-1 ("one-dimensional") adapter ``W x + m s up(down(x))``
(``models/addons.py``; s = alpha / rank, up initialised to zero) is added to every Linear and
Conv2d inside every Transformer2DModel of the UNet (proj_in/out, attn1/attn2 q/k/v/out, the
feed-forward layers). It is trained, with the base weights untouched, on two terms:

- erase (ESD-style): x_t comes from a partial DDIM run *with the adapter on* (CFG
  ``start_guidance``, a random stop k in 1..n-1 of ``ddim_steps``), and eps_adapted(x_t, c_target)
  is regressed onto eps(x_t, c_neutral) - g [eps(x_t, c_positive) - eps(x_t, c_neutral)] of the
  base model (adapter off); g = ``guidance``, neutral = "" and positive = the target, as in the
  official prompt defaults;
- latent anchoring: ``anchor_batch`` random conditionings are drawn as Gaussian noise of the
  target embedding's shape, accepted with probability 1 - cos(target, noise) (so concepts far
  from the target are favoured) and rescaled to 0.8-1.2 times the target embedding's norm; the
  adapted and the base predictions on them are pulled together with weight ``la_strength``.
  This closes the membrane for everything that is not the target, without any data.

At inference the multiplier m is set per prompt by *facilitated transport*: max(cosine similarity
of the prompt embedding with the erased prompt's, share of the erased prompt's tokens in the
prompt). The adapter is the run's ``addon.safetensors``; ``gu.load_run([run_a, run_b])`` loads
several SPMs, each with its own multiplier.

Symbols: g = ``guidance``; n = ``ddim_steps``; lambda_LA = ``la_strength``; the adapter rank and
alpha are ``rank`` / ``alpha``. Paper defaults: rank 1, alpha 1, 3000 iterations, batch 1, lr
1e-4, 30 DDIM steps for the partial runs at CFG 3, g 1, la_strength 1000, 4 anchors.

Differences from the official code: AdamW (fp32) instead of AdamW8bit and a constant learning
rate instead of cosine-with-restarts (the shared training loop has no scheduler); several SPMs
are combined as a weighted sum of their *outputs*, m_a up_a(down_a(x)) + m_b up_b(down_b(x)),
where the official inference script sums the down and up weights separately (cross terms, and a
single SPM scaled by m^2); the gate is computed per conditioning row, so the unconditional
branch of classifier-free guidance gets the empty prompt's own multiplier instead of sharing the
prompt's. With ``use_template`` the official code templates only the target prompt (CLIP
ImageNet templates); on a labelled world we template the target, positive and neutral prompts
together with the world's own captions (neutral = the caption without the target's word), as a
toy model has only ever seen full captions (the toy preset does).

Toy preset: ``la_strength`` 100, not 1000: toy-sd draws circles and squares for shapeless
conditionings such as anchoring's, so strong anchoring pins them. Figures: docs/results.md#spm
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from genunlearn.core.finetune import finetune
from genunlearn.core.losses import negative_guidance_target
from genunlearn.core.sampling import partial_trajectory
from genunlearn.models import addons
from genunlearn.registry import register_method
from genunlearn.types import AddOn, Capability, ErasureResult, GenUnlearnError


@dataclass(frozen=True)
class SPMConfig:
    """SPM settings (paper defaults).

    Args:
        rank: adapter rank (1: the one-dimensional adapter); 1..min(in, out) of every layer.
        alpha: adapter alpha (scale = alpha / rank).
        steps: training iterations.
        lr: AdamW learning rate.
        guidance: g of the erase target.
        start_guidance: CFG scale of the partial trajectories.
        ddim_steps: length of the DDIM schedule the trajectories are drawn from.
        la_strength: weight of the latent-anchoring loss (0 switches it off).
        anchor_batch: random anchor conditionings per iteration.
        batch_size: trajectories per iteration.
        neutral: the neutral prompt (the erase target's baseline).
        prompt: the concept prompt (None: the targets' prompt texts from the model's world).
        use_template: put the concept into a random template each iteration (the official
            ``use_template`` option). On a model with a labelled world the templates are the
            world's captions that contain the target, and the neutral prompt of a caption is the
            same caption without the target's word; elsewhere CLIP-style templates are used.
        progress: show a progress bar.
    """

    rank: int = 1
    alpha: float = 1.0
    steps: int = 3000
    lr: float = 1e-4
    guidance: float = 1.0
    start_guidance: float = 3.0
    ddim_steps: int = 30
    la_strength: float = 1000.0
    anchor_batch: int = 4
    batch_size: int = 1
    neutral: str = ""
    prompt: str | None = None
    use_template: bool = False
    progress: bool = True


TEMPLATES = ("a photo of a {}.", "a painting of a {}.", "an image of {}.", "a rendering of a {}.")


def training_prompts(model, task, texts: list[str], cfg: SPMConfig) -> list[tuple[str, str]]:
    """(concept prompt, neutral prompt) pairs drawn from during training."""
    if not cfg.use_template:
        return [(t, cfg.neutral) for t in texts]
    world = getattr(model, "world", None)
    if cfg.prompt is None and world is not None and all(world.kind_of(t) for t in task.targets):
        has, _ = world.split(list(task.targets))
        pairs = []
        for lab in has:
            cap = world.caption(lab)
            words = [w for w in cap.split() if w not in task.targets]
            pairs.append((cap, " ".join(words)))
        return pairs
    return [(tpl.format(t), cfg.neutral) for t in texts for tpl in TEMPLATES]


def sample_anchors(target: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """SPM's latent-anchoring conditionings: [n, L, D] Gaussian draws accepted with probability
    1 - cos(target, draw), rescaled to 0.8-1.2 x the target's norm."""
    flat = target.flatten()
    out = []
    while len(out) < n:
        z = torch.randn(flat.shape, generator=g, device="cpu").to(flat.device)
        z = z / z.norm()
        sim = F.cosine_similarity(flat, z, dim=0)
        if float(torch.rand((), generator=g, device="cpu")) < 1 - float(sim):
            scale = 0.8 + 0.4 * float(torch.rand((), generator=g, device="cpu"))
            out.append((scale * z * flat.norm()).view_as(target))
    return torch.stack(out)


def install(model, inference: dict, addon: AddOn | None) -> None:
    """Attach a run's adapter to ``model``, gated by facilitated transport."""
    if addon is None:
        raise GenUnlearnError("an spm run must carry its adapter as an add-on; it has none")
    addons.attach(model, addon)


@register_method(
    "spm",
    config=SPMConfig,
    requires=(Capability.CROSS_ATTENTION, Capability.TRAINABLE_DENOISER),
    presets={
        "paper": {},
        "toy": {
            "steps": 300,
            "lr": 2e-3,
            "ddim_steps": 10,
            "batch_size": 2,
            "use_template": True,
            "la_strength": 100.0,
        },
        "smoke": {"steps": 2, "lr": 1e-3, "ddim_steps": 3, "anchor_batch": 1, "progress": False},
    },
    paper="https://arxiv.org/abs/2312.16145",
    modifies="",
    install=install,
)
def erase(model, task, cfg: SPMConfig) -> ErasureResult:
    """Train a rank-``rank`` adapter on the transformer blocks; the base weights stay as they are."""
    if cfg.la_strength < 0 or cfg.anchor_batch < 1 or cfg.steps < 1:
        raise GenUnlearnError("spm needs la_strength >= 0, anchor_batch >= 1 and steps >= 1")
    if cfg.ddim_steps < 2:
        raise GenUnlearnError(f"spm ddim_steps must be >= 2, got {cfg.ddim_steps}")
    world = getattr(model, "world", None)
    texts = (
        [cfg.prompt]
        if cfg.prompt
        else [world.text(t) if world and world.kind_of(t) else t for t in task.targets]
    )
    if cfg.neutral in texts:
        raise GenUnlearnError(f"spm neutral prompt {cfg.neutral!r} is also the erased concept")
    pairs = training_prompts(model, task, texts, cfg)
    modules = addons.transformer_modules(model.denoiser)
    if not modules:
        raise GenUnlearnError(f"model {model.model_id} has no Transformer2DModel blocks to adapt")
    tensors = addons.init_low_rank(modules, cfg.rank)
    for v in tensors.values():
        v.requires_grad_(True)
    addon = AddOn("spm", tensors, {"prompts": texts, "rank": cfg.rank, "alpha": cfg.alpha})
    addons.attach(model, addon, fixed=1.0)
    k_index = len(addons.attached(model)) - 1
    with torch.no_grad():
        emb_c = model.encode_prompt([c for c, _ in pairs])
        emb_n = model.encode_prompt([n for _, n in pairs])
        emb_u = model.encode_prompt([""])
    b = cfg.batch_size

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        i = int(torch.randint(len(pairs), (1,), generator=g, device="cpu"))
        k = int(torch.randint(1, cfg.ddim_steps, (1,), generator=g, device="cpu"))
        c = emb_c[i : i + 1].expand(b, -1, -1)
        noise = model.randn((b, *model.latent_shape), g)
        with addons.multiplier(model, k_index, 1.0):  # the trajectory runs with the adapter on
            x_t, t = partial_trajectory(
                model, c, emb_u.expand(b, -1, -1), cfg.ddim_steps, k, cfg.start_guidance, noise
            )
        with torch.no_grad(), addons.multiplier(model, k_index, 0.0):
            e_pos = model.predict_noise(x_t, t, c)
            e_neu = model.predict_noise(x_t, t, emb_n[i : i + 1].expand(b, -1, -1))
            target = negative_guidance_target(e_pos, e_neu, cfg.guidance)
        with addons.multiplier(model, k_index, 1.0):
            loss = F.mse_loss(model.predict_noise(x_t, t, c), target)
        if cfg.la_strength > 0:
            anchors = sample_anchors(emb_c[i], cfg.anchor_batch, g)
            anchors = anchors.repeat_interleave(b, 0)
            x_a = x_t.repeat(cfg.anchor_batch, 1, 1, 1)
            with torch.no_grad(), addons.multiplier(model, k_index, 0.0):
                a_ori = model.predict_noise(x_a, t, anchors)
            with addons.multiplier(model, k_index, 1.0):
                a_new = model.predict_noise(x_a, t, anchors)
            loss = loss + cfg.la_strength * F.mse_loss(a_new, a_ori)
        return loss

    losses = finetune(
        tensors, loss_fn, cfg.steps, cfg.lr, optimizer="adamw", progress=cfg.progress, desc="spm"
    )
    for v in tensors.values():
        v.requires_grad_(False)
    addons.set_multiplier(model, k_index, None)  # facilitated transport from now on
    n_params = sum(v.numel() for v in tensors.values())
    return ErasureResult(
        addon=addon,
        info={
            "prompts": texts,
            "training_prompts": [c for c, _ in pairs][:4],
            "adapted_layers": len(modules),
            "adapter_parameters": n_params,
            "first_loss": losses[0],
            "final_loss": losses[-1],
        },
    )
