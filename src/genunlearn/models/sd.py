"""Adapter over diffusers Stable Diffusion pipelines (SD-1.x / 2.x layout; toy-sd is one of them).

``SDAdapter.from_directory`` loads any local diffusers SD directory, never the network. Parameter
names are prefixed by component (``unet.…``, ``text_encoder.…``, ``vae.…``) so one artifact can
hold changes to several components.

The sampler is our own loop over the pipeline's scheduler (DDIM by default): prompts are encoded
once, classifier-free guidance runs the conditional and unconditional branches in one batch, and
image ``i`` of every prompt starts from the noise of seed ``seed + i``, so results do not depend
on the batch size or on the other prompts in the call.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from genunlearn.config import is_seed
from genunlearn.models.base import update_digest
from genunlearn.types import Capability, GenUnlearnError

REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_HASHES: dict[tuple, str] = {}


def check_directory(path: Path) -> None:
    """Raise a clear error unless ``path`` is a diffusers SD pipeline directory."""
    if not path.is_dir():
        raise GenUnlearnError(f"model {str(path)!r}: no such directory (or use 'toy-sd')")
    index = path / "model_index.json"
    if not index.is_file():
        raise GenUnlearnError(
            f"{path} is not a diffusers pipeline directory: model_index.json is missing "
            f"(expected a StableDiffusionPipeline saved with save_pretrained, with {', '.join(REQUIRED)})"
        )
    try:
        listed = json.loads(index.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise GenUnlearnError(
            f"{index} is not valid JSON ({e}); the pipeline directory is damaged"
        ) from None
    if not isinstance(listed, dict):
        raise GenUnlearnError(
            f"{index} must hold a JSON object naming the pipeline components, got {type(listed).__name__}"
        )
    for comp in REQUIRED:
        if comp not in listed or not (path / comp).is_dir():
            raise GenUnlearnError(
                f"{path} is not a Stable Diffusion pipeline: component {comp!r} is missing "
                f"(needs {', '.join(REQUIRED)})"
            )


def _finite_number(v) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_sampling(prompts: list, n, steps, guidance, seed) -> None:
    """Clear errors for sampling arguments that would give meaningless images."""

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not prompts or any(not isinstance(p, str) for p in prompts):
        raise GenUnlearnError(f"prompts must be a non-empty list of texts, got {prompts!r}")
    if not is_int(n) or n < 1:
        raise GenUnlearnError(f"n (images per prompt) must be an integer >= 1, got {n!r}")
    if not is_int(steps) or steps < 1:
        raise GenUnlearnError(f"steps must be an integer >= 1, got {steps!r}")
    if not _finite_number(guidance):
        raise GenUnlearnError(f"guidance must be a finite number, got {guidance!r}")
    if not is_seed(seed, room=n):
        raise GenUnlearnError(f"seed must be an integer in 0 .. 2**63-1-n, got {seed!r}")


def _check_memattn_state(m) -> None:
    """MemAttn's inference state: ``{"c1": finite number, "mask": bool, "mask_eos": bool}``."""

    want = "a mapping with c1 (a finite number), mask and mask_eos (true/false)"
    if not isinstance(m, dict) or set(m) - {"c1", "mask", "mask_eos"}:
        raise GenUnlearnError(f"inference state memattn must be {want}, got {m!r}")
    c1 = m.get("c1", 1.25)
    if not _finite_number(c1):
        raise GenUnlearnError(f"inference state memattn must be {want}, got c1={c1!r}")
    if any(not isinstance(m.get(k, False), bool) for k in ("mask", "mask_eos")):
        raise GenUnlearnError(f"inference state memattn must be {want}, got {m!r}")


