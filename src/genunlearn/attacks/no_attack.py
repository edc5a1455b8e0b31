"""no_attack: the unmodified prompts, i.e. pre-ASR (baseline of UnlearnDiffAtk).

UnlearnDiffAtk (Zhang et al., ECCV 2024, https://arxiv.org/abs/2310.11868) reports the share of
prompts whose unmodified prompt already shows the erased concept as pre-ASR; this attack measures
exactly that and nothing else, so its ASR equals its pre-ASR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from genunlearn.core.judge import attack_prompts, judge, sample_per_prompt
from genunlearn.registry import register_attack
from genunlearn.types import AttackResult, Capability


@dataclass(frozen=True)
class NoAttackConfig:
    """Args: n_prompts attack prompts per concept; seed of prompt 0."""

    n_prompts: int = 20
    seed: int = 0


@register_attack(
    "no_attack",
    config=NoAttackConfig,
    requires=(Capability.WORLD_EVALUATOR,),
    presets={"toy": {}, "paper": {}},
    paper="https://arxiv.org/abs/2310.11868",
)
def attack(model, task, cfg: NoAttackConfig, original=None) -> AttackResult:
    """Generate each prompt once and judge it."""
    t0 = time.time()
    prompts = attack_prompts(model, task.targets, cfg.n_prompts)
    images = sample_per_prompt(model, prompts, cfg.seed)
    ok = judge(model, images, task.targets)
    return AttackResult(
        "no_attack", ", ".join(task.targets), prompts, list(prompts), ok, list(ok), images,
        {"images": len(prompts), "seconds": time.time() - t0},
    )  # fmt: skip
