"""ring_a_bell: Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models?
(Tsai, Hsu, Xie, Lin, Chen, Hsu, Yu, Chen, Lin, Hsu; ICLR 2024).

Paper: https://arxiv.org/abs/2310.10012 — official code: github.com/chiayi-hsu/Ring-A-Bell
(``Get_Concept_Vector.ipynb``, ``InversePrompt.ipynb``).

Idea: model-agnostic. Only the *original* text encoder E is used; the erased model is queried
just to judge the final prompts. (1) A concept vector is the mean, over prompt pairs that differ
only in the concept, of the difference of their full text-encoder hidden states (L x D, not
pooled): c = mean_i [E(p_i with concept) - E(p_i without)]. (2) For an attack prompt p the target
is E(p) + eta c. (3) A genetic algorithm searches K discrete tokens whose encoding is closest to
the target (squared L2 over all positions): population 200, the best half kept each generation,
single-point crossover with probability 0.5, one-token mutation with probability 0.25, 3,000
generations (``core.adversary.genetic_search``). The decoded K tokens are the adversarial prompt.

Pairs on a world model: every world caption containing the target, paired with the same caption
in which the target is replaced by another concept of its kind (cycling through them) — the
analogue of the paper's nudity / clothed prompt pairs. Symbols: c -> ``concept_vector``, eta ->
``eta``, K -> ``k_tokens``.

Differences from the official code: candidate tokens are the whole-word vocabulary that
re-tokenizes exactly (the notebook draws ids 1..49405), so the decoded prompt reproduces the
searched one; pairs come from the world's captions instead of templated nudity/violence prompts;
the soft (continuous, no GA) variant used by RECE/SAFREE is not this attack.

On toy-sd the attack does not raise ASR above pre-ASR: the prompts are K tokens only (the
paper's design), and most tokens toy-sd's tokenizer can decode have untrained embeddings (its text
encoder saw ToyCanvas captions only), so the searched prompts draw no recognisable object or
style; restricted to the words toy-sd has learnt (``vocabulary="world"``, not in the paper) the
search converges on the erased word itself, exactly what the erasure removed. On SD, where every
token is trained, the same search finds meaningful substitutes; on toy-sd the attack is reported
as ineffective rather than changed. Figures and investigation: docs/results.md#ring_a_bell
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
class RingABellConfig:
    """Ring-A-Bell settings (paper defaults).

    Args:
        n_prompts: attack prompts per concept.
        k_tokens: adversarial prompt length K (16 in the notebook; 38 and 75 in the paper).
        eta: strength of the concept vector added to the prompt's encoding.
        population: genetic-algorithm population size.
        generations: genetic-algorithm generations.
        crossover: single-point crossover probability.
        mutation: one-token mutation probability.
        vocabulary: the tokens the genetic search draws from: "words" (every whole-word token of
            the tokenizer, as the paper searches CLIP's vocabulary) or "world" (only the words
            of the model's world, ``core.adversary.world_tokens``; a testbed's text encoder has
            learnt nothing else).
        seed: evaluation seed of prompt 0 (prompt i uses seed + i) and search randomness.
        progress: show a progress bar.
        prompts_csv: an UnlearnDiffAtk-style attack set (prompt, seed, guidance, optional target
            image) to attack instead of the world's captions (``core.attack_loop.prompt_cases``).
    """

    n_prompts: int = 20
    k_tokens: int = 16
    eta: float = 3.0
    population: int = 200
    generations: int = 3000
    crossover: float = 0.5
    mutation: float = 0.25
    vocabulary: str = "words"
    seed: int = 0
    progress: bool = True
    prompts_csv: str | None = None


VOCABULARIES = {"words": adv.word_tokens, "world": adv.world_tokens}


def concept_pairs(world, target: str) -> list[tuple[str, str]]:
    """(caption with the target, same caption with another concept of its kind)."""
    kind = world.kind_of(target)
    if kind is None:
        raise GenUnlearnError(f"ring_a_bell needs a concept of the model's world, got {target!r}")
    others = [c for c in world.heads[kind] if c != target]
    has, _ = world.split([target])
    return [
        (world.caption(lab), world.caption({**lab, kind: others[j % len(others)]}))
        for j, lab in enumerate(has)
    ]


@torch.no_grad()
def concept_vector(encode, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Mean of E(with) - E(without) over the pairs: a full [L, D] hidden-state offset."""
    with_c = encode([a for a, _ in pairs])
    without = encode([b for _, b in pairs])
    return (with_c - without).mean(0)


@register_attack(
    "ring_a_bell",
    config=RingABellConfig,
    requires=(Capability.WORLD_EVALUATOR,),
    presets={
        "paper": {},
        "toy": {"population": 100, "generations": 150},
        "smoke": {"k_tokens": 4, "population": 6, "generations": 3, "progress": False},
    },
    paper="https://arxiv.org/abs/2310.10012",
)
def attack(model, task, cfg: RingABellConfig, original=None):
    """Genetic search per failing prompt towards E(prompt) + eta * concept vector."""
    if cfg.population < 2 or cfg.k_tokens < 1:
        raise GenUnlearnError("population must be >= 2 and k_tokens >= 1")
    original = loop.original_model(model, original)
    if Capability.TEXT_ENCODER not in original.capabilities:
        raise GenUnlearnError("ring_a_bell needs the original model's text_encoder")
    pairs = [p for t in task.targets for p in concept_pairs(model.world, t)]
    c = concept_vector(original.encode_prompt, pairs)
    if cfg.vocabulary not in VOCABULARIES:
        raise GenUnlearnError(
            f"ring_a_bell vocabulary must be one of {', '.join(VOCABULARIES)}, got {cfg.vocabulary!r}"
        )
    cand = VOCABULARIES[cfg.vocabulary](original)
    adv.pack_ids(original, [0] * cfg.k_tokens)  # a clear error if K does not fit

    @torch.no_grad()
    def attack_one(i: int, case):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        goal = original.encode_prompt([case.prompt])[0] + cfg.eta * c

        def fitness(pop: torch.Tensor) -> torch.Tensor:
            ids = adv.pack_ids(original, pop)
            return ((original.text_encoder(ids)[0] - goal) ** 2).sum((1, 2))

        pick = torch.randint(len(cand), (cfg.population, cfg.k_tokens), generator=g, device="cpu")
        init = cand[pick]
        best, _ = adv.genetic_search(
            fitness, init, cand, cfg.generations, g, cfg.crossover, cfg.mutation
        )
        text = adv.decode(original, best)
        image = loop.render(model, text, case)
        return text, image[0], judge(model, image, task.targets)[0]

    return loop.per_prompt_attack(
        "ring_a_bell", model, task, cfg, attack_one, progress=cfg.progress
    )
