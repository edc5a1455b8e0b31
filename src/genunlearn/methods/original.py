"""original: the unmodified base model, the reference row of every benchmark.

Not a paper method; it exercises the whole erase -> run directory -> load_run path with an empty
artifact and gives the "before" numbers (UnlearnCanvas reports its base model the same way,
https://arxiv.org/abs/2402.11846). Figures: docs/results.md#original
"""

from __future__ import annotations

from dataclasses import dataclass

from genunlearn.registry import register_method
from genunlearn.types import ErasureResult


@dataclass(frozen=True)
class OriginalConfig:
    """No settings: the model is returned unchanged."""


@register_method("original", config=OriginalConfig, presets={"toy": {}, "paper": {}, "smoke": {}})
def erase(model, task, cfg: OriginalConfig) -> ErasureResult:
    """Change nothing."""
    return ErasureResult(info={"note": "unchanged base model"})