def directory_hash(path: Path) -> str:
    """sha256 over the weight files of a pipeline directory (cached per size and mtime)."""
    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix in {".safetensors", ".bin", ".json", ".txt"} and p.is_file()
    )
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _HASHES:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(path)).encode())
            with p.open("rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _quiet_loading() -> None:
    """No per-component loading bars from diffusers / transformers (our own bars are enough)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


class SDAdapter:
    """A Stable Diffusion pipeline behind the ModelAdapter protocol.

    Args:
        pipe: a ``diffusers.StableDiffusionPipeline`` (float32).
        model_id: "toy-sd" or the directory path it came from.
        base_hash: hash of the weights the pipeline was loaded from.
        world: the labelled world (ToyCanvas for toy-sd), or None for a plain checkpoint.
        evaluator_dir: directory of the world's evaluator, if any.
        sampling: default ``steps`` and ``guidance``.
    """

    def __init__(self, pipe, model_id, base_hash, world=None, evaluator_dir=None, sampling=None):
        self.pipe = pipe
        self.model_id = model_id
        self._hash = base_hash
        self.world = world
        self.evaluator_dir = evaluator_dir
        self.sampling = {"steps": 50, "guidance": 7.5, **(sampling or {})}
        self.inference: dict[str, Any] = {}
        # inference-time image filters (models/filtered.py) and which images the last sample()
        # call blocked (None without filters)
        self.output_filters: list = []
        self.last_blocked: torch.Tensor | None = None
        caps = {Capability.CROSS_ATTENTION, Capability.TRAINABLE_DENOISER}
        caps |= {Capability.TEXT_ENCODER, Capability.LATENT_VAE}
        if evaluator_dir is not None:
            caps.add(Capability.WORLD_EVALUATOR)
        self.capabilities = frozenset(caps)
        self._evaluator = None
        for m in (pipe.unet, pipe.text_encoder, pipe.vae):
            m.eval().requires_grad_(False)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_directory(cls, path: str | Path, model_id: str | None = None) -> SDAdapter:
        """Load a local diffusers SD directory (offline); toy worlds are picked up if present."""
        from diffusers import StableDiffusionPipeline

        from genunlearn.data.world import World

        p = Path(path).expanduser().resolve()
        check_directory(p)
        _quiet_loading()
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                p, dtype=torch.float32, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False, local_files_only=True, use_safetensors=True,
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "safetensors" in first:
                first += " (genunlearn loads .safetensors weights only: pickle files can run code)"
            raise GenUnlearnError(f"could not load the pipeline in {p}: {first}") from None
        pipe.set_progress_bar_config(disable=True)
        world = evaluator_dir = sampling = None
        if (p / "world.json").is_file():
            world = World.load(p / "world.json")
            sampling = json.loads((p / "world.json").read_text()).get("sampling")
            if (p / "evaluator").is_dir():
                evaluator_dir = p / "evaluator"
        return cls(pipe, model_id or str(p), directory_hash(p), world, evaluator_dir, sampling)

    # ----------------------------------------------------------------- components
    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    @property
    def text_encoder(self) -> torch.nn.Module:
        return self.pipe.text_encoder

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae

    @property
    def scheduler(self):
        return self.pipe.scheduler

    @property
    def base_hash(self) -> str:
        return self._hash

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        unet = self.pipe.unet.config
        return (unet.in_channels, unet.sample_size, unet.sample_size)

    @property
    def evaluator(self):
        """The world's evaluator (loaded on first use); an error if the model has none."""
        if self._evaluator is None:
            if self.evaluator_dir is None:
                raise GenUnlearnError(
                    f"model {self.model_id} has no world evaluator; evaluator-based metrics need "
                    "toy-sd or a pipeline trained by 'genunlearn testbed train'"
                )
            from genunlearn.models.evaluator import Evaluator

            self._evaluator = Evaluator.load(self.evaluator_dir)
        return self._evaluator

    def _components(self) -> dict[str, torch.nn.Module]:
        return {
            "unet": self.pipe.unet,
            "text_encoder": self.pipe.text_encoder,
            "vae": self.pipe.vae,
        }

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """All parameters, named ``component.parameter``."""
        for cname, module in self._components().items():
            for n, p in module.named_parameters():
                yield f"{cname}.{n}", p

    def weights_fingerprint(self) -> str:
        """sha256 of everything that decides this model's images: every parameter's bytes, the
        attached add-ons' tensors, the inference state and the output filters.

        Unlike :attr:`base_hash` (the files the model was loaded from, which every copy and every
        edit keeps), it changes whenever the weights do; caches of generated images key on it.
        """
        from genunlearn.models.addons import attached

        h = hashlib.sha256()
        for n, p in self.named_parameters():
            update_digest(h, n, p)
        for i, addon in enumerate(attached(self)):
            h.update(
                f"addon{i}|{addon.kind}|{json.dumps(addon.meta, sort_keys=True, default=str)}".encode()
            )
            for k in sorted(addon.tensors):
                update_digest(h, f"addon{i}.{k}", addon.tensors[k])
        h.update(json.dumps(self.inference, sort_keys=True, default=str).encode())
        for i, f in enumerate(self.output_filters):  # their settings and fixed tensors
            h.update(f"filter{i}|{type(f).__name__}".encode())
            for k, v in sorted(getattr(f, "__dict__", {}).items()):
                if torch.is_tensor(v):
                    update_digest(h, f"filter{i}.{k}", v)
                elif isinstance(v, (str, int, float, list, tuple)):
                    h.update(f"{k}={v!r}".encode())
        return h.hexdigest()

    def cross_attention_layers(self) -> dict[str, torch.nn.Module]:
        """UNet cross-attention modules (``…attn2``) by name, in model order."""
        return {n: m for n, m in self.pipe.unet.named_modules() if n.endswith("attn2")}

    # ----------------------------------------------------------------- numerics
    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states [B, L, D] (SD's ``encoder_hidden_states``)."""
        return self.pipe.text_encoder(self.tokenize(prompts))[0]

    def predict_noise(self, x_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser's epsilon prediction for latents ``x_t`` at timestep(s) ``t``."""
        return self.pipe.unet(x_t, t, encoder_hidden_states=cond, return_dict=False)[0]

    def initial_noise(self, n: int, seed: int) -> torch.Tensor:
        """Starting latents of images 0..n-1: image i uses seed ``seed + i``."""
        return torch.cat(
            [
                torch.randn(
                    (1, *self.latent_shape), generator=torch.Generator().manual_seed(seed + i)
                )
                for i in range(n)
            ]
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1]."""
        img = self.pipe.vae.decode(latents / self.pipe.vae.config.scaling_factor).sample
        return (img / 2 + 0.5).clamp(0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> scaled latents (posterior mean)."""
        z = self.pipe.vae.encode(images * 2 - 1).latent_dist.mean
        return z * self.pipe.vae.config.scaling_factor

    @torch.inference_mode()
    def sample(
        self,
        prompts: list[str] | str,
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
        negative_prompt: str | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> torch.Tensor:
        """Generate ``n`` images per prompt: float tensor [len(prompts) * n, 3, H, W] in [0, 1].

        Images are ordered prompt-major (all images of prompt 0 first). ``negative_prompt``
        defaults to the adapter's inference state (set by e.g. the ``negative_prompt`` method),
        else the empty prompt. Output filters installed on the adapter (e.g. Espresso's) then
        replace blocked images by black ones and record them in ``last_blocked``.
        """
        from tqdm.auto import tqdm

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        steps = self.sampling["steps"] if steps is None else steps
        guidance = self.sampling["guidance"] if guidance is None else guidance
        check_sampling(prompts, n, steps, guidance, seed)
        steps, guidance = int(steps), float(guidance)
        neg = negative_prompt if negative_prompt is not None else self.inference.get(
            "negative_prompt", ""
        )  # fmt: skip
        uniq = list(dict.fromkeys(prompts))
        emb = self.encode_prompt(uniq)
        emb_u = self.encode_prompt([neg])
        rows = [uniq.index(p) for p in prompts for _ in range(n)]
        noise = self.initial_noise(n, seed).repeat(len(prompts), 1, 1, 1)
        out = []
        chunks = range(0, len(rows), batch_size)
        for s in tqdm(chunks, desc="sampling", disable=not progress, leave=False):
            idx = rows[s : s + batch_size]
            cond = emb[idx]
            uncond = emb_u.expand(len(idx), -1, -1)
            sched = copy.deepcopy(self.pipe.scheduler)
            sched.set_timesteps(steps)
            lat = noise[s : s + len(idx)] * sched.init_noise_sigma
            with self._attention_wrapper([uniq[i] for i in idx]):
                for t in sched.timesteps:
                    x = sched.scale_model_input(torch.cat([lat, lat]), t)
                    e_u, e_c = self.predict_noise(x, t, torch.cat([uncond, cond])).chunk(2)
                    lat = sched.step(e_u + guidance * (e_c - e_u), t, lat).prev_sample
            out.append(self.decode(lat))
        # a normal tensor (not an inference tensor), so that callers may use it in autograd
        images = torch.cat(out).clone()
        if not torch.isfinite(images).all():
            raise GenUnlearnError(
                f"model {self.model_id} generated NaN or infinite images (its weights or "
                "inference state are broken, e.g. a diverged erasure); nothing can be measured "
                "on them"
            )
        self.last_blocked = None
        if self.output_filters:
            from genunlearn.models.filtered import apply_filters

            images, self.last_blocked = apply_filters(self.output_filters, images)
        return images

    # ----------------------------------------------------------------- copies and deltas
    def _clone(self, frozen: bool) -> SDAdapter:
        comps = dict(self.pipe.components)
        comps["unet"] = copy.deepcopy(self.pipe.unet)
        comps["text_encoder"] = copy.deepcopy(self.pipe.text_encoder)
        pipe = type(self.pipe)(**comps, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        new = SDAdapter(
            pipe, self.model_id, self._hash, self.world, self.evaluator_dir, dict(self.sampling)
        )
        new.inference = copy.deepcopy(self.inference)
        new.output_filters = list(self.output_filters)  # filters are read-only: share them
        new._evaluator = self._evaluator
        if frozen:
            for m in (pipe.unet, pipe.text_encoder):
                m.requires_grad_(False)
        return new

    def copy(self) -> SDAdapter:
        """An independent copy whose UNet and text encoder can be changed (VAE shared)."""
        return self._clone(frozen=False)

    def frozen_copy(self) -> SDAdapter:
        """A copy with gradients off everywhere: the teacher / reference of training methods."""
        return self._clone(frozen=True)

    def state_delta(self, reference: SDAdapter) -> dict[str, torch.Tensor]:
        """New values of the parameters that differ from ``reference`` (same architecture)."""
        ref = dict(reference.named_parameters())
        return {
            n: p.detach().clone().contiguous()
            for n, p in self.named_parameters()
            if not torch.equal(p.detach(), ref[n].detach())
        }

    def apply_delta(self, changed: dict[str, torch.Tensor]) -> None:
        """Overwrite the named parameters with ``changed`` (names must exist, shapes must match)."""
        params = dict(self.named_parameters())
        for n, v in changed.items():
            if n not in params:
                raise GenUnlearnError(f"artifact names parameter {n!r}, which this model lacks")
            if params[n].shape != v.shape:
                raise GenUnlearnError(
                    f"artifact tensor {n!r} has shape {tuple(v.shape)}, model has "
                    f"{tuple(params[n].shape)}"
                )
            with torch.no_grad():
                params[n].copy_(v.to(params[n].dtype))

    def apply_inference(self, state: dict[str, Any]) -> None:
        """Install inference-time wrapper state (``negative_prompt``, ``memattn``)."""
        if not isinstance(state, dict):
            raise GenUnlearnError(f"inference state must be a mapping, got {state!r}")
        unknown = set(state) - {"negative_prompt", "memattn"}
        if unknown:
            raise GenUnlearnError(
                f"unknown inference state {sorted(unknown)}; supported: negative_prompt, memattn"
            )
        if "negative_prompt" in state and not isinstance(state["negative_prompt"], str):
            raise GenUnlearnError(
                f"inference state negative_prompt must be text, got {state['negative_prompt']!r}"
            )
        if "memattn" in state:
            _check_memattn_state(state["memattn"])
        self.inference.update(state)

    def _attention_wrapper(self, prompts: list[str]):
        """Attention processors of the inference state for one CFG sampling loop (or none).

        ``memattn`` (``{"c1", "mask", "mask_eos"}``) installs MemAttn's processors
        (models/mem_attention.py); ``prompts`` are the conditional prompts of the batch rows.
        """
        state = self.inference.get("memattn")
        if not state:
            import contextlib

            return contextlib.nullcontext()
        from genunlearn.models.mem_attention import memattn_attention

        return memattn_attention(self, prompts, **state)
