"""Token-space and soft-prompt optimisers shared by attacks and adversarially robust methods.

- vocabulary: :func:`word_tokens` (whole-word tokens that survive decode -> encode, so a discrete
  adversarial prompt replayed as text is the optimised one), :func:`world_tokens` (those a
  testbed's world uses), :func:`pack_ids`, :func:`splice`;
- projections: :func:`project_simplex` (UnlearnDiffAtk), :func:`sample_one_hot` (straight-through,
  hardtanh-clipped), :func:`nearest_tokens` (PEZ / P4D cosine projection);
- soft prompts: transformers 5's ``CLIPTextModel.forward`` takes ``input_ids`` only, so token
  embeddings enter through ONE forward hook on the token-embedding table (:func:`_embedding_hook`),
  used by :func:`encode_embeds` (optimisation) and :func:`soft_tokens` (sampling with carrier
  tokens whose embedding is replaced);
- :func:`effective_noise`: the attacked model's prediction including a negative-prompt defence;
- :func:`genetic_search` (Ring-A-Bell). The per-prompt attack loop and its bookkeeping live in
  :mod:`genunlearn.core.attack_loop`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import lru_cache

import torch
from torch.nn import functional as F

from genunlearn.types import GenUnlearnError


@lru_cache(maxsize=8)
def _word_tokens(tok) -> tuple[int, ...]:
    words = {
        i: s[:-4] for s, i in tok.get_vocab().items() if s.endswith("</w>") and s[:-4].isalpha()
    }
    special = set(tok.all_special_ids)
    return tuple(
        i
        for i, w in sorted(words.items())
        if i not in special and tok(w, add_special_tokens=False).input_ids == [i]
    )


def word_tokens(model) -> torch.Tensor:
    """Ids of the tokenizer's alphabetic whole-word tokens that re-tokenize to themselves."""
    return torch.tensor(_word_tokens(model.tokenizer), dtype=torch.long, device="cpu")


def world_tokens(model) -> torch.Tensor:
    """The :func:`word_tokens` of the words the model's world uses (``World.words``).

    A testbed's text encoder has only learnt these words (its other vocabulary rows keep their
    random initialisation), so a search over them is a search over what the model can read.
    """
    world = getattr(model, "world", None)
    if world is None:
        raise GenUnlearnError(
            "the 'world' vocabulary needs a model with a labelled world (a testbed); use 'words'"
        )
    seen = {i for w in world.words() for i in text_ids(model, w)}
    ids = [i for i in _word_tokens(model.tokenizer) if i in seen]
    return torch.tensor(ids, dtype=torch.long, device="cpu")


def text_ids(model, text: str) -> list[int]:
    """Token ids of ``text`` without start/end tokens."""
    return list(model.tokenizer(text, add_special_tokens=False).input_ids)


def pack_ids(model, body) -> torch.Tensor:
    """``[BOS] + body + [EOS] + padding``: [1, L] for a list of ids, [B, L] for a [B, n] tensor
    (on the text encoder's device)."""
    tok = model.tokenizer
    rows = torch.as_tensor(body, dtype=torch.long, device=model.device)
    rows = rows.reshape(-1, rows.shape[-1]) if rows.dim() > 1 else rows.reshape(1, -1)
    b, k, n = rows.shape[0], rows.shape[1], tok.model_max_length
    if k + 2 > n:
        raise GenUnlearnError(
            f"adversarial prompt needs {k + 2} tokens, the text encoder takes {n}: use "
            "fewer adversarial tokens or shorter prompts"
        )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    bos, eos, pads = (
        torch.full((b, w), v, dtype=torch.long, device=rows.device)
        for v, w in ((tok.bos_token_id, 1), (tok.eos_token_id, 1), (pad, n - k - 2))
    )
    return torch.cat([bos, rows, eos, pads], 1)


def decode(model, ids) -> str:
    """Token ids (no special tokens) -> text."""
    return model.tokenizer.decode([int(i) for i in ids]).strip()


