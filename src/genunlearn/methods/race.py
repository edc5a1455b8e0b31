"""race: Robust Adversarial Concept Erasure (Kim et al., ECCV 2024).

Paper: https://arxiv.org/abs/2405.16341 — official code: github.com/chkimmmmm/R.A.C.E.
(``train-scripts/train-esd.py``, ``--adv_train``).

Idea: an ESD-erased model still regenerates the concept from a conditioning embedding near the
concept's own one. RACE continues ESD training with that embedding found by an attacker: at each
iteration a PGD adversary searches the L-inf ball of radius epsilon around the concept's
conditioning embedding c (the text encoder's output, [1, 77, D]) for the embedding from which the
*current* model best denoises the trajectory, and the ESD loss is applied there:

    c_adv = argmin_{|d|_inf <= eps} || eps_theta(x_t, c + d, t) - z_T ||^2     (PGD, sign steps)
    loss  = || eps_theta(x_t, c_adv, t) - [eps*(x_t, a, t) - eta (eps*(x_t, c, t) - eps*(x_t, a, t))] ||^2
            (+ lambda * sum_params L1(theta, theta_0) with ``lasso``)

where x_t is ESD's partial DDIM trajectory from noise z_T with the concept prompt, eps* the frozen
original, a the empty prompt. PGD: random start uniform in the ball, ``pgd_steps`` steps of size
alpha = eps / 4 along the gradient sign, each followed by projection onto the ball and a clamp to
[min(c), max(c)] (the official code's ``txt_min_max``).

Symbols: eps = ``epsilon``; eta = ``negative_guidance``; lambda = ``lasso_weight``. The model
starts from an ESD run (``from_run``: its weights are applied first; its selector is reused) or,
without one, trains ESD itself first (``esd_steps`` iterations of the registered ``esd`` method
with this config's ESD settings), as the paper's pipeline does.

Defaults: the official code's (epsilon 0.1, 10 PGD steps, alpha eps/4, L2 attack loss, lasso off
with weight 0.1, ESD settings lr 1e-5, start guidance 3, eta 1, 50 DDIM steps; 1000 adversarial
iterations; ESD first for 1000). Differences: the trajectory's DDIM timestep is used for the
losses (the official code draws a DDPM timestep inside the DDIM step's interval); the attacker's
target z_T is the trajectory's initial noise, as in the official code. The ``toy`` preset
shortens both stages to what fits a CPU at the ESD toy preset's settings. Figures:
docs/results.md#race
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from genunlearn import registry, runs
from genunlearn.core.concept_sets import caption_sets
from genunlearn.core.finetune import finetune
from genunlearn.core.losses import negative_guidance_target
from genunlearn.core.params import trainable
from genunlearn.core.sampling import partial_trajectory
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError


@dataclass(frozen=True)
class RACEConfig:
    """RACE settings (official-code defaults).

    Args:
        from_run: an ``esd`` run directory to continue (made on the same base model); None:
            train ESD first for ``esd_steps``.
        esd_steps: ESD iterations before the adversarial stage when ``from_run`` is None.
        train_method: parameter selector (None: the ESD run's, else ``xattn``).
        steps: adversarial iterations.
        lr: Adam learning rate (both stages).
        epsilon: radius of the L-inf ball around the concept embedding, > 0.
        pgd_steps: PGD iterations per training iteration, >= 1.
        attack_loss: "l2" (official default) or "l1".
        lasso: add the L1 pull towards the weights the adversarial stage started from.
        lasso_weight: its weight (official: 0.1).
        negative_guidance, start_guidance, ddim_steps, prompt, max_prompts: as in ``esd``.
        progress: show progress bars.
    """

    from_run: str | None = None
    esd_steps: int = 1000
    train_method: str | None = None
    steps: int = 1000
    lr: float = 1e-5
    epsilon: float = 0.1
    pgd_steps: int = 10
    attack_loss: str = "l2"
    lasso: bool = False
    lasso_weight: float = 0.1
    negative_guidance: float = 1.0
    start_guidance: float = 3.0
    ddim_steps: int = 50
    prompt: str | None = None
    max_prompts: int = 40
    progress: bool = True

    def __post_init__(self):
        if not (self.epsilon > 0 and self.epsilon < float("inf")):
            raise GenUnlearnError(f"epsilon must be a finite number > 0, got {self.epsilon}")
        if self.pgd_steps < 1:
            raise GenUnlearnError(f"pgd_steps must be >= 1, got {self.pgd_steps}")
        if self.attack_loss not in ("l1", "l2"):
            raise GenUnlearnError(f"attack_loss must be 'l1' or 'l2', got {self.attack_loss!r}")


def pgd_embedding(
    loss_of, c: torch.Tensor, epsilon: float, steps: int, g: torch.Generator
) -> torch.Tensor:
    """RACE's L-inf PGD around ``c``: minimise ``loss_of(embedding)`` (a scalar) from a random
    start in the ball, sign steps of epsilon / 4, projection onto the ball and clamp to
    [min(c), max(c)] after each step. Returns the detached adversarial embedding."""
    c = c.detach()
    lo, hi = c.min(), c.max()
    start = torch.rand(c.shape, generator=g, device="cpu").to(c.device, c.dtype)
    adv = torch.clamp(c + (2 * start - 1) * epsilon, lo, hi)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(adv), adv)
        adv = adv.detach() - (epsilon / 4) * grad.sign()
        adv = torch.clamp(c + torch.clamp(adv - c, -epsilon, epsilon), lo, hi)
    return adv.detach()


def _start(model, cfg: RACEConfig, task) -> str:
    """Put the starting ESD weights on ``model``; returns the selector to train."""
    if cfg.from_run is None:
        esd = registry.get("method", "esd")
        shared = {f.name for f in fields(esd.config)} & {f.name for f in fields(cfg)}
        esd_cfg = replace(
            esd.config(),
            **{k: getattr(cfg, k) for k in shared if k not in ("steps", "train_method")},
            steps=cfg.esd_steps,
            train_method=cfg.train_method or "xattn",
        )
        esd.fn(model, task, esd_cfg)
        return esd_cfg.train_method
    path = Path(cfg.from_run).expanduser()
    rec = runs.read_record(path)
    if rec.get("method") != "esd":
        raise GenUnlearnError(
            f"race continues an esd run; {path} is a {rec.get('method')!r} run (give an esd run "
            "directory, or from_run: null to train ESD first)"
        )
    sha = (rec.get("sha256") or {}).get(runs.ARTIFACT)
    model.apply_delta(runs.load_artifact(path, model.base_hash, sha))
    return cfg.train_method or rec["config"].get("train_method", "xattn")


@register_method(
    "race",
    config=RACEConfig,
    requires=(Capability.CROSS_ATTENTION, Capability.TRAINABLE_DENOISER),
    presets={
        "paper": {},
        "toy": {
            "esd_steps": 200,
            "steps": 100,
            "lr": 1e-4,
            "ddim_steps": 25,
            "pgd_steps": 5,
            "prompt": "captions",
        },
        "smoke": {
            "esd_steps": 1,
            "steps": 2,
            "lr": 1e-3,
            "ddim_steps": 3,
            "pgd_steps": 2,
            "progress": False,
        },  # fmt: skip
    },
    paper="https://arxiv.org/abs/2405.16341",
    modifies=r"^unet\.",
)
def erase(model, task, cfg: RACEConfig) -> ErasureResult:
    """ESD (trained here or loaded from ``from_run``), then ESD under a PGD embedding adversary."""
    # the frozen original gives ESD's targets; taken first, it keeps the base weights when the
    # starting ESD weights are put on the model (new storage, see SDAdapter.apply_delta)
    teacher = model.frozen_copy()
    selector = _start(model, cfg, task)
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
    params = trainable(model, selector)
    start = [p.detach().clone() for p in params.values()] if cfg.lasso else []
    attack = F.mse_loss if cfg.attack_loss == "l2" else F.l1_loss
    shifts: list[float] = []

    def loss_fn(step: int, g: torch.Generator) -> torch.Tensor:
        i = int(torch.randint(len(texts), (1,), generator=g, device="cpu"))
        k = int(torch.randint(cfg.ddim_steps, (1,), generator=g, device="cpu"))
        c = emb_c[i : i + 1]
        noise = model.randn((1, *model.latent_shape), g)
        x_t, t = partial_trajectory(model, c, emb_u, cfg.ddim_steps, k, cfg.start_guidance, noise)
        with torch.no_grad():
            target = negative_guidance_target(
                teacher.predict_noise(x_t, t, c),
                teacher.predict_noise(x_t, t, emb_u),
                cfg.negative_guidance,
            )
        z_t = noise.to(x_t.device)
        adv = pgd_embedding(
            lambda e: attack(model.predict_noise(x_t, t, e), z_t), c, cfg.epsilon, cfg.pgd_steps, g
        )
        shifts.append(float((adv - c).abs().max()))
        loss = F.mse_loss(model.predict_noise(x_t, t, adv), target)
        if cfg.lasso:
            pull = sum(F.l1_loss(p, p0) for p, p0 in zip(params.values(), start, strict=True))
            loss = loss + cfg.lasso_weight * pull
        return loss

    losses = finetune(params, loss_fn, cfg.steps, cfg.lr, progress=cfg.progress, desc="race")
    return ErasureResult(
        info={
            "prompts": texts, "train_method": selector, "first_loss": losses[0],
            "final_loss": losses[-1], "max_embedding_shift": max(shifts),
        }
    )  # fmt: skip
