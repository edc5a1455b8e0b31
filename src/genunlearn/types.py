"""The vocabulary shared by every layer: concepts, tasks, capabilities, needs, results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class GenUnlearnError(Exception):
    """A user-facing error: the message says what was wrong and what would be right."""


class Capability(enum.StrEnum):
    """What a model adapter offers; methods list the ones they require."""

    CROSS_ATTENTION = "cross_attention"
    TRAINABLE_DENOISER = "trainable_denoiser"
    TEXT_ENCODER = "text_encoder"
    LATENT_VAE = "latent_vae"
    WORLD_EVALUATOR = "world_evaluator"


class Needs(enum.StrEnum):
    """Data a method needs beyond the model and the target text."""

    FORGET_IMAGES = "forget_images"
    RETAIN_PROMPTS = "retain_prompts"
    ANCHOR = "anchor"
    # the target is an implicit concept found in images by a detector (Geom-Erasing): its text
    # is a label only, so it is not checked against the world or the tokenizer
    DETECTOR = "detector"


@dataclass(frozen=True)
class Concept:
    """A named concept of a model's world (``kind`` is e.g. "object", "style", "colour")."""

    name: str
    kind: str


@dataclass(frozen=True)
class ErasureTask:
    """What to erase.

    Args:
        target: a concept name of the model's world ("star"), several of them, or free text.
        anchor: the concept the target is mapped to by methods that need one (None: the method's
            default, usually the empty prompt or a same-kind neighbour).
        retain: prompts or concept names to preserve (None: the world's retain split).
    """

    target: str | tuple[str, ...]
    anchor: str | None = None
    retain: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))
        if isinstance(self.retain, str):
            object.__setattr__(self, "retain", (self.retain,))
        elif isinstance(self.retain, list):
            object.__setattr__(self, "retain", tuple(self.retain))
        if not self.targets or any(not isinstance(t, str) or not t.strip() for t in self.targets):
            raise GenUnlearnError(f"ErasureTask.target must be non-empty text, got {self.target!r}")
        if self.anchor is not None and (
            not isinstance(self.anchor, str) or not self.anchor.strip()
        ):
            raise GenUnlearnError(
                f"ErasureTask.anchor must be non-empty text or None, got {self.anchor!r}"
            )
        if self.retain is not None and any(
            not isinstance(r, str) or not r.strip() for r in self.retain
        ):
            raise GenUnlearnError(
                f"ErasureTask.retain must be non-empty texts, got {self.retain!r}"
            )

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets as a tuple (one element for a single concept)."""
        return self.target if isinstance(self.target, tuple) else (self.target,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": list(self.targets) if isinstance(self.target, tuple) else self.target,
            "anchor": self.anchor,
            "retain": list(self.retain) if self.retain is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErasureTask:
        return cls(d["target"], d.get("anchor"), d.get("retain"))


@dataclass
class AddOn:
    """A detachable module that leaves the base weights untouched (e.g. an SPM adapter).

    Attributes:
        kind: what it is ("spm"); the model adapter knows how to attach each kind.
        tensors: its weights by name (saved as their own small safetensors file).
        meta: JSON-friendly settings needed to attach it (rank, alpha, erased prompts, ...).
    """

    kind: str
    tensors: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ErasureResult:
    """What a method returns; every field is saved in the run directory.

    Attributes:
        changed: parameter name (``unet.…``, ``text_encoder.…``) -> its new value; only tensors the
            method changed.
        inference: state of an inference-time wrapper (e.g. ``{"negative_prompt": "star"}``).
        info: free-form figures the method wants recorded (losses, masks' sizes, ...).
        addon: a detachable module the method attached to the model instead of (or besides)
            changing weights; saved as ``addon.safetensors`` in the run directory.
    """

    changed: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    addon: AddOn | None = None


@dataclass
class AttackResult:
    """Outcome of an attack with UnlearnDiffAtk's bookkeeping.

    ``pre_asr``: share of prompts whose unmodified prompt already shows the concept;
    ``asr``: (pre-attack successes + prompts that succeed only after the attack) / #prompts.
    """

    attack: str
    target: str
    prompts: list[str]
    adversarial_prompts: list[str]
    pre_success: list[bool]
    success: list[bool]
    images: Any = None  # float tensor [N, 3, H, W] of the final attempt per prompt
    cost: dict[str, float] = field(default_factory=dict)
    # what replays the attack beyond the prompt text, e.g. a soft token's embedding
    artifact: dict[str, Any] = field(default_factory=dict)

    @property
    def pre_asr(self) -> float:
        return sum(self.pre_success) / max(1, len(self.pre_success))

    @property
    def asr(self) -> float:
        both = [a or b for a, b in zip(self.pre_success, self.success, strict=True)]
        return sum(both) / max(1, len(both))

    def summary(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "target": self.target,
            "pre_asr": self.pre_asr,
            "asr": self.asr,
            "n_prompts": len(self.prompts),
            **{f"cost_{k}": v for k, v in self.cost.items()},
        }
