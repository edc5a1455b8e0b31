"""The toy-sd recipe: a real ``diffusers.StableDiffusionPipeline`` at tiny size, trained on ToyCanvas.

Same classes as SD-1.x (``AutoencoderKL``, ``UNet2DConditionModel`` with cross-attention modules
named ``...attn2.to_k/to_v/to_q/to_out.0``, ``CLIPTextModel``, ``CLIPTokenizer``, DDPM/DDIM
schedulers with SD's scaled-linear betas), so every method written against the adapter runs
unchanged on a real checkpoint. Sizes: 32x32 RGB images, 8x8x4 latents, a 2-level UNet with
cross-attention at 4x4 (down, mid, up), a 3-layer 128-wide text encoder.

One deliberate difference from SD: the tokenizer's ``model_max_length`` is 32, not 77 (ToyCanvas
captions are ~8 tokens; 77 positions cost ~30% of training time on a CPU). Code must read the
length from the tokenizer, never hard-code 77.

The recipe (``train_testbed``) runs in stages, each resumable from its checkpoint under
``OUT/work``: render data -> evaluator -> VAE -> encode latents -> UNet + text encoder (min-SNR
weighted epsilon loss, caption dropout for classifier-free guidance, EMA) -> export. The VAE and
UNet stages run in :func:`~genunlearn.testbed.loop.train_loop`; ``training_captions`` and
``min_snr_step`` are shared with the fine-tuned variants (``testbed.memorize``,
``testbed.watermark``) so that they keep toy-sd's abilities.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from genunlearn.testbed.loop import atomic_save, load_checkpoint, train_loop
from genunlearn.testbed.sd_configs import SCHEDULER_CONFIG  # SD's training schedule
from genunlearn.types import GenUnlearnError

log = logging.getLogger("genunlearn.testbed")

TOY_MAX_TOKENS = 32


def vae_config() -> dict:
    """AutoencoderKL: 32x32 RGB <-> 8x8x4 latents (two downsamplings)."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=32,
    )


def unet_config(cross_attention_dim: int = 128) -> dict:
    """UNet2DConditionModel on 8x8x4 latents with SD's block and module names."""
    return dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def text_config(tokenizer, hidden: int = 128) -> dict:
    """CLIPTextModel sized for toy worlds; ``hidden`` must equal the UNet's cross_attention_dim."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        projection_dim=hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_pipeline(tokenizer, seed: int = 0, vae=None):
    """A randomly initialised toy StableDiffusionPipeline (DDIM sampler, no safety checker)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        vae=vae if vae is not None else AutoencoderKL(**vae_config()),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config(tokenizer))),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_config()),
        scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@dataclass(frozen=True)
class TrainRecipe:
    """The testbed training recipe; defaults are the one that made the committed toy-sd."""

    seed: int = 0
    n_images: int = 50_000
    evaluator_steps: int = 1500
    evaluator_batch: int = 64
    vae_steps: int = 1000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    unet_steps: int = 4500
    unet_batch: int = 64
    unet_lr: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    caption_dropout: float = 0.1
    partial_captions: float = 0.2
    checkpoint_every: int = 200


