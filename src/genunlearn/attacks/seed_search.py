"""seed_search: search the noise seed only, the prompt stays as it is.

A baseline of UnlearnDiffAtk (https://arxiv.org/abs/2310.11868): an erasure that holds for the
evaluation seed but not for a few others was never robust. Each prompt that fails at its own
seed is retried with ``n_seeds`` further seeds (one batch, seeds far from the evaluation seeds);
a success at any of them counts.
Figures: docs/results.md#seed_search
"""

from __future__ import annotations

from dataclasses import dataclass

from genunlearn.core.attack_loop import per_prompt_attack
from genunlearn.core.judge import judge
from genunlearn.registry import register_attack
from genunlearn.types import AttackResult, Capability


@dataclass(frozen=True)
class SeedSearchConfig:
    """Args: n_prompts attack prompts; n_seeds extra seeds tried per failing prompt; seed;
    prompts_csv: an UnlearnDiffAtk-style attack set instead of the world's captions."""

    n_prompts: int = 20
    n_seeds: int = 16
    seed: int = 0
    prompts_csv: str | None = None


@register_attack(
    "seed_search",
    config=SeedSearchConfig,
    requires=(Capability.WORLD_EVALUATOR,),
    presets={"toy": {"n_seeds": 8}, "paper": {}, "smoke": {"n_prompts": 2, "n_seeds": 2}},
    paper="https://arxiv.org/abs/2310.11868",
)
def attack(model, task, cfg: SeedSearchConfig, original=None) -> AttackResult:
    """Retry failing prompts with other seeds; keep the first image that shows the concept."""

    def attack_one(i: int, case):
        cand = model.sample(
            [case.prompt], n=cfg.n_seeds, seed=case.seed + 100_000 + 1000 * i,
            guidance=case.guidance,
        )  # fmt: skip
        hits = judge(model, cand, task.targets)
        j = hits.index(True) if any(hits) else len(hits) - 1
        return case.prompt, cand[j], hits[j]

    return per_prompt_attack("seed_search", model, task, cfg, attack_one)
