"""pund: Probing Unlearned Diffusion Models — a transferable adversarial attack perspective
(Han, Wang, Chen, Zhang, Wu, Yu; arXiv 2404.19382).

Paper: https://arxiv.org/abs/2404.19382 — official code: github.com/hxxdtd/PUND
(``src/attackers/adv_search_.py``, ``src/tasks/classifier_.py``).

Idea: a *transfer* attack. Only the original model is used while optimising; one continuous
embedding s* is appended as a suffix to prompts from which the concept's word is deleted, and
optimised so that a surrogate (a copy of the original UNet) reconstructs images of the concept:

    min_{s*}  || eps - eps_sur(z_t, t, E(p \\ concept ; s*)) ||^2   (normalised by its own value).

Each epoch takes one random image and, for 5 timestep bins from high to low (t uniform in bin
j = [jT/5, (j+1)T/5)), 2 AdamW steps (lr 0.1, weight decay 0.1). Every 200 epochs the
surrogate's cross-attention (``attn2``) weights take one Adam step (lr 1e-5) per bin that
*erases* the current s* — eps_sur(z_t | p ; s*) is pulled towards eps_sur(z_t | p \\ concept) —
so the embedding must keep beating a harder, erasure-like surrogate (min-max); this is what
makes it transfer to unseen erased models. The attacked model is only used to generate the final
prompts (concept word deleted, s* appended).

Symbols: s* -> ``emb`` (initialised from the concept's last word), the surrogate -> a trainable
copy of ``original`` (the caller's model is never changed), "a photo of" (the neutral prompt)
-> the caption with the concept's word deleted.

Paper defaults: 1,000 images, 3,000 epochs, k = 1, 5 bins x 2 steps, update every 200 epochs.
Differences: training prompts are the world's captions containing the concept (the paper uses
one template); the neutral prediction is computed without gradient (an erasure target); the
paper's validation of checkpoints on an erased model every 2 epochs is not done (it needs the
victim during the search, contradicting the transfer threat model) — the final embedding is used.

On toy-sd the attack does not raise ASR above pre-ASR: the suffix learnt on the original model
changes nothing visible through the erased cross-attention, and toy-sd's text encoder leaves most
of its whole-word vocabulary untrained, so a suffix lives in a far less structured space than
CLIP's, on which the paper's transfer relies; this is not tuned away here.
Figures and investigation: docs/results.md#pund
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from genunlearn.core import adversary as adv
from genunlearn.core import attack_loop as loop
from genunlearn.core.cache import cached_sample
from genunlearn.core.judge import attack_prompts, judge
from genunlearn.core.params import own_storage
from genunlearn.registry import register_attack
from genunlearn.types import Capability, GenUnlearnError


@dataclass(frozen=True)
class PUNDConfig:
    """PUND settings (paper defaults).

    Args:
        n_prompts: attack prompts per concept.
        n_images: images of the concept made by the original model.
        epochs: optimisation epochs (one image each).
        bins: timestep bins per epoch, visited from high to low t.
        steps_per_bin: embedding steps per bin.
        lr: AdamW learning rate of the embedding.
        weight_decay: AdamW weight decay.
        update_every: epochs between the surrogate's erasing updates (0: never, i.e. no min-max).
        surrogate_lr: Adam learning rate of the surrogate's cross-attention.
        seed: evaluation seed of prompt 0 (prompt i uses seed + i) and training randomness.
        progress: show a progress bar.
        prompts_csv: an UnlearnDiffAtk-style attack set (prompt, seed, guidance, optional target
            image) to attack instead of the world's captions (``core.attack_loop.prompt_cases``).
    """

    n_prompts: int = 20
    n_images: int = 1000
    epochs: int = 3000
    bins: int = 5
    steps_per_bin: int = 2
    lr: float = 0.1
    weight_decay: float = 0.1
    update_every: int = 200
    surrogate_lr: float = 1e-5
    seed: int = 0
    progress: bool = True
    prompts_csv: str | None = None


def without_word(prompt: str, word: str) -> str:
    """``prompt`` with the whole word ``word`` deleted (PUND's "a photo of <concept>" -> "a photo of")."""
    return " ".join(re.sub(rf"\b{re.escape(word)}\b", " ", prompt).split())


def search(original, target: str, cfg: PUNDConfig, carrier: tuple[int, str]):
    """The min-max search on a surrogate copy of ``original``.

    Returns:
        (embedding [D], names of the surrogate parameters the erasing updates changed).
    """
    world = original.world
    has, _ = world.split([target])
    captions = [world.caption(lab) for lab in has]
    per = -(-cfg.n_images // len(captions))
    images = cached_sample(original, captions, n=per, seed=cfg.seed)[: cfg.n_images]
    z0 = adv.to_latents(original, images)
    cid, cword = carrier
    stripped = [without_word(c, target) for c in captions]
    rows = torch.cat(
        [adv.pack_ids(original, adv.text_ids(original, f"{s} {cword}")) for s in stripped]
    )
    sur = original.copy()
    attn = {n: p for n, p in sur.denoiser.named_parameters() if ".attn2." in n}
    own_storage(attn.values(), torch.float32)  # trained in place: the original keeps its storage
    before = {n: p.detach().clone() for n, p in attn.items()}
    with torch.no_grad():
        neutral = sur.encode_prompt(stripped)
    table = adv.token_table(original)
    emb = table[adv.text_ids(original, target.split()[-1])[0]].clone().requires_grad_(True)
    opt = torch.optim.AdamW([emb], lr=cfg.lr, weight_decay=cfg.weight_decay)
    opt_sur = torch.optim.Adam(list(attn.values()), lr=cfg.surrogate_lr)
    g = torch.Generator().manual_seed(cfg.seed)
    n_train = original.scheduler.config.num_train_timesteps

    def noisy(j, b):
        lo = b * n_train // cfg.bins
        t = torch.randint(lo, (b + 1) * n_train // cfg.bins, (1,), generator=g, device="cpu")
        noise = original.randn(z0[j].shape, g)
        return adv.noised(original, z0[j], t, noise), t, noise

    for e in tqdm(range(cfg.epochs), desc="pund", disable=not cfg.progress, leave=False):
        j = torch.randint(len(z0), (1,), generator=g, device="cpu")
        c = j // per  # images are caption-major
        ids = rows[c]
        for b in reversed(range(cfg.bins)):
            for _ in range(cfg.steps_per_bin):
                x_t, t, noise = noisy(j, b)
                embeds = torch.where((ids == cid).unsqueeze(-1), emb, table[ids])
                loss = F.mse_loss(
                    sur.predict_noise(x_t, t, adv.encode_embeds(sur, ids, embeds)), noise
                )
                opt.zero_grad(set_to_none=True)
                (loss / loss.detach()).backward()
                opt.step()
        if cfg.update_every and e > 0 and e % cfg.update_every == 0:
            with torch.no_grad():
                embeds = torch.where((ids == cid).unsqueeze(-1), emb, table[ids])
                cond = adv.encode_embeds(sur, ids, embeds)
            for p in attn.values():  # gradients into the surrogate only during its own updates
                p.requires_grad_(True)
            for b in reversed(range(cfg.bins)):
                x_t, t, _ = noisy(j, b)
                with torch.no_grad():
                    goal = sur.predict_noise(x_t, t, neutral[c])
                loss = F.mse_loss(sur.predict_noise(x_t, t, cond), goal)
                opt_sur.zero_grad(set_to_none=True)
                (loss / loss.detach()).backward()
                opt_sur.step()
            for p in attn.values():
                p.requires_grad_(False)
    changed = [n for n, p in attn.items() if not torch.equal(p.detach(), before[n])]
    return emb.detach(), changed


@register_attack(
    "pund",
    config=PUNDConfig,
    requires=(Capability.WORLD_EVALUATOR, Capability.TEXT_ENCODER),
    presets={
        "paper": {},
        "toy": {"n_images": 80, "epochs": 120, "update_every": 30, "surrogate_lr": 1e-4},
        "smoke": {"n_images": 2, "epochs": 3, "bins": 2, "steps_per_bin": 1, "update_every": 1,
                  "progress": False},
    },
    paper="https://arxiv.org/abs/2404.19382",
)  # fmt: skip
def attack(model, task, cfg: PUNDConfig, original=None):
    """Search one transferable suffix embedding on the original model, replay it on ``model``."""
    if len(task.targets) != 1 or model.world.kind_of(task.targets[0]) is None:
        raise GenUnlearnError("pund searches one concept of the model's world at a time")
    target = task.targets[0]
    original = loop.original_model(model, original)
    avoid = [c.prompt for c in loop.prompt_cases(model, task, cfg)]
    avoid += attack_prompts(model, task.targets, 10**6) + [
        model.inference.get("negative_prompt", "")
    ]
    carrier = adv.carrier_token(model, avoid)
    state: dict = {}

    def attack_one(i: int, case):
        prompt = case.prompt
        if "emb" not in state:  # search lazily: nothing to do if every prompt already succeeds
            state["emb"], state["surrogate_changed"] = search(original, target, cfg, carrier)
        text = f"{without_word(prompt, target)} {carrier[1]}"
        with adv.soft_tokens(model, {carrier[0]: state["emb"]}):
            image = loop.render(model, text, case)
        shown = f"{without_word(prompt, target)} <s*>"
        return shown, image[0], judge(model, image, task.targets)[0]

    res = loop.per_prompt_attack("pund", model, task, cfg, attack_one, progress=False)
    if "emb" in state:
        res.artifact = {"kind": "soft_token", "embedding": state["emb"], "position": "suffix"}
    return res