def token_table(model) -> torch.Tensor:
    """The text encoder's token-embedding table [V, D] (float32, no gradient)."""
    return model.text_encoder.get_input_embeddings().weight.detach().float()


def splice(model, parts: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [1, L], token embeddings [1, L, D]) of a prompt made of ``parts``: lists of token ids
    (fixed text) or [n, D] embedding tensors (adversarial tokens; placeholder id 0 in ``ids``)."""
    body = [i for p in parts for i in (p if isinstance(p, list) else [0] * len(p))]
    ids = pack_ids(model, body)
    table = token_table(model)
    rows, pos = [table[ids[0, :1]]], 1
    for p in parts:
        n = len(p)
        rows.append(table[ids[0, pos : pos + n]] if isinstance(p, list) else p.to(table.dtype))
        pos += n
    rows.append(table[ids[0, pos:]])
    return ids, torch.cat(rows).unsqueeze(0)


def project_simplex(a: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """Euclidean projection of each row of ``a`` onto the probability simplex, as UnlearnDiffAtk:
    clip(a - mu, 0, 1) with mu found by bisection so that the row sums to 1 (float64, batched)."""
    x = a.detach().double()
    lo = x.min(-1, keepdim=True).values - 1.0  # every entry clipped to 1: sum = V >= 1
    hi = x.max(-1, keepdim=True).values  # every entry clipped to 0: sum = 0 < 1
    for _ in range(iters):
        mu = (lo + hi) / 2
        over = (x - mu).clamp(0, 1).sum(-1, keepdim=True) > 1
        lo = torch.where(over, mu, lo)
        hi = torch.where(over, hi, mu)
    return (x - (lo + hi) / 2).clamp(0, 1).to(a.dtype)


class _STESample(torch.autograd.Function):
    """Categorical sample -> one-hot forward; hardtanh-clipped identity gradient backward."""

    @staticmethod
    def forward(ctx, probs, generator):
        # drawn where the generator lives (a CPU generator: the same tokens on every device)
        dev = probs.device if generator is None else generator.device
        idx = torch.multinomial(probs.to(dev), 1, generator=generator).squeeze(-1)
        return F.one_hot(idx.to(probs.device), probs.shape[-1]).to(probs.dtype)

    @staticmethod
    def backward(ctx, grad):
        return F.hardtanh(grad), None


def sample_one_hot(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` [k, V] as one-hot rows, straight-through gradient."""
    return _STESample.apply(probs, generator)


def nearest_tokens(emb: torch.Tensor, table: torch.Tensor, candidates=None):
    """(ids, table[ids]): nearest rows (cosine) of ``table`` [V, D] to ``emb`` [..., D], among
    ``candidates`` ids (None: all)."""
    dev = table.device  # ids index ``table`` and the candidates by the argmax, on its device
    cand = torch.arange(len(table), device=dev) if candidates is None else candidates.to(dev)
    sims = (
        F.normalize(emb.detach().reshape(-1, emb.shape[-1]), dim=-1)
        @ F.normalize(table[cand], dim=-1).T
    )
    ids = cand[sims.argmax(-1)].reshape(emb.shape[:-1])
    return ids, table[ids]


