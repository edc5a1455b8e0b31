"""Forget / relabel / remain sets for data-based unlearning (SalUn, Selective Amnesia, EraseDiff, ...).

Data-based methods train on (image, caption) pairs that the *original* model generates:

- **forget** captions contain the target (UnlearnCanvas: the target theme's images);
- **relabel** captions are the forget captions with the target swapped for another concept of
  the same kind (SalUn's pseudo label, Selective Amnesia's surrogate, EraseDiff's pseudo prompt);
- **remain** captions contain no target (UnlearnCanvas' retain / replay images).

On a model with a labelled world, captions cover every label combination of the world (not only
the evaluation grid), spread evenly when more exist than images are asked for. For free text, the
forget prompt is the target itself, the relabel prompt is ``task.anchor`` (else the empty prompt),
and remain prompts are ``task.retain`` (else the relabel prompt). Images come from
``core.cache.cached_sample`` (the base model's images, generated once per machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import torch
from torch.nn import functional as F

from genunlearn.core.cache import cached_sample
from genunlearn.types import GenUnlearnError


@dataclass
class CaptionedLatents:
    """Training pairs: VAE latents of generated images and the caption each is trained with.

    Attributes:
        prompts: the distinct captions.
        latents: scaled VAE latents [N, C, H, W] of the images.
        caption: [N] index into ``prompts`` of each latent's caption.
        emb: text embeddings of ``prompts`` [P, L, D] (no gradient).
    """

    prompts: list[str]
    latents: torch.Tensor
    caption: torch.Tensor
    emb: torch.Tensor

    def __len__(self) -> int:
        return len(self.latents)

    def recaptioned(self, model, prompts: list[str]) -> CaptionedLatents:
        """The same images paired position by position with other captions (a surrogate set)."""
        if len(prompts) != len(self.prompts):
            raise ValueError("recaptioning needs one new caption per caption")
        with torch.no_grad():
            emb = model.encode_prompt(list(prompts))
        return CaptionedLatents(list(prompts), self.latents, self.caption, emb)


def relabel_concept(world, target: str, anchor: str | None = None) -> str:
    """The concept a world target is relabelled to: ``anchor`` if given (same kind), else the
    next concept of the target's kind in world order (SalUn's "next class")."""
    kind = world.concept(target).kind
    if anchor is not None:
        if world.kind_of(anchor) != kind:
            raise GenUnlearnError(
                f"anchor {anchor!r} must be of kind {kind!r} like the target {target!r}; "
                f"valid: {', '.join(c for c in world.heads[kind] if c != target)}"
            )
        return anchor
    names = world.heads[kind]
    if len(names) < 2:
        raise GenUnlearnError(f"the world has no other {kind} to relabel {target!r} to")
    return names[(names.index(target) + 1) % len(names)]


def _is_world_task(world, targets) -> bool:
    return world is not None and all(world.kind_of(t) for t in targets)


def _spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced over the list (deterministic)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def caption_sets(model, task, max_prompts: int = 400) -> tuple[list[str], list[str], list[str]]:
    """(forget captions, relabel captions aligned with them, remain captions).

    Args:
        model: the adapter (its ``world``, if any, supplies the captions).
        task: the erasure task (``anchor`` picks the relabel concept, ``retain`` the remain set).
        max_prompts: at most this many forget and remain captions each.
    """
    world = getattr(model, "world", None)
    targets = list(task.targets)
    if not _is_world_task(world, targets):
        relabel = task.anchor or ""
        remain = list(task.retain) if task.retain else [relabel]
        return targets, [relabel] * len(targets), remain
    swap = {t: relabel_concept(world, t, task.anchor) for t in targets}
    kinds = list(world.heads)
    labels = [dict(zip(kinds, c, strict=True)) for c in product(*world.heads.values())]
    has = [lab for lab in labels if any(v in targets for v in lab.values())]
    without = [lab for lab in labels if not any(v in targets for v in lab.values())]
    if task.retain:
        keep = set(task.retain)
        without = [lab for lab in without if keep & set(lab.values())] or without
    has = _spread(has, max_prompts)
    forget = [world.caption(lab) for lab in has]
    relabel = [world.caption({k: swap.get(v, v) for k, v in lab.items()}) for lab in has]
    remain = [world.caption(lab) for lab in _spread(without, max_prompts)]
    return forget, relabel, remain


@torch.no_grad()
def generate_latents(model, prompts: list[str], n_images: int, seed: int = 0) -> CaptionedLatents:
    """About ``n_images`` images of the (unmodified) model spread over ``prompts``, as latents.

    Every prompt gets ``ceil(n_images / len(prompts))`` images, or, when there are more prompts
    than images, an even subset of the prompts gets one each.
    """
    if n_images < 1 or not prompts:
        raise GenUnlearnError(f"need at least one image and one prompt, got {n_images} images")
    use = _spread(list(prompts), n_images)
    per = max(1, math.ceil(n_images / len(use)))
    images = cached_sample(model, use, n=per, seed=seed)
    z = torch.cat([model.encode_images(images[i : i + 64]) for i in range(0, len(images), 64)])
    caption = torch.arange(len(use)).repeat_interleave(per)
    return CaptionedLatents(use, z, caption, model.encode_prompt(use))


def recaption(model, data: CaptionedLatents, source: list[str], captions: list[str]):
    """``data`` (generated from ``source`` prompts) captioned with the aligned ``captions``."""
    if len(source) != len(captions):
        raise ValueError("source prompts and captions must be aligned")
    pick = {p: i for i, p in enumerate(source)}
    return data.recaptioned(model, [captions[pick[p]] for p in data.prompts])


def draw(data: CaptionedLatents, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """Indices of a random batch (with replacement)."""
    return torch.randint(len(data), (batch_size,), generator=g)


def noised(model, z0: torch.Tensor, g: torch.Generator):
    """(x_t, noise, t): the forward process at uniformly drawn training timesteps."""
    sched = model.scheduler
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=g)
    return sched.add_noise(z0, noise, t), noise, t


def denoising_loss(model, data: CaptionedLatents, idx: torch.Tensor, g: torch.Generator):
    """The standard epsilon-prediction loss of the batch ``idx`` with its captions."""
    x_t, noise, t = noised(model, data.latents[idx], g)
    return F.mse_loss(model.predict_noise(x_t, t, data.emb[data.caption[idx]]), noise)
