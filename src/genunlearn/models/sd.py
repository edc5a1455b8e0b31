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

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from genunlearn.config import is_seed
from genunlearn.models.base import update_digest
from genunlearn.models.sd_files import check_directory, directory_hash, quiet_loading
from genunlearn.types import Capability, GenUnlearnError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: pixels decoded / encoded by the VAE in one call (VAE slicing): one 512x512 image, or 256 toy
#: 32x32 images; the VAE's activations at full resolution are the peak of sampling otherwise
VAE_PIXELS_PER_CALL = 512 * 512


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


def _same_values(a: torch.Tensor, ref: torch.Tensor) -> bool:
    """Whether ``a`` holds ``ref``'s values: the same storage, or equal once in ``ref``'s dtype
    (a parameter upcast to float32 for training that did not move is unchanged)."""
    if a.data_ptr() == ref.data_ptr() and a.dtype == ref.dtype and a.shape == ref.shape:
        return True
    return torch.equal(a.to(ref.device, ref.dtype), ref)


def aliased_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose parameters alias the original's storage (new
    ``Parameter`` objects; buffers shared), except parameters that require gradients, which are
    copied. Rebinding a copy's ``param.data`` then leaves the original untouched."""
    memo: dict[int, Any] = {}
    for p in module.parameters():
        data = p.detach().clone() if p.requires_grad else p.detach()
        memo[id(p)] = torch.nn.Parameter(data, requires_grad=False)
    for b in module.buffers():
        memo[id(b)] = b
    return copy.deepcopy(module, memo)