@contextlib.contextmanager
def _embedding_hook(model, replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """THE one place embeddings enter the text encoder: ``replace(input_ids, token_embeds)``."""
    layer = model.text_encoder.get_input_embeddings()
    handle = layer.register_forward_hook(lambda mod, args, out: replace(args[0], out))
    try:
        yield
    finally:
        handle.remove()


def encode_embeds(model, ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """Text-encoder hidden states for token embeddings ``embeds`` [B, L, D] (gradients flow back;
    position embeddings are added by the encoder; ``ids`` [B, L] only feed its pooling)."""
    if embeds.shape[:2] != ids.shape:
        raise GenUnlearnError(f"embeds {tuple(embeds.shape)} do not match ids {tuple(ids.shape)}")
    with _embedding_hook(model, lambda _ids, out: embeds.to(out.device, out.dtype)):
        return model.text_encoder(ids.to(model.device))[0]


def carrier_token(model, avoid: list[str]) -> tuple[int, str]:
    """A whole-word token (id, word) that occurs in none of the texts ``avoid``."""
    used = {w for text in avoid for w in text.lower().split()}
    for i in reversed(_word_tokens(model.tokenizer)):
        word = decode(model, [i])
        if word not in used:
            return i, word
    raise GenUnlearnError("no free vocabulary token to carry a soft embedding")


@contextlib.contextmanager
def soft_tokens(model, table: dict[int, torch.Tensor]):
    """While active, each carrier id in ``table`` encodes as its embedding (so prompts with the
    carrier's word go through ``model.sample`` unchanged)."""
    ids = torch.tensor(list(table), dtype=torch.long, device=model.device)
    vals = torch.stack([v.detach() for v in table.values()])

    def replace(input_ids, out):
        hit = input_ids.unsqueeze(-1) == ids.to(input_ids.device)  # [B, L, K]
        if not hit.any():
            return out
        return torch.where(
            hit.any(-1, keepdim=True), hit.to(out.dtype) @ vals.to(out.device, out.dtype), out
        )

    with _embedding_hook(model, replace):
        yield


def effective_noise(model, x_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
    """The attacked model's prediction: eps_c, or eps_neg + g (eps_c - eps_neg) for a model whose
    defence is an inference-time negative prompt (as P4D and Concept Inversion do for SD-NEGP)."""
    neg = model.inference.get("negative_prompt")
    if not neg:
        return model.predict_noise(x_t, t, cond)
    with torch.no_grad():
        e_neg = model.predict_noise(x_t, t, model.encode_prompt([neg]).expand(len(x_t), -1, -1))
    g = float(model.sampling["guidance"])
    return e_neg + g * (model.predict_noise(x_t, t, cond) - e_neg)


def noised(model, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) noise (the training forward process)."""
    return model.scheduler.add_noise(z0, noise, t)


@torch.no_grad()
def to_latents(model, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> scaled VAE latents, without gradient."""
    return model.encode_images(images)


def genetic_search(
    fitness: Callable[[torch.Tensor], torch.Tensor],
    population: torch.Tensor,
    candidates: torch.Tensor,
    generations: int,
    generator: torch.Generator,
    crossover: float = 0.5,
    mutation: float = 0.25,
) -> tuple[torch.Tensor, list[float]]:
    """Ring-A-Bell's genetic algorithm over token sequences [P, K] (lower ``fitness`` is better).

    Each generation keeps the best half unchanged (elitism: the best fitness never gets worse)
    and refills the population with children of random kept parents: single-point crossover with
    probability ``crossover`` (both children kept), then a one-token mutation (drawn from
    ``candidates``) of each child with probability ``mutation``. ``generator`` seeds every choice.

    Returns:
        (best ids [K], best fitness of the initial and of each later population).
    """
    pop = population.clone()
    size, k = pop.shape
    history: list[float] = []
    for gen in range(generations + 1):
        scores = fitness(pop).to(pop.device)  # the order indexes the population
        order = scores.argsort(stable=True)
        history.append(float(scores[order[0]]))
        if gen == generations:
            break
        keep = pop[order[: max(1, size // 2)]]
        children = []
        while len(keep) + len(children) < size:
            pa, pb = keep[torch.randint(len(keep), (2,), generator=generator, device="cpu")].clone()
            if k > 1 and torch.rand((), generator=generator, device="cpu") < crossover:
                cut = int(torch.randint(1, k, (), generator=generator, device="cpu"))
                pa[cut:], pb[cut:] = pb[cut:].clone(), pa[cut:].clone()
            for child in (pa, pb):
                if torch.rand((), generator=generator, device="cpu") < mutation:
                    pos = int(torch.randint(k, (), generator=generator, device="cpu"))
                    child[pos] = candidates[
                        torch.randint(len(candidates), (), generator=generator, device="cpu")
                    ]
                children.append(child)
        pop = torch.cat([keep, torch.stack(children)[: size - len(keep)]]) if children else keep
    return pop[order[0]].clone(), history
