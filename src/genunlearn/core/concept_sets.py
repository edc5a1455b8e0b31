"""Caption and image sets that data-based erasure methods train on.

Data-based methods (Concept Ablation, SalUn, Selective Amnesia, EraseDiff, DoCo, SafeGen, ...)
train on (image, caption) pairs that the *original* model generates:

- **forget** captions contain the target (UnlearnCanvas: the target theme's images);
- **relabel** (anchor) captions are the forget captions with the target swapped for another concept
  of the same kind (Concept Ablation's anchor, SalUn's pseudo label, Selective Amnesia's
  surrogate, EraseDiff's pseudo prompt), aligned position by position;
- **remain** captions contain no target (UnlearnCanvas' retain / replay images).

On a model with a labelled world, captions cover every label combination of the world (not only
the evaluation grid), spread evenly when more exist than asked for. For free text, the forget
prompt is the target itself, the relabel prompt is ``task.anchor`` (else the empty prompt), and
remain prompts are ``task.retain`` (else the relabel prompt). Images come from
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
        images: the generated images [N, 3, H, W] in [0, 1].
    """

    prompts: list[str]
    latents: torch.Tensor
    caption: torch.Tensor
    emb: torch.Tensor
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.latents)

    def recaptioned(self, model, prompts: list[str]) -> CaptionedLatents:
        """The same images paired position by position with other captions (a surrogate set)."""
        if len(prompts) != len(self.prompts):
            raise ValueError("recaptioning needs one new caption per caption")
        with torch.no_grad():
            emb = model.encode_prompt(list(prompts))
        return CaptionedLatents(list(prompts), self.latents, self.caption, emb, self.images)


def _world(model):
    return getattr(model, "world", None)


def is_world_concept(model, name: str) -> bool:
    """True when ``name`` is a concept of the model's world."""
    world = _world(model)
    return world is not None and world.kind_of(name) is not None


def relabel_concept(world, target: str, anchor: str | None = None, neutral: bool = False) -> str:
    """The concept a world target is relabelled to: ``anchor`` if given (same kind, not the
    target); else, with ``neutral``, the world's generic concept of that kind (``World.neutral``,
    if it has one and it is not the target); else the next concept of the target's kind in world
    order (SalUn's "next class")."""
    kind = world.concept(target).kind
    valid = ", ".join(c for c in world.heads[kind] if c != target)
    if anchor is not None:
        if world.kind_of(anchor) != kind:
            raise GenUnlearnError(
                f"anchor {anchor!r} must be of kind {kind!r} like the target {target!r}; "
                f"valid anchors: {valid}"
            )
        if anchor == target:
            raise GenUnlearnError(f"anchor and target are both {target!r}; pick one of {valid}")
        return anchor
    generic = (world.neutral or {}).get(kind) if neutral else None
    if generic is not None and generic != target:
        return generic
    names = world.heads[kind]
    if len(names) < 2:
        raise GenUnlearnError(f"the world has no other {kind} to relabel {target!r} to")
    return names[(names.index(target) + 1) % len(names)]


