"""negative_prompt: erase at inference time by using the concept as the negative prompt.

Classifier-free guidance (Ho & Salimans, https://arxiv.org/abs/2207.12598) extrapolates from the
unconditional prediction towards the prompt; replacing the empty unconditional prompt with the
concept's text steers every generation away from it. This is the "SD-NEGP" baseline of P4D and
the negative-prompt baseline of ESD (https://arxiv.org/abs/2303.07345). No weight changes: the
artifact is empty and the run stores the negative prompt as inference state.

On toy-sd a negative prompt does not erase a concept that the prompt names explicitly; it is a
baseline for implicit prompts. Figures: docs/results.md#negative_prompt
"""

from __future__ import annotations

from dataclasses import dataclass

from genunlearn.registry import register_method
from genunlearn.types import ErasureResult


@dataclass(frozen=True)
class NegativePromptConfig:
    """Args:
    text: the negative prompt; None joins the targets' prompt texts with ", ".
    """

    text: str | None = None


@register_method(
    "negative_prompt",
    config=NegativePromptConfig,
    presets={"toy": {}, "paper": {}, "smoke": {}},
    paper="https://arxiv.org/abs/2207.12598",
)
def erase(model, task, cfg: NegativePromptConfig) -> ErasureResult:
    """Install the concept's text as the model's negative prompt."""
    world = getattr(model, "world", None)
    text = cfg.text or ", ".join(world.text(t) if world else t for t in task.targets)
    model.apply_inference({"negative_prompt": text})
    return ErasureResult(inference={"negative_prompt": text})
