"""Random-weight SD-1.5 pipelines from configs, at full size and at a reduced SD-shaped size.

Nothing here downloads anything: every component is built from its config with random weights
(test and experiment infrastructure; it builds weights, so it lives in ``testbed/``).
The full-size (``"sd15"``) values are the public ones of the SD-1.5 checkpoint's
``unet/config.json``, ``text_encoder/config.json`` (the CLIP ViT-L/14 text tower),
``vae/config.json`` and ``scheduler/scheduler_config.json``. They let us measure the real shapes,
parameter counts, speed and memory of SD-1.5 and check that code written against toy-sd touches
modules that exist, with the same names, in a real checkpoint.

The ``"reduced"`` variant keeps SD's block types, their order (cross-attention at the high
resolutions, a plain block at the lowest), SD's module names (``...attn1``, ``...attn2.to_k``,
``...attn2.to_v``, ...), the 77-token context, an 8x downsampling VAE with 4 latent channels and
the scheduler, but with tiny widths, so it builds, saves, loads and samples in about a second on a
CPU. It is for tests, not for generating anything meaningful.

The tokenizer is never CLIP's real 49408-token one (that needs a download): it is the offline
``CLIPTokenizer`` of :func:`genunlearn.testbed.tokenizer.build_tokenizer` on a small word list
with ``model_max_length=77``. The full-size text encoder keeps CLIP's vocabulary size (49408 rows of
token embeddings) so that its parameter count is SD's; the ids our tokenizer emits all fall inside
it, and its special-token ids are taken from that tokenizer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from genunlearn.types import GenUnlearnError

SIZES = ("reduced", "sd15", "reduced-v", "sd21")
#: sizes of the SD-2.x kind: OpenCLIP-H-shaped text encoder (1024 wide, GELU), linear
#: projections in the transformer blocks, per-level head dims, and a v-prediction scheduler
#: (SD-2.1 768-v); "reduced-v" is the same at tiny widths, for tests
SD2_SIZES = ("reduced-v", "sd21")

# SD's CLIP context length: the tokenizer pads/truncates to 77 tokens, the text encoder has 77
# position embeddings, the UNet cross-attends to 77 keys.
MAX_LENGTH = 77

# Words for the offline tokenizer (build_tokenizer adds its own general vocabulary).
TOKENIZER_WORDS = (
    "a photo of cat dog car tree house person painting in the style van gogh church "
    "red green blue star circle square"
).split()

# scheduler/scheduler_config.json of SD-1.5 ships a PNDMScheduler with these betas; we use DDIM
# (the adapter's default sampler) with the same training schedule. steps_offset and clip_sample are
# set explicitly because diffusers warns about (and silently changes) configs without them.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def _check_size(size: str) -> str:
    if size not in SIZES:
        raise GenUnlearnError(f"unknown SD size {size!r}; choose one of {', '.join(SIZES)}")
    return size


def unet_config(size: str = "sd15") -> dict:
    """``UNet2DConditionModel`` config.

    ``"sd15"`` (SD-1.5 ``unet/config.json``, ~860M parameters): 64x64x4 latents (512x512 images),
    ``block_out_channels`` (320, 640, 1280, 1280), down blocks CrossAttnDownBlock2D x3 +
    DownBlock2D, up blocks UpBlock2D + CrossAttnUpBlock2D x3, a cross-attention mid block,
    ``layers_per_block`` 2, ``cross_attention_dim`` 768 (the CLIP ViT-L/14 text width),
    ``attention_head_dim`` 8 (which diffusers reads as 8 heads per attention layer, a legacy
    naming), GroupNorm with 32 groups.

    ``"reduced"``: the same block types in the same order at two levels, (32, 64) channels,
    ``layers_per_block`` 2, 8 heads, ``cross_attention_dim`` 32, 8x8x4 latents (64x64 images).

    Args:
        size: one of :data:`SIZES` (the SD-2.x ones: :data:`SD2_SIZES`).
    """
    common = dict(
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        attention_head_dim=8,
        norm_num_groups=32,
        norm_eps=1e-5,
        act_fn="silu",
        center_input_sample=False,
        downsample_padding=1,
        flip_sin_to_cos=True,
        freq_shift=0,
        mid_block_scale_factor=1,
    )
    if _check_size(size) == "sd21":  # SD-2.1 (768-v) unet/config.json
        return dict(
            common,
            sample_size=96,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024,
            attention_head_dim=(5, 10, 20, 20),
            use_linear_projection=True,
            upcast_attention=True,
        )
    if size == "reduced-v":
        return dict(
            common,
            sample_size=8,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=48,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            upcast_attention=True,
        )
    if size == "sd15":
        return dict(
            common,
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
        )
    return dict(
        common,
        sample_size=8,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )


def text_encoder_config(size: str = "sd15", tokenizer=None) -> dict:
    """``CLIPTextConfig`` keyword arguments.

    ``"sd15"`` (SD-1.5 ``text_encoder/config.json``, the CLIP ViT-L/14 text tower, ~123M
    parameters): hidden 768, 12 layers, 12 heads, intermediate 3072, vocabulary 49408, 77
    positions, ``quick_gelu``, projection 768, LayerNorm eps 1e-5.

    ``"reduced"``: hidden 32, 2 layers, 4 heads, intermediate 64, vocabulary = the tokenizer's.

    The hidden size equals the UNet's ``cross_attention_dim`` at both sizes (SD feeds the last
    hidden states straight into cross-attention).

    Args:
        size: one of :data:`SIZES` (the SD-2.x ones: :data:`SD2_SIZES`).
        tokenizer: the pipeline's tokenizer; its special-token ids (and, for ``"reduced"``, its
            length) are used. Without it the public SD-1.5 ids are kept (bos 0, eos 2, pad 1).
    """
    act = "gelu" if _check_size(size) in SD2_SIZES else "quick_gelu"
    if size == "sd21":  # the OpenCLIP ViT-H text tower as SD-2 uses it (23 of 24 layers)
        cfg = dict(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            projection_dim=512,
            num_hidden_layers=23,
            num_attention_heads=16,
        )
    elif size == "reduced-v":
        cfg = dict(
            vocab_size=len(tokenizer) if tokenizer is not None else 1024,
            hidden_size=48,
            intermediate_size=96,
            projection_dim=48,
            num_hidden_layers=2,
            num_attention_heads=4,
        )
    elif size == "sd15":
        cfg = dict(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            projection_dim=768,
            num_hidden_layers=12,
            num_attention_heads=12,
        )
    else:
        cfg = dict(
            vocab_size=len(tokenizer) if tokenizer is not None else 1024,
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
        )
    cfg.update(
        max_position_embeddings=MAX_LENGTH,
        hidden_act=act,
        layer_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )
    if tokenizer is not None:
        if len(tokenizer) > cfg["vocab_size"]:
            raise GenUnlearnError(
                f"tokenizer has {len(tokenizer)} tokens, more than the text encoder's "
                f"vocabulary of {cfg['vocab_size']}"
            )
        cfg.update(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return cfg


def vae_config(size: str = "sd15") -> dict:
    """``AutoencoderKL`` config.

    ``"sd15"`` (SD-1.5 ``vae/config.json``, ~84M parameters): 512x512 RGB <-> 64x64x4 latents,
    ``block_out_channels`` (128, 256, 512, 512) (four DownEncoderBlock2D / UpDecoderBlock2D, so
    three 2x downsamplings), ``layers_per_block`` 2, 4 latent channels, ``scaling_factor`` 0.18215.

    ``"reduced"``: the same four levels (8x downsampling, 4 latent channels, the same scaling
    factor) at (8, 16, 32, 32) channels, one layer per block: 64x64 RGB <-> 8x8x4 latents.

    Args:
        size: one of :data:`SIZES` (the SD-2.x ones: :data:`SD2_SIZES`).
    """
    common = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        act_fn="silu",
        scaling_factor=0.18215,
    )
    if _check_size(size) in ("sd15", "sd21"):
        return dict(
            common,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            norm_num_groups=32,
            sample_size=768 if size == "sd21" else 512,
        )
    return dict(
        common,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )


def scheduler_config(size: str = "sd15") -> dict:
    """A copy of :data:`SCHEDULER_CONFIG` (SD-1.5's scaled-linear betas 0.00085-0.012, DDIM);
    SD-2.x sizes predict v (``prediction_type="v_prediction"``, as SD-2.1 768-v)."""
    cfg = dict(SCHEDULER_CONFIG)
    if _check_size(size) in SD2_SIZES:
        cfg["prediction_type"] = "v_prediction"
    return cfg


def build_tokenizer_for(out_dir: str | Path):
    """The offline SD-style ``CLIPTokenizer`` (77 tokens) over :data:`TOKENIZER_WORDS`.

    Args:
        out_dir: directory that receives the tokenizer's files.
    """
    from genunlearn.testbed.tokenizer import build_tokenizer

    return build_tokenizer(list(TOKENIZER_WORDS), out_dir, vocab_size=512, max_length=MAX_LENGTH)


def build_unet(size: str = "sd15", seed: int = 0):
    """A randomly initialised ``UNet2DConditionModel`` of :func:`unet_config` (eval mode)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**unet_config(size)).eval()


