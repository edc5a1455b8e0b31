"""Attack prompt sets and success judging, shared by every attack.

On a model with a labelled world (toy-sd) the attack prompts of a concept are world captions that
contain it, and success means the world's evaluator labels the image as the target. Image ``i``
is generated with seed ``seed + i`` (each prompt has its own seed, as in UnlearnDiffAtk's CSVs).
"""

from __future__ import annotations

import torch

from genunlearn.types import GenUnlearnError


def attack_prompts(model, targets: tuple[str, ...], n: int) -> list[str]:
    """Up to ``n`` captions containing the target(s), spread evenly over the world's triples."""
    world = getattr(model, "world", None)
    if world is None:
        raise GenUnlearnError(
            f"model {model.model_id} has no labelled world: pass prompts to the attack explicitly"
        )
    from itertools import product

    for t in targets:
        world.concept(t)
    kinds = list(world.heads)
    label_sets = [dict(zip(kinds, c, strict=True)) for c in product(*world.heads.values())]
    hits = [lab for lab in label_sets if any(v in targets for v in lab.values())]
    if n < len(hits):
        step = len(hits) / n
        hits = [hits[int(i * step)] for i in range(n)]
    return [world.caption(lab) for lab in hits]


@torch.no_grad()
def judge(model, images: torch.Tensor, targets: tuple[str, ...]) -> list[bool]:
    """True where the evaluator labels the image as (any of) the target concept(s)."""
    world = model.world
    preds = model.evaluator.predict(images)
    kinds = {world.concept(t).kind for t in targets}
    return [any(preds[k][i] in targets for k in kinds) for i in range(len(images))]


def sample_per_prompt(model, prompts: list[str], seed: int, **kw) -> torch.Tensor:
    """One image per prompt, prompt ``i`` with seed ``seed + i``."""
    return torch.cat([model.sample([p], n=1, seed=seed + i, **kw) for i, p in enumerate(prompts)])
