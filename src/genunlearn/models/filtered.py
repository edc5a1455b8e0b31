"""Output filters: inference-time wrappers that judge each generated image and block it.

A filter changes no weight of the text-to-image model. It is installed in the adapter's
``output_filters`` list; :meth:`SDAdapter.sample` passes every batch of finished images through
the filters, replaces blocked images by a black image and records which ones were blocked in
``model.last_blocked`` (a bool tensor [N], None when the model has no filter), so that metrics can
count them (``metrics/concept_accuracy.py`` scores a blocked image as showing no concept at all).

The first filter is Espresso's (``methods/espresso.py``): a CLIP whose text tower was fine-tuned so
that the unacceptable concept's text and the acceptable concept's text are far apart; an image is
blocked when its CLIP embedding is closer (cosine) to an unacceptable text than to the acceptable
one. It travels as an add-on of kind ``"espresso"``: the fine-tuned CLIP tensors plus
``meta = {"clip": base CLIP name or directory, "unacceptable": [...], "acceptable": "..."}``.
"""

from __future__ import annotations

import torch

from genunlearn.types import AddOn, GenUnlearnError

BLOCKED = "<blocked>"  # the label metrics give to a blocked image, for every head


class ClipConceptFilter:
    """Block images that CLIP places closer to an unacceptable text than to the acceptable one.

    Args:
        clip: a loaded :class:`~genunlearn.models.toy_clip.Clip` (its weights are not changed).
        unacceptable: the texts of the concepts to block.
        acceptable: the text of the acceptable concept they are compared with.
    """

    def __init__(self, clip, unacceptable: list[str], acceptable: str):
        if not unacceptable:
            raise GenUnlearnError("a CLIP concept filter needs at least one unacceptable text")
        self.clip = clip
        self.unacceptable = list(unacceptable)
        self.acceptable = acceptable
        with torch.no_grad():
            # texts are fixed, so their embeddings are computed once
            self.texts = clip.encode_texts([*self.unacceptable, acceptable])

    @torch.no_grad()
    def margin(self, images: torch.Tensor) -> torch.Tensor:
        """max_u cos(image, u) - cos(image, acceptable) per image [N]; > 0 means blocked."""
        sim = self.clip.encode_images(images.float()) @ self.texts.T
        return sim[:, :-1].amax(-1) - sim[:, -1]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images with the blocked ones replaced by black, bool mask of the blocked ones)."""
        blocked = self.margin(images) > 0
        out = images.clone()
        out[blocked] = 0.0
        return out, blocked


def apply_filters(filters, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``images`` through every filter in turn; returns (images, blocked by any filter)."""
    blocked = torch.zeros(len(images), dtype=torch.bool)
    for f in filters:
        images, b = f(images)
        blocked |= b
    return images, blocked


def clip_delta(clip, reference) -> dict[str, torch.Tensor]:
    """The CLIP tensors of ``clip`` that differ from ``reference`` (same architecture)."""
    ref = reference.model.state_dict()
    return {
        k: v.detach().clone().contiguous()
        for k, v in clip.model.state_dict().items()
        if not torch.equal(v, ref[k])
    }


def espresso_filter(addon: AddOn) -> ClipConceptFilter:
    """Rebuild an Espresso filter from its add-on: base CLIP + saved tensors."""
    from genunlearn.models.toy_clip import load_clip

    meta = addon.meta
    missing = [k for k in ("clip", "unacceptable", "acceptable") if k not in meta]
    if missing:
        raise GenUnlearnError(f"espresso add-on lacks {missing}; it needs clip, unacceptable, "
                              "acceptable")  # fmt: skip
    clip = load_clip(meta["clip"])  # a fresh instance: its weights are overwritten below
    state = clip.model.state_dict()
    unknown = sorted(set(addon.tensors) - set(state))
    if unknown:
        raise GenUnlearnError(
            f"espresso add-on names CLIP tensors that {meta['clip']} lacks: {unknown[:3]}"
        )
    with torch.no_grad():
        for k, v in addon.tensors.items():
            if state[k].shape != v.shape:
                raise GenUnlearnError(
                    f"espresso add-on tensor {k} has shape {tuple(v.shape)}, CLIP {meta['clip']} "
                    f"has {tuple(state[k].shape)}"
                )
            state[k].copy_(v.to(state[k].dtype))
    return ClipConceptFilter(clip, list(meta["unacceptable"]), meta["acceptable"])


def attach(model, addon: AddOn) -> None:
    """Install the add-on's filter on ``model`` (in place; no weight of ``model`` changes)."""
    if addon.kind != "espresso":
        raise GenUnlearnError(f"unknown filter kind {addon.kind!r}; supported: espresso")
    if not hasattr(model, "output_filters"):
        raise GenUnlearnError(
            f"model {getattr(model, 'model_id', model)!r} cannot carry output filters"
        )
    model.output_filters.append(espresso_filter(addon))
