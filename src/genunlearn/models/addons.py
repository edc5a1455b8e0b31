"""Detachable add-on modules on an SD UNet: low-rank adapters with a per-prompt gate.

A rank-r adapter ``W x + m * s * up(down(x))`` sits on chosen ``Linear`` / ``Conv2d`` modules of
the UNet (:func:`transformer_modules`: every one inside every ``Transformer2DModel``), where ``s``
is alpha / rank and ``m`` is the adapter's *multiplier*. Several adapters stack: their terms are
summed, each with its own multiplier. The base weights never change, so an adapter is saved as
its own small file and can be attached to, or left off, any copy of the base model.

Multipliers are either fixed (training switches an adapter on with 1 and off with 0) or set by
*facilitated transport* (a prompt-similarity gate): per conditioning row, the maximum over the
adapter's erased prompts of max(cosine similarity of the flattened prompt embeddings,
share of the erased prompt's tokens that occur in the prompt). The gate is evaluated in a UNet
forward pre-hook from ``encoder_hidden_states``; the tokens of a row are looked up in a small
cache that a text-encoder forward hook fills (keyed by the row's bytes), so rows that did not
come from the text encoder (soft-prompt attacks) fall back to the cosine term.

Hooks are callable objects stored in the modules, so ``copy.deepcopy`` of the UNet (the
adapter's ``copy()`` / ``frozen_copy()``) carries the adapters and their state along.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from genunlearn.types import AddOn, GenUnlearnError

STACK_ATTR = "_genunlearn_addons"
_TOKENS: OrderedDict[bytes, frozenset[int]] = OrderedDict()  # row bytes -> its token ids
_TOKEN_CACHE_SIZE = 8192


def transformer_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """Every Linear / Conv2d inside every Transformer2DModel of the UNet, by name (SPM's set)."""
    out = {}
    for name, mod in unet.named_modules():
        if type(mod).__name__ == "Transformer2DModel":
            for sub, child in mod.named_modules():
                if isinstance(child, (nn.Linear, nn.Conv2d)):
                    out[f"{name}.{sub}"] = child
    return out


def init_low_rank(modules: dict[str, nn.Module], rank: int) -> dict[str, torch.Tensor]:
    """Fresh adapter tensors (``<module>.lora_down`` Kaiming-uniform, ``.lora_up`` zeros)."""
    out = {}
    for name, m in modules.items():
        lo, hi = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (
            m.in_channels, m.out_channels
        )  # fmt: skip
        if not 1 <= rank <= min(lo, hi):
            raise GenUnlearnError(
                f"adapter rank {rank} is out of range for {name} ({lo} -> {hi}); valid: 1.."
                f"{min(lo, hi)}"
            )
        # initialised on the CPU (the global CPU generator: the same start on every device),
        # then moved to the module's device
        cpu = torch.device("cpu")
        if isinstance(m, nn.Linear):
            down, up = torch.empty(rank, lo, device=cpu), torch.zeros(hi, rank, device=cpu)
        else:
            down = torch.empty(rank, lo, *m.kernel_size, device=cpu)
            up = torch.zeros(hi, rank, 1, 1, device=cpu)
        nn.init.kaiming_uniform_(down, a=5**0.5)
        dev = m.weight.device
        out[f"{name}.lora_down"], out[f"{name}.lora_up"] = down.to(dev), up.to(dev)
    return out


def _row_key(row: torch.Tensor) -> bytes:
    return hashlib.blake2b(row.detach().float().cpu().numpy().tobytes(), digest_size=16).digest()


class _TokenHook:
    """Text-encoder forward hook: remember which tokens produced each output row."""

    def __init__(self, special: frozenset[int]):
        self.special = special

    def __call__(self, module, args, kwargs, output):
        ids = kwargs.get("input_ids", args[0] if args else None)
        hidden = output[0] if isinstance(output, (tuple, list)) else output.last_hidden_state
        if ids is None or hidden is None:
            return None
        for i in range(len(ids)):
            key = _row_key(hidden[i])
            _TOKENS[key] = frozenset(ids[i].tolist()) - self.special
            _TOKENS.move_to_end(key)
        while len(_TOKENS) > _TOKEN_CACHE_SIZE:
            _TOKENS.popitem(last=False)
        return None


class _Stack:
    """The adapters attached to one UNet and their current per-row multipliers."""

    def __init__(self):
        self.addons: list[dict] = []
        self.mult: torch.Tensor | None = None  # [B, K]

    def gate(self, cond: torch.Tensor | None) -> None:
        b = 1 if cond is None else len(cond)
        cols = []
        for a in self.addons:
            if a["fixed"] is not None or cond is None or not a["tokens"]:
                value = a["fixed"] if a["fixed"] is not None else float(cond is not None)
                dev = cond.device if cond is not None else "cpu"  # moved to each output
                cols.append(torch.full((b,), float(value), device=dev))
                continue
            flat = cond.detach().flatten(1).float()
            cos = F.cosine_similarity(flat[:, None], a["erased"].flatten(1)[None], dim=-1)
            toks = [_TOKENS.get(_row_key(r)) for r in cond]
            uni = torch.tensor(
                [
                    [len(t & e) / max(1, len(e)) if t is not None else 0.0 for e in a["tokens"]]
                    for t in toks
                ],
                device=cos.device,
            )
            cols.append(torch.maximum(cos, uni).amax(1))
        self.mult = torch.stack(cols, 1) if cols else None


class _GateHook:
    def __init__(self, stack: _Stack):
        self.stack = stack

    def __call__(self, module, args, kwargs):
        cond = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
        self.stack.gate(cond)
        return None


class _LowRankHook:
    """Forward hook adding sum_k m_k * s_k * up_k(down_k(x)) to one module's output."""

    def __init__(self, stack: _Stack, name: str):
        self.stack, self.name = stack, name

    def __call__(self, module, args, output):
        st = self.stack
        if st.mult is None:
            return None
        x = args[0]
        for k, a in enumerate(st.addons):
            m = st.mult[:, k].to(output)
            if self.name not in a["down"] or not bool((m != 0).any()):
                continue
            down, up = a["down"][self.name], a["up"][self.name]
            if isinstance(module, nn.Conv2d):
                h = F.conv2d(x, down, None, module.stride, module.padding, module.dilation)
                h = F.conv2d(h, up)
            else:
                h = F.linear(F.linear(x, down), up)
            if len(m) == 1 and len(h) != 1:
                m = m.expand(len(h))  # one conditioning row broadcast over the batch
            if len(m) != len(h):
                raise GenUnlearnError(
                    f"add-on gate has {len(m)} rows but {self.name} sees a batch of {len(h)}"
                )
            output = output + (a["scale"] * m).view(-1, *[1] * (h.dim() - 1)) * h
        return output


def _special(model) -> frozenset[int]:
    """Token ids that carry no content (start, end, padding)."""
    tok = model.tokenizer
    return frozenset(
        i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if i is not None
    )


def _stack(model, create: bool = False) -> _Stack | None:
    unet = model.denoiser
    st = getattr(unet, STACK_ATTR, None)
    if st is None and create:
        st = _Stack()
        setattr(unet, STACK_ATTR, st)
        unet.register_forward_pre_hook(_GateHook(st), with_kwargs=True)
        model.text_encoder.register_forward_hook(_TokenHook(_special(model)), with_kwargs=True)
    return st


def attach(model, addon: AddOn, fixed: float | None = None) -> None:
    """Attach a low-rank adapter to ``model``'s UNet (in place; the base weights stay as they are).

    Args:
        model: an SD adapter.
        addon: tensors ``<module>.lora_down`` / ``<module>.lora_up`` (one pair per module) and
            ``meta`` with ``prompts`` (erased prompts, for facilitated transport), ``rank``,
            ``alpha``; its ``kind`` names the method that made it.
        fixed: a fixed multiplier (training), or None for facilitated transport.
    """
    names = {k.rsplit(".", 1)[0] for k in addon.tensors}
    if not names or set(addon.tensors) != {
        f"{n}.{s}" for n in names for s in ("lora_down", "lora_up")
    }:
        raise GenUnlearnError(
            f"add-on {addon.kind!r} is not a low-rank adapter: it needs one <module>.lora_down "
            "and one <module>.lora_up tensor per module"
        )
    modules = transformer_modules(model.denoiser)
    missing = sorted(names - set(modules))
    if missing:
        raise GenUnlearnError(f"add-on names modules this model lacks: {missing[:3]}")
    st = _stack(model, create=True)
    prompts = list(addon.meta.get("prompts") or [])
    with torch.no_grad():
        erased = model.encode_prompt(prompts) if prompts else torch.zeros(0, device=model.device)
    ids = model.tokenize(prompts) if prompts else []
    tokens = [frozenset(row.tolist()) - _special(model) for row in ids]
    hooked = {n for a in st.addons for n in a["down"]}
    st.addons.append(
        {
            "addon": addon,
            # on the UNet's device (the same tensors when they are there already, as in training)
            "down": {n: addon.tensors[f"{n}.lora_down"].to(model.device) for n in names},
            "up": {n: addon.tensors[f"{n}.lora_up"].to(model.device) for n in names},
            "scale": float(addon.meta.get("alpha", 1.0)) / float(addon.meta.get("rank", 1)),
            "erased": erased.detach().clone(),
            "tokens": tokens,
            "fixed": fixed,
        }
    )
    for n in sorted(names - hooked):
        modules[n].register_forward_hook(_LowRankHook(st, n))


def attached(model) -> list[AddOn]:
    """The add-ons attached to ``model``, in attachment order."""
    st = _stack(model)
    return [a["addon"] for a in st.addons] if st else []


def set_multiplier(model, index: int, fixed: float | None) -> None:
    """Fix add-on ``index``'s multiplier (or None: facilitated transport)."""
    _stack(model).addons[index]["fixed"] = fixed


@contextmanager
def multiplier(model, index: int, value: float | None):
    """Temporarily fix add-on ``index``'s multiplier (SPM training switches it on and off)."""
    a = _stack(model).addons[index]
    before, a["fixed"] = a["fixed"], value
    try:
        yield
    finally:
        a["fixed"] = before


def last_multipliers(model) -> torch.Tensor | None:
    """The [batch, n_addons] multipliers of the UNet's latest forward pass (for inspection)."""
    st = _stack(model)
    return None if st is None or st.mult is None else st.mult.clone()
