"""memattn: memorization detection and inference-time mitigation through cross-attention.

Paper: Jie Ren, Yaxin Li, Shenglai Zeng, Han Xu, Lingjuan Lyu, Yue Xing, Jiliang Tang,
"Unveiling and Mitigating Memorization in Text-to-image Diffusion Models through Cross Attention",
ECCV 2024, https://arxiv.org/abs/2403.11052 — official code: github.com/renjie3/MemAttn.

Idea: when a prompt triggers a memorized training image, the cross-attention of the conditional
branch is spread unusually over the prompt's (trigger) tokens instead of resting on the
beginning-of-text token, and the end/padding ("summary") tokens behave differently along the
trajectory. Hence, without any training:

- **detection** (:func:`detection_scores`): the entropy of the cross-attention distribution over
  text tokens (attention averaged over query pixels, heads and layers). Mode "E" scores the first
  denoising step in one layer; mode "D" scores the mean entropy over the last fifth of the steps
  plus how much the entropy over the end/padding tokens changed from the first step. Higher
  scores flag memorization (the official ``detect.py`` ranks that way).
- **mitigation** (the registered method): while sampling, every ``attn2`` layer (i) masks the text
  positions beyond the prompt length (only BOS, the prompt tokens and EOS are attended) and (ii)
  multiplies the BOS token's logit by ``c1`` in the conditional half of the CFG batch, which moves
  attention mass back onto BOS and away from trigger tokens (:func:`memattn_attention`, on
  ``models/attention_processor.py``'s explicit attention).

Symbol map: c1 = ``c1`` (1.25); cross-attention mask = ``mask`` (``--cross_attn_mask``); the
official ``--mask_length_minis1`` = ``mask_eos``; detection steps 40..49 of 50 = the last
``late_share`` = 0.2 of the schedule; mode E's layer 3 of SD-1's 16 ``attn2`` layers =
``detect_layer`` (forward-call order).

Output: no weights change (the artifact is empty); the run stores ``{"memattn": {c1, mask,
mask_eos}}`` as inference state; ``install`` adds a sampling wrapper that turns it into the
processors around every sampling loop. The
erasure task's target is not used: the mitigation acts on every prompt, as in the official
inference script.

Differences from the official code: the mitigation applies to every ``attn2`` layer in float32
(the paper runs float16); the BOS factor is applied to the whole conditional half of the batch
(the official ``attn_weight[1::2]`` equals that for one prompt per call, the script's use);
detection averages each layer's head-averaged attention with equal weight (the official script
repeats heads to equalise layer sizes, which amounts to the same).

toy preset: detection mode D over all layers (toy-sd has 4 ``attn2`` layers, no "layer 3 of 16");
the padding mask **off** (toy-sd reads a prompt's style from the end/padding positions of its
small causal text encoder); **c1 = 6** (toy-sd's cross-attention has no BOS sink, so the paper's
1.25 moves almost nothing). The paper preset keeps the official mask + c1 = 1.25. Detection does
not separate memorized prompts on toy-sd (its attention is spread nearly uniformly over the
tokens for every prompt). Figures (memorizing variant): docs/results.md#memattn
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from genunlearn.models.attention_processor import CrossAttentionProcessor, installed_processors
from genunlearn.registry import register_method
from genunlearn.types import Capability, ErasureResult, GenUnlearnError

MODES = ("D", "E")


@dataclass(frozen=True)
class MemAttnConfig:
    """MemAttn settings (official inference-time mitigation defaults).

    Args:
        c1: factor on the BOS token's attention logit in the conditional half of the CFG batch.
        mask: mask cross-attention to text positions beyond the prompt length.
        mask_eos: also mask the end-of-text token (official ``--mask_length_minis1``).
        detect_mode: "E" (entropy at the first step in ``detect_layer``) or "D" (late-step
            entropy plus the change of the end/padding-token entropy), see :func:`detection_scores`.
        detect_layer: ``attn2`` layer index (forward-call order) for mode E; None = all layers.
        late_share: share of the last sampling steps mode D averages (40..49 of 50 = 0.2).
    """

    c1: float = 1.25
    mask: bool = True
    mask_eos: bool = False
    detect_mode: str = "E"
    detect_layer: int | None = 3
    late_share: float = 0.2

    def __post_init__(self):
        if self.detect_mode not in MODES:
            raise GenUnlearnError(f"detect_mode must be one of {MODES}, got {self.detect_mode!r}")
        if not 0 < self.late_share <= 1:
            raise GenUnlearnError(f"late_share must be in (0, 1], got {self.late_share}")


def prompt_lengths(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """Tokens of each padded id row up to and including its first end-of-text token."""
    eos = tokenizer.eos_token_id
    is_eos = ids == eos
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], -1))
    return torch.where(first >= 0, first + 1, torch.full_like(first, ids.shape[1]))


def memattn_logit_edit(keep: torch.Tensor | None, bos_scale: torch.Tensor):
    """The pre-softmax edit of MemAttn for :func:`core.attention.patched_cross_attention`.

    Args:
        keep: bool [B, tokens]; False positions get zero attention (None: keep all).
        bos_scale: float [B]; multiplies the BOS logit of each batch row.

    Returns:
        ``logits [B, heads, pixels, tokens] -> logits``.
    """

    def edit(logits: torch.Tensor) -> torch.Tensor:
        batch, n_tok = logits.shape[0], logits.shape[-1]
        if batch != len(bos_scale):
            raise GenUnlearnError(
                f"MemAttn was set up for a CFG batch of {len(bos_scale)} rows, got {batch}"
            )
        if keep is not None:
            logits = logits.masked_fill(~keep.to(logits.device)[:, None, None, :], -torch.inf)
        scale = torch.ones(batch, n_tok, device=logits.device, dtype=logits.dtype)
        scale[:, 0] = bos_scale.to(logits)
        return logits * scale[:, None, None, :]

    return edit


def memattn_plan(model, prompts: list[str], c1: float, mask: bool, mask_eos: bool):
    """The (keep, bos_scale) of a CFG batch ``[uncond rows; cond rows]`` for ``prompts``.

    Args:
        model: the adapter (its tokenizer).
        prompts: the conditional prompt of each row of the conditional half.
        c1: BOS logit factor for the conditional half.
        mask: mask the text positions beyond the prompt length.
        mask_eos: also mask the end-of-text token (the official ``--mask_length_minis1``).
    """
    ids = model.tokenize(list(prompts))
    n, n_tok = ids.shape
    keep = None
    if mask:
        length = prompt_lengths(model.tokenizer, ids)
        if mask_eos:
            length = (length - 1).clamp(min=1)
        keep = torch.arange(n_tok, device=ids.device)[None, :] < length[:, None]
        keep = torch.cat([keep, keep])  # the unconditional half uses its partner's length
    dev = ids.device
    bos = torch.cat([torch.ones(n, device=dev), torch.full((n,), float(c1), device=dev)])
    return keep, bos


def memattn_attention(
    model, prompts: list[str], c1: float = 1.25, mask: bool = True, mask_eos: bool = False,
    store=None,
):  # fmt: skip
    """Context manager: MemAttn on every ``attn2`` layer; the same processors are back on exit.

    Args:
        model: the adapter.
        prompts: conditional prompt of each conditional row of the CFG batches run inside.
        c1, mask, mask_eos: see :func:`memattn_plan`.
        store: optional ``AttentionStore`` receiving every layer call's probabilities.
    """
    keep, bos = memattn_plan(model, prompts, c1, mask, mask_eos)
    edit = memattn_logit_edit(keep, bos)
    make = lambda n: CrossAttentionProcessor(n, store, logit_edit=edit)  # noqa: E731
    return installed_processors(model.cross_attention_layers(), make)


def _check_state(m) -> None:
    """The run's state: ``{"c1": finite number, "mask": bool, "mask_eos": bool}``."""
    want = "a mapping with c1 (a finite number), mask and mask_eos (true/false)"
    if not isinstance(m, dict) or set(m) - {"c1", "mask", "mask_eos"}:
        raise GenUnlearnError(f"inference state memattn must be {want}, got {m!r}")
    c1 = m.get("c1", 1.25)
    if isinstance(c1, bool) or not isinstance(c1, (int, float)) or not math.isfinite(c1):
        raise GenUnlearnError(f"inference state memattn must be {want}, got c1={c1!r}")
    if any(not isinstance(m.get(k, False), bool) for k in ("mask", "mask_eos")):
        raise GenUnlearnError(f"inference state memattn must be {want}, got {m!r}")


