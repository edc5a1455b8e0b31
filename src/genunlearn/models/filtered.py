"""Output filters: inference-time wrappers that judge each generated image and block it.

A filter changes no weight of the text-to-image model. It is installed in the adapter's
``output_filters`` list; :meth:`SDAdapter.sample` passes every batch of finished images through
the filters, replaces blocked images by a black image and records which ones were blocked in
``model.last_blocked`` (a bool tensor [N], None when the model has no filter), so that metrics can
count them (``metrics/concept_accuracy.py`` scores a blocked image as showing no concept at all).

A filter is any callable ``images -> (images, blocked bool [N])``; a method installs it (its
``install`` hook, see ``registry.register_method``). :class:`ClipConceptFilter` is the CLIP-based
one: an image is blocked when its CLIP embedding is closer (cosine) to an unacceptable text than
to the acceptable one (a method such as Espresso fine-tunes that CLIP first).
"""

from __future__ import annotations

import torch

from genunlearn.types import GenUnlearnError

BLOCKED = "<blocked>"  # the label metrics give to a blocked image, for every head


class ClipConceptFilter:
    """Block images that CLIP places closer to an unacceptable text than to the acceptable one.

    Args:
        clip: a loaded CLIP wrapper with ``encode_texts`` / ``encode_images`` (not changed).
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
        sim = self.clip.encode_images(images.float()) @ self.texts.T  # on CLIP's device
        return sim[:, :-1].amax(-1) - sim[:, -1]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images with the blocked ones replaced by black, bool mask of the blocked ones)."""
        blocked = (self.margin(images) > 0).to(images.device)
        out = images.clone()
        out[blocked] = 0.0
        return out, blocked


def apply_filters(filters, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``images`` through every filter in turn; returns (images, blocked by any filter)."""
    blocked = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for f in filters:
        images, b = f(images)
        blocked |= b.to(blocked.device)
    return images, blocked


def clip_delta(clip, reference) -> dict[str, torch.Tensor]:
    """The CLIP tensors of ``clip`` that differ from ``reference`` (same architecture)."""
    ref = reference.model.state_dict()
    return {
        k: v.detach().clone().contiguous()
        for k, v in clip.model.state_dict().items()
        if not torch.equal(v, ref[k])
    }
