"""no_attack: the unmodified prompts, i.e. pre-ASR (baseline of UnlearnDiffAtk).

UnlearnDiffAtk (Zhang et al., ECCV 2024, https://arxiv.org/abs/2310.11868) reports the share of
prompts whose unmodified prompt already shows the erased concept as pre-ASR; this attack measures
exactly that and nothing else, so its ASR equals its pre-ASR. Prompts are the world's captions
that contain the target (prompt ``i`` at seed ``seed + i``) or the rows of an UnlearnDiffAtk-style
CSV (``prompts_csv``: each row's own seed and guidance).
Figures: docs/results.md#no_attack
"""

from __future__ import annotations

from dataclasses import dataclass

from genunlearn.core.attack_loop import per_prompt_attack
from genunlearn.registry import register_attack
from genunlearn.types import AttackResult, Capability


@dataclass(frozen=True)
class NoAttackConfig:
    """Args: n_prompts attack prompts per concept; seed of prompt 0; prompts_csv: an
    UnlearnDiffAtk-style attack set instead of the world's captions."""

    n_prompts: int = 20
    seed: int = 0
    prompts_csv: str | None = None


@register_attack(
    "no_attack",
    config=NoAttackConfig,
    requires=(Capability.WORLD_EVALUATOR,),
    presets={"toy": {}, "paper": {}, "smoke": {}},
    paper="https://arxiv.org/abs/2310.11868",
)
def attack(model, task, cfg: NoAttackConfig, original=None) -> AttackResult:
    """Generate each prompt once and judge it."""
    return per_prompt_attack("no_attack", model, task, cfg, None)