def _sampling_wrapper(model, prompts: list[str]):
    """MemAttn's processors for one sampling loop while the model's state holds "memattn"."""
    state = model.inference.get("memattn")
    return memattn_attention(model, prompts, **state) if state else contextlib.nullcontext()


def install(model, inference: dict, addon) -> None:
    """Put a run's MemAttn state on ``model``: every later sampling loop runs the processors."""
    _check_state(inference.get("memattn"))
    model.apply_inference(inference)
    model.sampling_wrappers["memattn"] = _sampling_wrapper


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy over the last axis, with 0 log 0 = 0."""
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


def attention_trajectory(model, prompts, n=1, seed=0, steps=None, guidance=None) -> torch.Tensor:
    """Conditional-branch cross-attention along a normal sampling run, per step and layer.

    Returns:
        float [steps, layers, len(prompts) * n, tokens]: each layer's attention over text tokens,
        averaged over query pixels and heads (rows ordered as ``model.sample`` orders images).
    """
    from genunlearn.core.attention import AttentionStore, patched_cross_attention

    store = AttentionStore()
    state = model.inference.pop("memattn", None)  # detection looks at the unmitigated model
    try:
        with patched_cross_attention(model, store):
            model.sample(list(prompts), n=n, steps=steps, guidance=guidance, seed=seed,
                         batch_size=len(prompts) * n)  # fmt: skip
    finally:
        if state is not None:
            model.inference["memattn"] = state
    rows = len(prompts) * n
    per_layer = [
        torch.stack([p[rows:].mean(dim=(1, 2)) for p in calls]) for calls in store.probs.values()
    ]  # each [steps, rows, tokens]: the conditional half, mean over heads and pixels
    return torch.stack(per_layer, dim=1)


def detection_scores(
    model, prompts, n: int = 1, seed: int = 0, mode: str = "E", layer: int | None = 3,
    late_share: float = 0.2, steps: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """MemAttn's memorization score of each generation (higher = more likely memorized).

    Args:
        model: the adapter (sampled with its default sampler and the unmitigated attention).
        prompts: prompts to score.
        n: generations (seeds ``seed .. seed + n - 1``) per prompt.
        seed: first seed.
        mode: "E": entropy of the layer-``layer`` attention at the first denoising step;
            "D": mean entropy (all layers) over the last ``late_share`` of the steps plus the
            change, from the first step to those steps, of the entropy over the end/padding
            tokens (positions from the prompt's end-of-text token on).
        layer: ``attn2`` index in forward-call order for mode E (None: average all layers).
        late_share: share of final steps used by mode D.
        steps: sampling steps (None: the model's default).

    Returns:
        float [len(prompts) * n], prompt-major like ``model.sample``.
    """
    cfg = MemAttnConfig(detect_mode=mode, detect_layer=layer, late_share=late_share)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    traj = attention_trajectory(model, prompts, n=n, seed=seed, steps=steps)
    return scores_from_trajectory(model, traj, prompts, n, cfg)


def scores_from_trajectory(model, traj, prompts, n, cfg: MemAttnConfig) -> torch.Tensor:
    """:func:`detection_scores` from a precomputed :func:`attention_trajectory` (several modes
    or layers from one sampling run)."""
    layer = cfg.detect_layer
    if cfg.detect_mode == "E":
        if layer is not None and not -traj.shape[1] <= layer < traj.shape[1]:
            raise GenUnlearnError(
                f"detect_layer {layer} does not exist: the model has {traj.shape[1]} attn2 layers "
                f"(valid 0..{traj.shape[1] - 1} or None for all)"
            )
        first = traj[0, layer] if layer is not None else traj[0].mean(0)
        return _entropy(first)
    avg = traj.mean(1)  # [steps, rows, tokens]
    start = min(len(avg) - 1, int(round(len(avg) * (1 - cfg.late_share))))
    score = _entropy(avg[start:]).mean(0)
    ends = prompt_lengths(model.tokenizer, model.tokenize(list(prompts))).repeat_interleave(n) - 1
    pad = torch.arange(avg.shape[-1], device=avg.device)[None, :] >= ends.to(avg.device)[:, None]
    pad_entropy = _entropy(avg * pad)  # [steps, rows]: the entropy terms of EOS and padding only
    return score + pad_entropy[start:].mean(0) - pad_entropy[0]


@register_method(
    "memattn",
    config=MemAttnConfig,
    requires=(Capability.CROSS_ATTENTION,),
    presets={
        "paper": {},
        # toy-sd: 4 attn2 layers (no "layer 3 of 16"); the mask removes toy-sd's style cue; no
        # BOS attention sink, so c1 must be larger to move mass onto BOS (see the docstring)
        "toy": {"detect_mode": "D", "detect_layer": None, "mask": False, "c1": 6.0},
        "smoke": {"detect_mode": "D", "detect_layer": None},
    },
    paper="https://arxiv.org/abs/2403.11052",
    modifies="",
    install=install,
)
def erase(model, task, cfg: MemAttnConfig) -> ErasureResult:
    """Install MemAttn's inference-time mitigation; no weight changes."""
    if cfg.c1 <= 0:
        raise GenUnlearnError(f"c1 must be positive (1.25 in the paper), got {cfg.c1}")
    state = {
        "memattn": {"c1": float(cfg.c1), "mask": bool(cfg.mask), "mask_eos": bool(cfg.mask_eos)}
    }
    install(model, state, None)
    return ErasureResult(inference=state, info={"detect_mode": cfg.detect_mode})
