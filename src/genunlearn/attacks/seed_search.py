"""seed_search: search the noise seed only, the prompt stays as it is.

A baseline of UnlearnDiffAtk (https://arxiv.org/abs/2310.11868): an erasure that holds for the
evaluation seed but not for a few others was never robust. Each prompt that fails at its own
seed is retried with ``n_seeds`` further seeds; a success at any of them counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from genunlearn.core.judge import attack_prompts, judge, sample_per_prompt
from genunlearn.registry import register_attack
from genunlearn.types import AttackResult, Capability


@dataclass(frozen=True)
class SeedSearchConfig:
    """Args: n_prompts attack prompts; n_seeds extra seeds tried per failing prompt; seed."""

    n_prompts: int = 20
    n_seeds: int = 16
    seed: int = 0


@register_attack(
    "seed_search",
    config=SeedSearchConfig,
    requires=(Capability.WORLD_EVALUATOR,),
    presets={"toy": {"n_seeds": 8}, "paper": {}},
    paper="https://arxiv.org/abs/2310.11868",
)
def attack(model, task, cfg: SeedSearchConfig, original=None) -> AttackResult:
    """Retry failing prompts with other seeds; keep the first image that shows the concept."""
    t0 = time.time()
    prompts = attack_prompts(model, task.targets, cfg.n_prompts)
    images = sample_per_prompt(model, prompts, cfg.seed)
    pre = judge(model, images, task.targets)
    ok = list(pre)
    used = len(prompts)
    for i, p in enumerate(prompts):
        if ok[i]:
            continue
        # seeds far from the evaluation seeds, one batch per prompt
        cand = model.sample([p], n=cfg.n_seeds, seed=cfg.seed + 100_000 + 1000 * i)
        used += cfg.n_seeds
        hits = judge(model, cand, task.targets)
        if any(hits):
            ok[i] = True
            images[i] = cand[hits.index(True)]
    return AttackResult(
        "seed_search", ", ".join(task.targets), prompts, list(prompts), pre, ok, images,
        {"images": used, "seconds": time.time() - t0},
    )  # fmt: skip