class SDAdapter:
    """A Stable Diffusion pipeline behind the ModelAdapter protocol.

    Device and precision: the pipeline's weights live on :attr:`device` in :attr:`dtype`. Every
    entry point (``encode_prompt``, ``predict_noise``, ``decode``, ``encode_images``) moves its
    inputs there and returns float32 on :attr:`device`, running under autocast when the dtype is
    half, so parameters that training upcast to float32 mix with half-precision frozen ones.
    Starting noise is drawn on the CPU from per-image seeds and moved (the same noise on every
    device); :meth:`sample` returns float32 images on the CPU. For v-prediction and x0-prediction
    checkpoints (SD-2.x) ``predict_noise`` converts the output to epsilon and :attr:`scheduler`
    is the epsilon view of the pipeline's scheduler, so every loss written for epsilon holds.

    Args:
        pipe: a ``diffusers.StableDiffusionPipeline``.
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
        # what inference-time methods install (registry.register_method's ``install``): JSON
        # state (``negative_prompt`` is read by sample(); other keys belong to their method),
        # context managers entered around every sampling loop, ``name -> fn(model, prompts)``
        # (e.g. attention processors), and image filters (models/filtered.py) with which images
        # the last sample() call blocked (None without filters)
        self.inference: dict[str, Any] = {}
        self.sampling_wrappers: dict[str, Any] = {}
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
        first = next(pipe.unet.parameters())
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        self.prediction_type = str(pipe.scheduler.config.get("prediction_type", "epsilon"))
        if self.prediction_type == "velocity":  # early SD-2 configs' name for v_prediction
            self.prediction_type = "v_prediction"
        if self.prediction_type not in PREDICTION_TYPES:
            raise GenUnlearnError(
                f"scheduler prediction_type {self.prediction_type!r} is not supported; valid: "
                f"{', '.join(PREDICTION_TYPES)}"
            )
        self._eps_scheduler = None
        self.memory: dict[str, Any] = {}  # what set_memory switched on (recorded with runs)

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_directory(
        cls, path: str | Path, model_id: str | None = None, *, device=None, dtype=None
    ) -> SDAdapter:
        """Load a local diffusers SD directory (offline); toy worlds are picked up if present.

        Args:
            path: the pipeline directory.
            model_id: the name runs record (default: the resolved path).
            device: ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` (None: the first GPU, else CPU).
            dtype: ``float32`` / ``float16`` / ``bfloat16`` for the weights (None: float32).
        """
        from diffusers import StableDiffusionPipeline

        from genunlearn.data.world import World
        from genunlearn.models.device import resolve_device, resolve_dtype

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        p = Path(path).expanduser().resolve()
        check_directory(p)
        quiet_loading()
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                p, dtype=dt, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False, local_files_only=True, use_safetensors=True,
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if "safetensors" in first:
                first += " (genunlearn loads .safetensors weights only: pickle files can run code)"
            raise GenUnlearnError(f"could not load the pipeline in {p}: {first}") from None
        pipe.set_progress_bar_config(disable=True)
        pipe.to(dev)
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
        """The scheduler in epsilon terms (the pipeline's own for epsilon-prediction models; for
        v- or x0-prediction the same schedule with ``prediction_type="epsilon"``, matching what
        :meth:`predict_noise` returns)."""
        if self.prediction_type == "epsilon":
            return self.pipe.scheduler
        if self._eps_scheduler is None:
            s = self.pipe.scheduler
            self._eps_scheduler = type(s).from_config(s.config, prediction_type="epsilon")
        return self._eps_scheduler

    def set_memory(
        self,
        *,
        gradient_checkpointing: bool | None = None,
        attention_slicing: str | int | None = None,
        optimizer_8bit: bool | None = None,
    ) -> None:
        """Opt-in memory savers (None leaves a setting as it is).

        Args:
            gradient_checkpointing: recompute UNet and text-encoder activations in the backward
                pass instead of storing them (less memory, about a third more time per step).
            attention_slicing: "auto", "max" or a slice size: attention computed a slice of
                heads at a time; "off" restores the default (PyTorch's scaled-dot-product
                attention, already memory-efficient where the device has a fused kernel).
            optimizer_8bit: fine-tuning methods use bitsandbytes' 8-bit Adam / AdamW on a GPU
                (``core.finetune``; an error names the package if it is missing).
        """
        if gradient_checkpointing is not None:
            if not isinstance(gradient_checkpointing, bool):
                raise GenUnlearnError(
                    f"gradient_checkpointing must be true or false, got {gradient_checkpointing!r}"
                )
            unet, text = (
                self.pipe.unet,
                self.pipe.text_encoder,
            )  # diffusers' and transformers' names
            if gradient_checkpointing:
                unet.enable_gradient_checkpointing()
                text.gradient_checkpointing_enable()
            else:
                unet.disable_gradient_checkpointing()
                text.gradient_checkpointing_disable()
            self.memory["gradient_checkpointing"] = gradient_checkpointing
        if attention_slicing is not None:
            ok = attention_slicing in ("auto", "max", "off") or (
                isinstance(attention_slicing, int) and not isinstance(attention_slicing, bool)
                and attention_slicing >= 1
            )  # fmt: skip
            if not ok:
                raise GenUnlearnError(
                    f"attention_slicing must be auto, max, off or a slice size >= 1, got "
                    f"{attention_slicing!r}"
                )
            if attention_slicing == "off":
                self.pipe.disable_attention_slicing()
            else:
                self.pipe.enable_attention_slicing(attention_slicing)
            self.memory["attention_slicing"] = attention_slicing
        if optimizer_8bit is not None:
            if not isinstance(optimizer_8bit, bool):
                raise GenUnlearnError(
                    f"optimizer_8bit must be true or false, got {optimizer_8bit!r}"
                )
            self.memory["optimizer_8bit"] = optimizer_8bit

    def autocast(self):
        """Autocast to :attr:`dtype` on :attr:`device` when it is half precision (else nothing):
        frozen half weights and float32 trained ones then mix in one forward."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

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

            self._evaluator = Evaluator.load(self.evaluator_dir).to(self.device)
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
        attached add-ons' tensors, the inference state, the sampling wrappers and the output
        filters.

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
        for name, fn in sorted(self.sampling_wrappers.items()):
            h.update(f"wrapper|{name}|{fn.__module__}.{fn.__qualname__}".encode())
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
        """Token ids [B, max_length] on :attr:`device`."""
        tok = self.tokenizer
        return tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)  # fmt: skip

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states [B, L, D] (SD's ``encoder_hidden_states``), float32."""
        with self.autocast():
            return self.pipe.text_encoder(self.tokenize(prompts))[0].float()

    def predict_noise(self, x_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser's epsilon prediction (float32) for latents ``x_t`` at timestep(s) ``t``.

        v- and x0-prediction outputs are converted with the schedule's alpha-bar at ``t``:
        eps = sqrt(a) v + sqrt(1 - a) x_t, and eps = (x_t - sqrt(a) x0) / sqrt(1 - a).
        """
        x = x_t.to(self.device)
        t = t.to(self.device) if torch.is_tensor(t) else t
        with self.autocast():
            out = self.pipe.unet(
                x.to(self.dtype), t, encoder_hidden_states=cond.to(self.device, self.dtype),
                return_dict=False,
            )[0].float()  # fmt: skip
        if self.prediction_type == "epsilon":
            return out
        a = self._alpha_bar(t, len(x)).to(x.dtype)
        x = x.float()
        if self.prediction_type == "v_prediction":
            return a.sqrt() * out + (1 - a).sqrt() * x
        return (x - a.sqrt() * out) / (1 - a).sqrt()

    def _alpha_bar(self, t, n: int) -> torch.Tensor:
        """alpha-bar of timestep(s) ``t`` as [n, 1, 1, 1] on :attr:`device`."""
        ac = self.pipe.scheduler.alphas_cumprod.to(self.device, torch.float32)
        idx = torch.as_tensor(t, device=self.device).long().reshape(-1)
        return ac[idx].expand(n).reshape(n, 1, 1, 1)

    def initial_noise(self, n: int, seed: int) -> torch.Tensor:
        """Starting latents of images 0..n-1 (float32 on :attr:`device`): image i uses seed
        ``seed + i``, drawn on the CPU, so every device starts from the same noise."""
        return torch.cat(
            [
                torch.randn(
                    (1, *self.latent_shape),
                    generator=torch.Generator("cpu").manual_seed(seed + i),
                    device="cpu",
                )
                for i in range(n)
            ]
        ).to(self.device)

    def randn(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Standard normal float32 noise of ``shape`` on :attr:`device`, drawn with a CPU
        ``generator`` (the per-step generators of ``core.finetune``), so runs are reproducible
        on every device."""
        return torch.randn(tuple(shape), generator=generator, device="cpu").to(self.device)

    def _vae_chunks(self, x: torch.Tensor, scale: int) -> list[torch.Tensor]:
        """``x`` split along the batch so that one VAE call sees <= VAE_PIXELS_PER_CALL pixels."""
        pixels = x.shape[-2] * x.shape[-1] * scale * scale
        per = max(1, VAE_PIXELS_PER_CALL // max(1, pixels))
        return list(x.split(per))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (float32 on :attr:`device`), a few images per VAE call."""
        vae = self.pipe.vae
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        out = []
        for z in self._vae_chunks(latents.to(self.device), scale):
            with self.autocast():
                img = vae.decode((z / vae.config.scaling_factor).to(vae.dtype)).sample.float()
            out.append((img / 2 + 0.5).clamp(0, 1))
        return torch.cat(out)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> scaled latents (posterior mean, float32 on :attr:`device`)."""
        vae = self.pipe.vae
        out = []
        for x in self._vae_chunks(images.to(self.device), 1):
            with self.autocast():
                z = vae.encode((x * 2 - 1).to(vae.dtype)).latent_dist.mean.float()
            out.append(z * vae.config.scaling_factor)
        return torch.cat(out)

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
            sched = copy.deepcopy(self.scheduler)
            sched.set_timesteps(steps, device=self.device)
            lat = noise[s : s + len(idx)] * sched.init_noise_sigma
            with self._sampling_wrappers([uniq[i] for i in idx]):
                for t in sched.timesteps:
                    x = sched.scale_model_input(torch.cat([lat, lat]), t)
                    e_u, e_c = self.predict_noise(x, t, torch.cat([uncond, cond])).chunk(2)
                    lat = sched.step(e_u + guidance * (e_c - e_u), t, lat).prev_sample
            out.append(self.decode(lat))
        # a normal tensor (not an inference tensor), so that callers may use it in autograd
        images = torch.cat(out).float().cpu().clone()
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
    def _clone(self, frozen: bool, share: bool) -> SDAdapter:
        comps = dict(self.pipe.components)
        clone = aliased_copy if share else copy.deepcopy
        comps["unet"] = clone(self.pipe.unet)
        comps["text_encoder"] = clone(self.pipe.text_encoder)
        pipe = type(self.pipe)(**comps, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        new = SDAdapter(
            pipe, self.model_id, self._hash, self.world, self.evaluator_dir, dict(self.sampling)
        )
        new.inference = copy.deepcopy(self.inference)
        new.sampling_wrappers = dict(self.sampling_wrappers)
        new.memory = dict(self.memory)  # module-level switches (checkpointing) came with the copy
        new.output_filters = list(self.output_filters)  # filters are read-only: share them
        new._evaluator = self._evaluator
        if frozen:
            for m in (pipe.unet, pipe.text_encoder):
                m.requires_grad_(False)
        return new

    def copy(self, share: bool = False) -> SDAdapter:
        """A copy whose UNet and text encoder can be changed without changing this model (the
        VAE is shared).

        Args:
            share: share weight storage instead of copying it (no weight memory): the copy's
                parameters are new ``Parameter`` objects over the same tensors. Whatever changes
                such a copy's weights must first give them storage of their own, as
                ``core.params.trainable`` / ``own_storage`` and :meth:`apply_delta` do; an
                in-place write that skips them reaches this model too. ``gu.erase`` works on a
                shared copy (the contract tests check that every method leaves its input and
                its teachers unchanged); keep the default for copies you edit yourself.
        """
        return self._clone(frozen=False, share=share)

    def frozen_copy(self) -> SDAdapter:
        """A copy with gradients off everywhere: the teacher / reference of training methods.

        It shares every tensor with this model (a teacher holds no second UNet), except the
        parameters that require gradients now (being trained), which it snapshots; methods give
        a weight storage of its own before writing it (``core.params.own_storage``).
        """
        return self._clone(frozen=True, share=True)

    def state_delta(self, reference: SDAdapter) -> dict[str, torch.Tensor]:
        """New values of the parameters that differ from ``reference`` (same architecture)."""
        ref = dict(reference.named_parameters())
        return {
            n: p.detach().clone().contiguous()
            for n, p in self.named_parameters()
            if not _same_values(p.detach(), ref[n].detach())
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
        for n, v in changed.items():  # new storage: copies that shared the old one keep it
            params[n].data = v.detach().to(params[n].device, params[n].dtype).clone()

    def apply_inference(self, state: dict[str, Any]) -> None:
        """Merge inference-time state into :attr:`inference` (JSON-friendly; saved with runs).

        ``negative_prompt`` (text) becomes the default negative prompt of :meth:`sample`; other
        keys belong to the method that set them (its sampling wrappers read them).
        """
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise GenUnlearnError(
                f"inference state must be a mapping with text keys, got {state!r}"
            )
        try:
            json.dumps(state, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise GenUnlearnError(
                f"inference state must be JSON-friendly (text, finite numbers, lists, mappings); "
                f"{e}"
            ) from None
        if "negative_prompt" in state and not isinstance(state["negative_prompt"], str):
            raise GenUnlearnError(
                f"inference state negative_prompt must be text, got {state['negative_prompt']!r}"
            )
        self.inference.update(state)

    @contextlib.contextmanager
    def _sampling_wrappers(self, prompts: list[str]):
        """Every sampling wrapper, entered for one CFG sampling loop (``prompts``: the
        conditional prompt of each batch row); all are exited again, also on errors."""
        with contextlib.ExitStack() as stack:
            for _, fn in sorted(self.sampling_wrappers.items()):
                stack.enter_context(fn(self, prompts))
            yield
