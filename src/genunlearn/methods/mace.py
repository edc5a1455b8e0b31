"""mace: MACE: Mass Concept Erasure in Diffusion Models (Lu, Wang, Li, Liu, Kong; CVPR 2024).

Paper: https://arxiv.org/abs/2403.06135 — official code: github.com/Shilin-LU/MACE.

Idea: erase many concepts at once with three steps, all on the UNet's cross-attention keys and
values (``attn2.to_k`` / ``attn2.to_v``):

1. **Closed-form refinement (CFR).** Each target appears in ``n_prompts`` prompts; the same
   prompts with the target replaced by its *mapping* concept give the desired keys/values. Tokens
   are aligned by common prefix and suffix (plus padding), so the words *around* the target —
   which absorb it through the causal text encoder — are remapped, in closed form
   (``core.closed_form``): W' = argmin sum ||W' c_old - W c_new||^2 + s_tr sum ||W' c_p - W c_p||^2
   + lam ||W' - W||^2, with preserve prompts c_p (MACE's cached COCO statistics).
2. **One rank-1 LoRA per concept** on every ``to_k`` / ``to_v`` of the refined model, trained so
   that the attention paid to the concept's tokens (plus the first end-of-text token) *inside the
   concept's region* vanishes: L = sum_l ||A_l[region pixels, concept tokens]||_F
   (``core.attention``). Only keys change the probabilities, so value LoRAs stay at zero, as in
   the official code.
3. **Closed-form fusion.** One W per projection reproduces every LoRA-fused model on its own
   concept's prompts (all tokens): W* = argmin sum_i ||W c_i - (W' + B_i A_i) c_i||^2
   + s_fu sum ||W c_p - W_0 c_p||^2 + lam ||W - W'||^2.

Symbols: c = text-encoder states, lam = ``lam`` (``lamb``), s_tr / s_fu = ``train_preserve_scale``
/ ``fuse_preserve_scale``, A_i [rank, d], B_i [out, rank] (B_i = 0 at start).

Defaults: the official celebrity / art-100 configs (lr 1e-4, 50 steps, rank 1, batch 1,
preserve scales 1e-4, lam 0, 30 prompts, 8 images per concept, pooler token on). Differences:
prompts are the world's captions containing the target (free text: 5 generic templates), not
MACE's 30 templates; the mapping defaults to *dropping* the target's word (``mapping`` /
``task.anchor`` substitute one). Preserve prompts (plus "", always): ``task.retain`` if given;
else the world's captions without any target; else, as MACE's COCO cache, the built-in general
captions (``data.prompts.GENERAL_CAPTIONS``, those naming a target left out), weighted by
COCO's caption count over theirs so that s_tr keeps the paper's meaning. Every closed form
leaves directions its inputs cannot determine unchanged (``core.closed_form``). Regions: on
ToyCanvas the world renders the concept's images with the object's exact mask (what Grounded-SAM
gives on photographs), elsewhere the base model's own attention to the concept above its image
mean (``regions="attention"``; "none": all pixels); the LoRA is our own rank-r term
(``core.lora``), since fusion needs only B A. The toy preset (lam 1, preserve 0.1, lr 1e-2,
batch 4, 16 images) replaces scales tuned for COCO-sized preserve statistics.

Figures (protocol, ten concepts in one call): docs/results.md#mace
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from genunlearn.core.attention import (
    AttentionStore,
    attention_regions,
    concept_attention_loss,
    patched_cross_attention,
    position_mask,
)
from genunlearn.core.cache import cached_sample
from genunlearn.core.closed_form import least_squares_edit
from genunlearn.core.finetune import finetune
from genunlearn.core.lora import KVLoRA
from genunlearn.core.params import own_storage
from genunlearn.data.prompts import COCO_CAPTIONS, GENERAL_CAPTIONS
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError

_TEMPLATES = ("{}", "a photo of {}", "an image of {}", "a picture of {}", "a drawing of {}")


@dataclass(frozen=True)
class MACEConfig:
    """MACE settings (official celebrity / art-100 defaults).

    Args:
        mapping: the word each target is replaced by in CFR ("" drops it; None: task.anchor, else "").
        n_prompts: prompts per concept for CFR and fusion.
        lam: pull towards the current weights in both closed forms.
        train_preserve_scale: weight of the preserve prompts in CFR.
        fuse_preserve_scale: weight of the preserve prompts in the fusion.
        rank: LoRA rank.
        steps: LoRA training steps per concept.
        lr: LoRA learning rate (Adam).
        batch_size: images per step.
        n_images: images per concept.
        use_pooler: also suppress the first end-of-text token.
        regions: "auto" (world masks where the world renders its images, else attention), "world", "attention", "none".
        importance_sampling: draw timesteps from MACE's f(t) (mass between t=200 and 400).
        progress: show progress bars.
    """

    mapping: str | None = None
    n_prompts: int = 30
    lam: float = 0.0
    train_preserve_scale: float = 1e-4
    fuse_preserve_scale: float = 1e-4
    rank: int = 1
    steps: int = 50
    lr: float = 1e-4
    batch_size: int = 1
    n_images: int = 8
    use_pooler: bool = True
    regions: str = "auto"
    importance_sampling: bool = False
    progress: bool = True


def _say(world, name: str) -> str:
    return world.text(name) if world is not None and world.kind_of(name) else name


def concept_pairs(model, target: str, mapping: str, n: int) -> tuple[list[str], list[str], str]:
    """(prompts naming ``target``, the same with it replaced by ``mapping``, its words)."""
    world = getattr(model, "world", None)
    if world is not None and world.kind_of(target):
        has, _ = world.split([target])
        old = [world.caption(lab) for lab in has[:: max(1, len(has) // n)]][:n]
    else:
        old = [t.format(target) for t in _TEMPLATES][:n]
    pat = re.compile(rf"(?<!\S){re.escape(target)}(?!\S)")
    new = [" ".join(pat.sub(mapping, p).split()) for p in old]
    return old, new, _say(world, target)


def _aligned(model, old: str, new: str) -> tuple[list[int], list[int]]:
    """Token positions of ``old`` and ``new`` that correspond: common prefix, suffix, padding."""
    tok = model.tokenizer
    a, b = tok(old).input_ids, tok(new).input_ids
    length = model.tokenize([""]).shape[1]
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    ia = list(range(pre)) + list(range(len(a) - suf, len(a)))
    ib = list(range(pre)) + list(range(len(b) - suf, len(b)))
    pad = length - max(len(a), len(b))
    ia += list(range(len(a), len(a) + pad))
    ib += list(range(len(b), len(b) + pad))
    return ia, ib


def _region_data(model, target, prompts, cfg, pos):
    """(latents, region masks [N, 32, 32] or None) of the concept's images; may rewrite
    ``prompts`` to the captions of the world images it renders."""
    world = getattr(model, "world", None)
    has = world.split([target])[0] if world is not None and world.kind_of(target) else []
    renders = bool(has) and world.render(has[0], 0, 0) is not None
    mode = ("world" if renders else "attention") if cfg.regions == "auto" else cfg.regions
    if mode not in ("world", "attention", "none"):
        raise GenUnlearnError(f"mace regions must be auto, world, attention or none, not {mode!r}")
    if mode == "world":
        if not renders:
            raise GenUnlearnError(
                "mace regions='world' needs a target concept of a world that renders its own "
                "images (ToyCanvas); use regions='attention' otherwise"
            )
        labels = [has[(i * 7) % len(has)] for i in range(len(prompts))]
        prompts[:] = [world.caption(lab) for lab in labels]
        imgs, masks = zip(*(world.render(lab, 0, i) for i, lab in enumerate(labels)), strict=True)
        with torch.no_grad():
            z0 = model.encode_images(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) / 255)
        return z0, torch.from_numpy(np.stack(masks))
    with torch.no_grad():
        images = cached_sample(model, prompts, n=1, seed=0)
        z0 = model.encode_images(images)
        if mode == "none":
            return z0, None
        cond = model.encode_prompt(prompts)
        return z0, attention_regions(model, z0, cond, pos, tuple(images.shape[-2:]))


def _train_lora(model, z0, cond, pos, regions, cfg):
    """A rank-``cfg.rank`` K/V LoRA minimising the in-region concept attention; its B A."""
    lora = KVLoRA(model, cfg.rank, torch.Generator().manual_seed(torch.initial_seed() % 2**31))
    sched = model.scheduler
    n_t = sched.config.num_train_timesteps
    ts = torch.arange(n_t, dtype=torch.float64, device="cpu")  # drawn from with the CPU generator
    weights = torch.sigmoid(0.05 * (ts - 200)) - torch.sigmoid(0.05 * (ts - 400))
    store = AttentionStore()

    def loss_fn(step, g):
        idx = torch.randint(len(z0), (cfg.batch_size,), generator=g, device="cpu")
        noise = model.randn(z0[idx].shape, g)
        if cfg.importance_sampling:
            t = torch.multinomial(weights, len(idx), replacement=True, generator=g)
        else:
            t = torch.randint(0, n_t, (len(idx),), generator=g, device="cpu")
        store.clear()
        model.predict_noise(sched.add_noise(z0[idx], noise, t), t, cond[idx])
        reg = None if regions is None else regions[idx]
        return concept_attention_loss(store.all_probs(), pos[idx], reg)

    with patched_cross_attention(model, store, kv_delta=lora.kv_delta()):
        losses = finetune(lora.parameters(), loss_fn, cfg.steps, cfg.lr, progress=cfg.progress,
                          desc="mace lora")  # fmt: skip
    return lora.deltas(), losses


def _check(model, task, cfg) -> str | None:
    for name in ("n_prompts", "n_images", "batch_size", "steps"):
        if getattr(cfg, name) < 1:
            raise GenUnlearnError(f"mace {name} must be >= 1, got {getattr(cfg, name)}")
    d = min(min(layer.to_k.weight.shape) for layer in model.cross_attention_layers().values())
    if not 1 <= cfg.rank <= d:
        raise GenUnlearnError(f"mace rank must be in [1, {d}] for this model, got {cfg.rank}")
    mapping = cfg.mapping if cfg.mapping is not None else (task.anchor or "")
    if mapping.strip() in task.targets:
        raise GenUnlearnError(
            f"mace mapping concept {mapping!r} is one of the targets {list(task.targets)}; "
            "choose a different mapping (or '' to drop the word)"
        )
    clash = [r for r in task.retain or () if r in task.targets]
    if clash:
        raise GenUnlearnError(f"mace retain concepts {clash} are also targets; remove them")
    return mapping.strip()


def _preserve(model, task) -> tuple[list[str], torch.Tensor, str]:
    """(preserve prompts, their text states [rows, d] weighted for the closed forms, source).

    ``task.retain`` if given; else, on a world model, every caption the world can write without a
    target; else the built-in general captions, each row weighted by sqrt(COCO_CAPTIONS / their
    number) so that their sum stands for MACE's sum over all COCO captions. "" always.
    """
    world = getattr(model, "world", None)
    hit = set(task.targets)
    if task.retain is not None:
        keep, source = [_say(world, r) for r in task.retain], "retain"
    elif world is not None:
        # every caption the world can write that names no target
        keep = [world.caption(lab) for lab in world.combinations() if not set(lab.values()) & hit]
        source = "world captions"
    else:
        pats = [re.compile(rf"(?<![\w-]){re.escape(t.lower())}(?![\w-])") for t in hit]
        keep = [c for c in GENERAL_CAPTIONS if not any(p.search(c) for p in pats)]
        source = "general captions (COCO-scaled)"
    keep = list(dict.fromkeys(keep + [""]))
    with torch.no_grad():
        c_p = model.encode_prompt(keep)
    if source.startswith("general"):
        factor = (COCO_CAPTIONS / len(GENERAL_CAPTIONS)) ** 0.5
        weight = torch.tensor([factor if k else 1.0 for k in keep], device=c_p.device)
        c_p = c_p * weight[:, None, None].to(c_p)
    return keep, c_p.flatten(0, 1), source


@register_method(
    "mace",
    config=MACEConfig,
    requires=(Capability.CROSS_ATTENTION, Capability.TEXT_ENCODER, Capability.LATENT_VAE),
    presets={
        "paper": {},
        "toy": dict(
            steps=100,
            lr=1e-2,
            batch_size=4,
            n_images=16,
            lam=1.0,
            train_preserve_scale=0.1,
            fuse_preserve_scale=0.1,
        ),
        "smoke": dict(
            steps=2,
            lr=1e-2,
            batch_size=2,
            n_images=2,
            n_prompts=3,
            lam=1.0,
            train_preserve_scale=0.1,
            fuse_preserve_scale=0.1,
            progress=False,
        ),
    },  # fmt: skip
    paper="https://arxiv.org/abs/2403.06135",
    modifies=r"^unet\..*\.attn2\.to_[kv]\.weight$",
)
def erase(model, task, cfg: MACEConfig) -> ErasureResult:
    """CFR, per-concept attention LoRAs, closed-form fusion."""
    mapping = _check(model, task, cfg)
    layers = model.cross_attention_layers()
    projs = {(n, k): getattr(m, k) for n, m in layers.items() for k in ("to_k", "to_v")}
    # edited in place below, in float32 (also for a half-precision model): copies keep theirs
    own_storage((p.weight for p in projs.values()), torch.float32)
    w0 = {key: p.weight.detach().clone() for key, p in projs.items()}
    keep, c_p, source = _preserve(model, task)
    concepts = []
    for t in task.targets:  # the concept's images and regions come from the *base* model
        old, new, words = concept_pairs(model, t, mapping, cfg.n_prompts)
        prompts = [old[i % len(old)] for i in range(cfg.n_images)]
        pos = position_mask(model, prompts, [words] * len(prompts), cfg.use_pooler)
        z0, regions = _region_data(model, t, prompts, cfg, pos)
        pos = position_mask(model, prompts, [words] * len(prompts), cfg.use_pooler)
        concepts.append((t, old, new, (z0, prompts, pos, regions)))
    reports = []
    with torch.no_grad():
        rows_old, rows_new = [], []
        for _, old, new, _ in concepts:
            e_old, e_new = model.encode_prompt(old), model.encode_prompt(new)
            for i in range(len(old)):
                ia, ib = _aligned(model, old[i], new[i])
                rows_old.append(e_old[i, ia])
                rows_new.append(e_new[i, ib])
        c_old, c_new = torch.cat(rows_old), torch.cat(rows_new)
        for key, p in projs.items():  # stage 1: CFR
            w, rep = w0[key], {}
            p.weight.copy_(least_squares_edit(
                w, c_old, c_new @ w.T, c_p, cfg.lam, 1.0, cfg.train_preserve_scale, rep
            ))  # fmt: skip
            reports.append(rep)
    fuse_in, fuse_out, lora_losses = [], {key: [] for key in projs}, {}
    for t, old, _, (z0, prompts, pos, regions) in concepts:  # stage 2: LoRAs on the refined model
        with torch.no_grad():
            cond = model.encode_prompt(prompts)
        deltas, losses = _train_lora(model, z0, cond, pos, regions, cfg)
        lora_losses[t] = [losses[0], losses[-1]]
        with torch.no_grad():
            c_i = model.encode_prompt(old).flatten(0, 1)
            fuse_in.append(c_i)
            for key, p in projs.items():
                fuse_out[key].append(c_i @ (p.weight + deltas[key]).T)
    with torch.no_grad():  # stage 3: closed-form fusion, preserving the original outputs
        s = cfg.fuse_preserve_scale**0.5
        c_all = torch.cat(fuse_in + [s * c_p])
        for key, p in projs.items():
            v_all = torch.cat(fuse_out[key] + [s * c_p @ w0[key].T])
            rep = {}
            p.weight.copy_(
                least_squares_edit(p.weight, c_all, v_all, None, cfg.lam, 1.0, report=rep)
            )
            reports.append(rep)
    cond = max(r["condition"] for r in reports)
    return ErasureResult(
        info={
            "targets": list(task.targets),
            "mapping": mapping,
            "n_preserve_prompts": len(keep),
            "preserve_source": source,
            "closed_form": {
                "max_condition": cond if math.isfinite(cond) else None,  # None: singular
                "max_directions_kept": max(r["regularised"] for r in reports),
            },
            "lora_loss_first_last": lora_losses,
        }
    )
