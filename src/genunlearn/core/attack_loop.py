"""The per-prompt attack loop shared by every attack: prompt cases, bookkeeping and cost.

- :func:`prompt_cases`: the prompts an attack works on, each with its own seed, guidance and
  (optionally) target image. By default the world's captions that contain the target (prompt
  ``i`` at seed ``cfg.seed + i``, the model's guidance, no stored image); with
  ``cfg.prompts_csv`` an UnlearnDiffAtk-style attack set (prompt, seed, guidance, target image;
  read by :func:`genunlearn.data.prompts.read_attack_csv`, which names missing columns and missing
  image files), limited to ``cfg.n_prompts`` rows.
- :func:`render` / :func:`target_image`: one generation of a case at its seed and guidance; the
  case's target image (the CSV's file, else the original model's generation of the prompt, cached).
- :func:`per_prompt_attack`: UnlearnDiffAtk's bookkeeping (judge every prompt as is, attack only
  those that fail; ASR counts both), with the cost in denoiser passes, wall and CPU seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from genunlearn.core.cache import cached_sample
from genunlearn.core.judge import attack_prompts, judge
from genunlearn.data.prompts import PromptRow, load_image, read_attack_csv
from genunlearn.types import AttackResult, GenUnlearnError


def prompt_cases(model, task, cfg, need_images: bool = False) -> list[PromptRow]:
    """The attack's prompts as rows with seed, guidance (None: the model's) and target image.

    Args:
        model: the attacked model (its world supplies the default prompts).
        task: the resolved erasure task.
        cfg: the attack's config (``n_prompts``, ``seed`` and optionally ``prompts_csv``).
        need_images: the attack optimises towards a target image, so a CSV must name one per row
            (UnlearnDiffAtk's format); otherwise an image column is optional.
    """
    path = getattr(cfg, "prompts_csv", None)
    if path:
        rows = read_attack_csv(path, limit=cfg.n_prompts, require_images=need_images)
        if not rows:
            raise GenUnlearnError(f"prompt CSV {path} has no rows")
        return rows
    prompts = attack_prompts(model, task.targets, cfg.n_prompts)
    return [PromptRow(p, seed=cfg.seed + i, guidance=None, case=i) for i, p in enumerate(prompts)]


def render(model, text: str, case: PromptRow) -> torch.Tensor:
    """One image [1, 3, H, W] of ``text`` at the case's seed and guidance."""
    return model.sample([text], n=1, seed=case.seed, guidance=case.guidance)


def target_image(original, case: PromptRow) -> torch.Tensor:
    """The case's target image [1, 3, H, W]: its CSV file (resized to the model's resolution),
    else the original model's generation of the prompt at the case's seed (cached)."""
    if case.image is not None:
        with torch.no_grad():  # the model's resolution: decode one latent
            size = original.decode(
                torch.zeros(1, *original.latent_shape, device=original.device)
            ).shape[-1]
        return load_image(case.image, int(size)).unsqueeze(0)
    return cached_sample(original, [case.prompt], n=1, seed=case.seed, guidance=case.guidance)


@contextlib.contextmanager
def count_calls(*modules: torch.nn.Module):
    """Counts forward calls of ``modules`` (denoiser passes); yields a one-element list."""
    n = [0]
    hs = [m.register_forward_pre_hook(lambda *_: n.__setitem__(0, n[0] + 1)) for m in modules]
    try:
        yield n
    finally:
        for h in hs:
            h.remove()


def original_model(model, original=None):
    """The unerased model: ``original`` if given, else the base model reloaded by id and hash."""
    if original is not None:
        return original
    from genunlearn.models import load_model

    base = load_model(model.model_id)
    if base.base_hash != model.base_hash:
        raise GenUnlearnError(f"this attack needs the original of {model.model_id}: pass original=")
    return base


def per_prompt_attack(
    name: str,
    model,
    task,
    cfg,
    attack_one: Callable[[int, PromptRow], tuple[str, torch.Tensor, bool]] | None,
    others=(),
    progress: bool = False,
    need_images: bool = False,
) -> AttackResult:
    """UnlearnDiffAtk's protocol: judge every prompt as is, attack only those that fail.

    ``attack_one(i, case) -> (adversarial prompt, image [3, H, W], success)``; case ``i`` is
    judged at its own seed before and after (``None``: no attack, i.e. pre-ASR only). Counts
    denoiser passes of ``model`` and ``others``.
    """
    t0, c0 = time.time(), time.process_time()
    cases = prompt_cases(model, task, cfg, need_images)
    prompts = [c.prompt for c in cases]
    nets = {id(m.denoiser): m.denoiser for m in (model, *others)}
    with count_calls(*nets.values()) as calls:
        images = torch.cat([render(model, c.prompt, c) for c in cases])
        pre = judge(model, images, task.targets)
        adv, ok = list(prompts), list(pre)
        for i, c in enumerate(tqdm(cases, desc=name, disable=not progress, leave=False)):
            if not pre[i] and attack_one is not None:
                adv[i], images[i], ok[i] = attack_one(i, c)
    # CPU seconds of this process next to wall seconds: on a shared machine the wall clock
    # measures the load, the CPU time (one thread with OMP_NUM_THREADS=1) the attack
    cost = {
        "denoiser_calls": calls[0],
        "seconds": time.time() - t0,
        "cpu_seconds": time.process_time() - c0,
    }
    return AttackResult(name, ", ".join(task.targets), prompts, adv, pre, ok, images, cost)