# --------------------------------------------------------------------------- helpers
def _cosine(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``floor`` (a factor of the peak learning rate).

    A Python float, never a numpy scalar: the rate is stored in the optimiser's state, and a
    checkpoint holding a numpy scalar cannot be read back with ``weights_only=True``.
    """
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return float(floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * min(1.0, p))))


def _render_chunk(args):
    from genunlearn.data import toycanvas

    seed, start, n = args
    return toycanvas.make_arrays(seed, n, start)


def _stage_data(work: Path, recipe: TrainRecipe, data_dir: str | None, progress: bool) -> dict:
    path = work / "data.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {k: z[k] for k in z.files}
    if data_dir is None:
        from concurrent.futures import ProcessPoolExecutor

        from tqdm.auto import tqdm

        from genunlearn.data import toycanvas

        chunk = 2500
        jobs = [
            (recipe.seed, s, min(chunk, recipe.n_images - s))
            for s in range(0, recipe.n_images, chunk)
        ]
        with ProcessPoolExecutor(max_workers=2) as pool:
            parts = list(
                tqdm(
                    pool.map(_render_chunk, jobs),
                    total=len(jobs),
                    desc="data",
                    disable=not progress,
                )
            )
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        caps = sum((p[2] for p in parts), [])
        heads = toycanvas.KINDS
    else:
        from genunlearn.data.folders import load_folder

        images, labels, caps, classes = load_folder(data_dir)
        heads = {"class": tuple(classes)}
    out = {
        "images": images,
        "labels": labels,
        "captions": np.asarray(caps),
        "heads": np.asarray(json.dumps({k: list(v) for k, v in heads.items()})),
    }
    np.savez(path, **out)
    return out


def _partial_caption(labels: np.ndarray, heads: dict, rng: random.Random) -> str | None:
    """ToyCanvas only: a caption naming a subset of the attributes (teaches 'a star', ...)."""
    if set(heads) != {"object", "style", "colour"}:
        return None
    o, s, c = (heads[k][labels[i]] for i, k in enumerate(("object", "style", "colour")))
    return rng.choice(
        [f"a {c} {o}", f"a {o} in {s} style", f"a {o}", f"a {c} shape", f"a shape in {s} style"]
    )


def training_captions(
    indices, captions, labels, heads: dict, rng: random.Random, dropout: float, partial: float
) -> list[str]:
    """toy-sd's caption mix for one batch: "" with probability ``dropout`` (keeps classifier-free
    guidance working), a partial caption with probability ``partial``, else the full caption.
    Shared by the testbed recipe and its fine-tuned variants so they keep the same abilities."""
    texts = []
    for i in indices:
        r = rng.random()
        if r < dropout:
            texts.append("")
        elif r < dropout + partial:
            texts.append(_partial_caption(labels[i], heads, rng) or captions[i])
        else:
            texts.append(captions[i])
    return texts


def min_snr_step(unet, scheduler, z0, cond, g: torch.Generator, gamma: float, opt, params):
    """One optimiser step of toy-sd's objective (min-SNR-weighted epsilon MSE, grad clip 1.0) on
    clean latents ``z0`` with text states ``cond``; noise and timesteps come from ``g``.
    Returns the loss tensor (detached)."""
    alphas = scheduler.alphas_cumprod.float()
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=g)
    pred = unet(scheduler.add_noise(z0, noise, t), t, cond).sample
    snr = alphas[t] / (1 - alphas[t])
    w = torch.clamp(snr, max=gamma) / snr
    loss = (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.detach()


# --------------------------------------------------------------------------- stages
def _stage_vae(work: Path, data: dict, recipe: TrainRecipe, progress: bool):
    from diffusers import AutoencoderKL

    final = work / "vae"
    if (final / "config.json").is_file():
        return AutoencoderKL.from_pretrained(final)
    torch.manual_seed(recipe.seed)
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    x_all = torch.from_numpy(data["images"]).permute(0, 3, 1, 2)

    def step_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        for grp in opt.param_groups:
            grp["lr"] = recipe.vae_lr * _cosine(step, recipe.vae_steps, 50)
        x = (
            x_all[torch.randint(0, len(x_all), (recipe.vae_batch,), generator=g)].float() / 127.5
            - 1
        )
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean + post.std * torch.randn(post.mean.shape, generator=g)).sample
        loss = F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def restore(state: dict) -> None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])

    train_loop(
        step_fn, recipe.vae_steps, checkpoint=work / "vae_ckpt.pt",
        state=lambda: {"model": vae.state_dict(), "opt": opt.state_dict()}, restore=restore,
        every=recipe.checkpoint_every, desc="vae", progress=progress,
    )  # fmt: skip
    vae.eval()
    vae.save_pretrained(final)
    return vae


@torch.no_grad()
def _stage_latents(work: Path, vae, data: dict) -> torch.Tensor:
    path = work / "latents.pt"
    if path.is_file():
        return load_checkpoint(path)
    x_all = torch.from_numpy(data["images"]).permute(0, 3, 1, 2)
    lat = torch.cat(
        [
            vae.encode(x_all[i : i + 512].float() / 127.5 - 1).latent_dist.mean
            for i in range(0, len(x_all), 512)
        ]
    )
    atomic_save(lat, path)
    return lat


def _stage_unet(work: Path, pipe, latents, data, recipe: TrainRecipe, progress: bool):
    unet, te, tok = pipe.unet, pipe.text_encoder, pipe.tokenizer
    sched = pipe.scheduler
    heads = json.loads(str(data["heads"]))
    params = list(unet.parameters()) + list(te.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=recipe.unet_lr, weight_decay=1e-2)
    captions = [str(c) for c in data["captions"]]
    labels = data["labels"]

    def ids_of(texts):
        return tok(
            texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip

    def step_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 7 + step)
        rng = random.Random(recipe.seed * 1_000_003 + step)
        for grp in opt.param_groups:
            grp["lr"] = recipe.unet_lr * _cosine(step, recipe.unet_steps, recipe.warmup)
        idx = torch.randint(0, len(latents), (recipe.unet_batch,), generator=g)
        texts = training_captions(
            idx.tolist(), captions, labels, heads, rng, recipe.caption_dropout,
            recipe.partial_captions,
        )  # fmt: skip
        z0 = latents[idx] * pipe.vae.config.scaling_factor
        loss = min_snr_step(
            unet, sched, z0, te(ids_of(texts))[0], g, recipe.min_snr_gamma, opt, params
        )
        with torch.no_grad():
            d = min(recipe.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        return loss

    def state() -> dict:
        return {"unet": unet.state_dict(), "te": te.state_dict(), "opt": opt.state_dict(),
                "ema": ema}  # fmt: skip

    def restore(saved: dict) -> None:
        unet.load_state_dict(saved["unet"])
        te.load_state_dict(saved["te"])
        opt.load_state_dict(saved["opt"])
        for e, v in zip(ema, saved["ema"], strict=True):
            e.copy_(v)

    unet.train()
    te.train()
    train_loop(
        step_fn, recipe.unet_steps, checkpoint=work / "unet_ckpt.pt", state=state,
        restore=restore, every=recipe.checkpoint_every, save_last=True, desc="unet",
        progress=progress,
    )  # fmt: skip
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    unet.eval()
    te.eval()
    return pipe


def train_testbed(
    out_dir: str | Path,
    recipe: TrainRecipe | None = None,
    data_dir: str | None = None,
    progress: bool = True,
) -> Path:
    """Train a toy pipeline and its evaluator; resumable from ``out_dir/work``.

    Args:
        out_dir: receives ``toy-sd/`` (diffusers pipeline), ``evaluator/`` and ``recipe.json``.
        recipe: the recipe; :class:`TrainRecipe` defaults when None.
        data_dir: a class-per-folder image directory instead of ToyCanvas.
        progress: show progress bars.

    Returns:
        The path of the exported pipeline directory.
    """
    from genunlearn.data import toycanvas
    from genunlearn.testbed.evaluator import train_evaluator
    from genunlearn.testbed.tokenizer import build_tokenizer

    recipe = recipe or TrainRecipe()
    out = Path(out_dir)
    rfile = out / "recipe.json"
    # (train.log: the background launcher's log, written before training starts)
    foreign = out.is_dir() and any(f.name != "train.log" for f in out.iterdir())
    if out.exists() and (not out.is_dir() or (foreign and not rfile.is_file())):
        raise GenUnlearnError(
            f"{out} exists and is not a testbed training directory (no recipe.json); choose a "
            "new --out directory (an existing one is only resumed, never overwritten)"
        )
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    meta = {"recipe": asdict(recipe), "data": str(data_dir) if data_dir else "toycanvas"}
    if rfile.is_file() and json.loads(rfile.read_text()) != meta:
        raise GenUnlearnError(
            f"{out} holds a training run with a different recipe ({rfile}); "
            "use a new --out directory or the same settings to resume"
        )
    rfile.write_text(json.dumps(meta, indent=1))
    final = out / "toy-sd"
    if (final / "world.json").is_file():
        log.info("%s is already trained; nothing to do", final)
        return final
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.time()
    data = _stage_data(work, recipe, data_dir, progress)
    heads = json.loads(str(data["heads"]))
    log.info("data: %d images (%.0fs)", len(data["images"]), time.time() - t0)

    ev_dir = out / "evaluator"
    if not (ev_dir / "evaluator.json").is_file():
        ev = train_evaluator(
            data["images"], data["labels"], heads, recipe.evaluator_steps,
            batch_size=recipe.evaluator_batch, seed=recipe.seed, progress=progress,
        )  # fmt: skip
        ev.save(ev_dir)
    log.info("evaluator done (%.0fs)", time.time() - t0)

    vae = _stage_vae(work, data, recipe, progress)
    lat = _stage_latents(work, vae, data)
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    log.info(
        "vae + latents done, scaling %.4f (%.0fs)", vae.config.scaling_factor, time.time() - t0
    )

    words = sorted({w for c in data["captions"] for w in str(c).lower().split()})
    words += sorted({w for v in heads.values() for lab in v for w in lab.lower().split()})
    tok_dir = work / "tokenizer"
    tok = build_tokenizer(words + list(toycanvas.KINDS), tok_dir, max_length=TOY_MAX_TOKENS)
    pipe = build_pipeline(tok, seed=recipe.seed, vae=vae)
    pipe = _stage_unet(work, pipe, lat, data, recipe, progress)
    log.info("unet done (%.0fs)", time.time() - t0)

    export_pipeline(pipe, final, ev_dir, heads, data_dir)
    (out / "train_time_s.txt").write_text(f"{time.time() - t0:.1f}\n")
    return final


def export_pipeline(pipe, final: Path, ev_dir: Path, heads: dict, data_dir: str | None) -> None:
    """Write the pipeline (fp16 safetensors), its evaluator and ``world.json`` into ``final``.

    The evaluator and world description live inside the pipeline directory (diffusers ignores
    folders that ``model_index.json`` does not list), so one path carries the whole testbed.
    """
    import shutil

    from genunlearn.models.evaluator import Evaluator

    pipe.to(torch.float16).save_pretrained(final, safe_serialization=True)
    pipe.to(torch.float32)
    shutil.copytree(ev_dir, final / "evaluator", dirs_exist_ok=True)
    world = {
        "name": "toycanvas" if data_dir is None else Path(data_dir).name,
        "heads": heads,
        "template": "a {colour} {object} in {style} style" if data_dir is None else "a {class}",
        # sampler defaults of the testbed: DDIM 25 steps, CFG 3 (best style fidelity of 2/3/4
        # on toy-sd: 96/95/93%, with 3 kept so that guidance-based methods have room to act)
        "sampling": {"steps": 25, "guidance": 3.0},
    }
    (final / "world.json").write_text(json.dumps(world, indent=1))
    Evaluator.load(final / "evaluator")  # fail loudly now if the export is unreadable
