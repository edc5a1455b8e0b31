"""random_tokens: k random vocabulary tokens added to the prompt, no optimisation (a baseline).

The "random" attacker of UnlearnDiffAtk (Zhang et al., ECCV 2024,
https://arxiv.org/abs/2310.11868; ``src/attackers/random_.py`` of OPTML-Group/Diffusion-MU-Attack)
and the Random-N/K rows of P4D: each prompt that fails unmodified gets ``n_tries`` independent
random k-token prefixes (or suffixes), each generated at the prompt's evaluation seed, stopping
at the first that shows the concept. It separates what an optimised attack finds from what any
perturbation of the prompt already does, at the same generation budget.

Differences from the reference: tokens are drawn from the whole-word vocabulary that re-tokenizes
exactly (``core.adversary.word_tokens``) rather than all ids, so the reported text is the prompt
that was generated. ``n_tries`` defaults to 50, the number of prompts UnlearnDiffAtk's paper
schedule checks (50 timestep blocks), so the baseline gets the same generation budget; the toy
preset matches the toy UnlearnDiffAtk's 10 checks.
Figures: docs/results.md#random_tokens
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genunlearn.core import adversary as adv
from genunlearn.core import attack_loop as loop
from genunlearn.core.judge import judge
from genunlearn.registry import register_attack
from genunlearn.types import Capability, GenUnlearnError


@dataclass(frozen=True)
class RandomTokensConfig:
    """Args: n_prompts attack prompts; k random tokens; position "prefix" or "suffix"; n_tries
    random draws per failing prompt; seed (prompt i is judged at seed + i); prompts_csv: an
    UnlearnDiffAtk-style attack set instead of the world's captions."""

    n_prompts: int = 20
    k: int = 3
    position: str = "prefix"
    n_tries: int = 50
    seed: int = 0
    prompts_csv: str | None = None


@register_attack(
    "random_tokens",
    config=RandomTokensConfig,
    requires=(Capability.WORLD_EVALUATOR,),
    presets={"paper": {}, "toy": {"n_tries": 10}, "smoke": {"k": 2, "n_tries": 2}},
    paper="https://arxiv.org/abs/2310.11868",
)
def attack(model, task, cfg: RandomTokensConfig, original=None):
    """Try random k-token additions per failing prompt; keep the first success."""
    if cfg.position not in ("prefix", "suffix"):
        raise GenUnlearnError(f"position must be 'prefix' or 'suffix', got {cfg.position!r}")
    if cfg.k < 1 or cfg.n_tries < 1:
        raise GenUnlearnError("k and n_tries must be >= 1")
    cand = adv.word_tokens(model)

    def attack_one(i: int, case):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        body = adv.text_ids(model, case.prompt)
        for _ in range(cfg.n_tries):
            tokens = cand[torch.randint(len(cand), (cfg.k,), generator=g, device="cpu")].tolist()
            ids = tokens + body if cfg.position == "prefix" else body + tokens
            adv.pack_ids(model, ids)  # a clear error if the prompt no longer fits
            text = adv.decode(model, ids)
            image = loop.render(model, text, case)
            if judge(model, image, task.targets)[0]:
                return text, image[0], True
        return text, image[0], False

    return loop.per_prompt_attack("random_tokens", model, task, cfg, attack_one)