def _spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced over the list (deterministic)."""
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def caption_sets(
    model, task, max_prompts: int = 400, neutral: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """(forget captions, relabel captions aligned with them, remain captions).

    Args:
        model: the adapter (its ``world``, if any, supplies the captions).
        task: the erasure task (``anchor`` picks the relabel concept, ``retain`` the remain set:
            world concepts select the captions that contain them, free text is used as given).
        max_prompts: at most this many forget and remain captions each.
        neutral: relabel to the world's generic concept of the kind when there is one
            (:func:`relabel_concept`).
    """
    world = _world(model)
    targets = list(task.targets)
    if world is None or not all(world.kind_of(t) for t in targets):
        relabel = task.anchor or ""
        remain = list(task.retain) if task.retain else [relabel]
        return targets, [relabel] * len(targets), remain
    swap = {t: relabel_concept(world, t, task.anchor, neutral) for t in targets}
    kinds = list(world.heads)
    labels = [dict(zip(kinds, c, strict=True)) for c in product(*world.heads.values())]
    has = [lab for lab in labels if any(v in targets for v in lab.values())]
    without = [lab for lab in labels if not any(v in targets for v in lab.values())]
    free: list[str] = []
    if task.retain:
        keep = {r for r in task.retain if world.kind_of(r)}
        free = [r for r in task.retain if not world.kind_of(r)]
        without = [lab for lab in without if keep & set(lab.values())] if keep else []
    has = _spread(has, max_prompts)
    forget = [world.caption(lab) for lab in has]
    relabel = [world.caption({k: swap.get(v, v) for k, v in lab.items()}) for lab in has]
    remain = [world.caption(lab) for lab in _spread(without, max_prompts)] + free
    return forget, relabel, remain


def anchor_pairs(model, task, method: str, max_prompts: int = 400):
    """(anchor captions, target captions, anchor name) for a one-target method.

    A world target keeps each of its captions and swaps the target for the anchor
    (``task.anchor``, default :func:`relabel_concept`), which must be of the same kind. A
    free-text target needs ``task.anchor`` and pairs the two texts.
    """
    if len(task.targets) != 1:
        raise GenUnlearnError(f"{method} erases one target at a time (got {list(task.targets)})")
    target = task.targets[0]
    if not is_world_concept(model, target):
        if not task.anchor:
            raise GenUnlearnError(
                f"{method} needs task.anchor (the alternative concept) for the free-text target "
                f"{target!r}, e.g. ErasureTask({target!r}, anchor='a photo')"
            )
        return [task.anchor], [target], task.anchor
    forget, relabel, _ = caption_sets(model, task, max_prompts)
    return relabel, forget, relabel_concept(_world(model), target, task.anchor)


@torch.no_grad()
def generate_latents(model, prompts: list[str], n_images: int, seed: int = 0) -> CaptionedLatents:
    """About ``n_images`` images of the (unmodified) model spread over ``prompts``, as latents.

    Every prompt gets ``ceil(n_images / len(prompts))`` images, or, when there are more prompts
    than images, an even subset of the prompts gets one each. ``caption`` indexes ``prompts``
    (all of them, in order), so lists aligned with ``prompts`` index the same way.
    """
    if n_images < 1 or not prompts:
        raise GenUnlearnError(f"need at least one image and one prompt, got {n_images} images")
    use = _spread(list(range(len(prompts))), n_images)
    per = max(1, math.ceil(n_images / len(use)))
    images = cached_sample(model, [prompts[i] for i in use], n=per, seed=seed)
    z = torch.cat([model.encode_images(images[i : i + 64]) for i in range(0, len(images), 64)])
    caption = torch.tensor(use, device="cpu").repeat_interleave(per)  # CPU: indexes any device
    return CaptionedLatents(list(prompts), z, caption, model.encode_prompt(list(prompts)), images)


def recaption(model, data: CaptionedLatents, source: list[str], captions: list[str]):
    """``data`` (generated from ``source`` prompts) captioned with the aligned ``captions``."""
    if len(source) != len(captions):
        raise ValueError("source prompts and captions must be aligned")
    pick = {p: i for i, p in enumerate(source)}
    return data.recaptioned(model, [captions[pick[p]] for p in data.prompts])


def draw(data: CaptionedLatents, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """Indices of a random batch (with replacement)."""
    return torch.randint(len(data), (batch_size,), generator=g, device="cpu")


def noised(model, z0: torch.Tensor, g: torch.Generator):
    """(x_t, noise, t): the forward process at uniformly drawn training timesteps."""
    sched = model.scheduler
    noise = model.randn(z0.shape, g)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=g, device="cpu")
    return sched.add_noise(z0, noise, t), noise, t


def denoising_loss(model, data: CaptionedLatents, idx: torch.Tensor, g: torch.Generator):
    """The standard epsilon-prediction loss of the batch ``idx`` with its captions."""
    x_t, noise, t = noised(model, data.latents[idx], g)
    return F.mse_loss(model.predict_noise(x_t, t, data.emb[data.caption[idx]]), noise)