def build_text_encoder(size: str = "sd15", tokenizer=None, seed: int = 0):
    """A randomly initialised ``CLIPTextModel`` of :func:`text_encoder_config` (eval mode)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(CLIPTextConfig(**text_encoder_config(size, tokenizer))).eval()


def build_random_pipeline(
    size: str = "reduced", seed: int = 0, tokenizer_dir: str | Path | None = None
):
    """A ``diffusers.StableDiffusionPipeline`` of the given size with random weights (float32).

    The weights depend only on ``size`` and ``seed`` (the global torch RNG is left untouched). No
    safety checker or feature extractor; DDIM scheduler with SD-1.5's betas.

    Args:
        size: ``"reduced"`` (tiny, for tests) or ``"sd15"`` (full SD-1.5 shapes, ~1.07B parameters,
            ~4.3 GB in float32).
        seed: seed of the random initialisation.
        tokenizer_dir: where the offline tokenizer's files are written; a temporary directory
            (removed afterwards) when None.

    Returns:
        The pipeline; save it with ``save_pretrained`` or :func:`save_random_pipeline`.

    Raises:
        GenUnlearnError: an unknown ``size``.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    _check_size(size)
    if tokenizer_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            tok = build_tokenizer_for(tmp)
    else:
        tok = build_tokenizer_for(tokenizer_dir)
    unet_cfg, text_cfg = unet_config(size), text_encoder_config(size, tok)
    if text_cfg["hidden_size"] != unet_cfg["cross_attention_dim"]:
        raise GenUnlearnError(
            f"text encoder width {text_cfg['hidden_size']} != UNet cross_attention_dim "
            f"{unet_cfg['cross_attention_dim']}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
        vae = AutoencoderKL(**vae_config(size))
    for m in (unet, text_encoder, vae):
        m.eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=DDIMScheduler(**scheduler_config(size)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_random_pipeline(path: str | Path, size: str = "reduced", seed: int = 0) -> Path:
    """Build :func:`build_random_pipeline` and write it to ``path`` with ``save_pretrained``.

    The directory loads with ``genunlearn.load_model(path)`` like any local SD checkpoint.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    pipe = build_random_pipeline(size, seed)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
