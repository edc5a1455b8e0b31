"""The ModelAdapter protocol: everything methods, attacks and metrics may ask of a model.

Family quirks (diffusers SD pipelines today; DDPM, GAN, VAE, image-to-image later) live only in
the adapters; code above ``models/`` talks to this protocol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from genunlearn.types import Capability


def update_digest(h: hashlib._Hash, name: str, t: torch.Tensor) -> None:
    """Feed one named tensor (name, dtype, shape, raw bytes) into a running hash."""
    t = t.detach().contiguous().cpu()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.view(-1).view(torch.uint8).numpy().data)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over named tensors in name order: equal exactly when names, dtypes, shapes and
    bytes are (run artifacts store it; adapters fingerprint their weights with the same bytes)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        update_digest(h, k, tensors[k])
    return h.hexdigest()


@runtime_checkable
class ModelAdapter(Protocol):
    """A generative model as genunlearn sees it."""

    model_id: str
    capabilities: frozenset[Capability]
    device: torch.device  # where the weights live; entry points return float32 tensors there
    dtype: torch.dtype  # the frozen weights' dtype (trained weights are float32)
    # where inference-time methods put their parts (see registry.register_method's ``install``)
    inference: dict[str, Any]
    sampling_wrappers: dict[str, Any]
    output_filters: list

    @property
    def denoiser(self) -> torch.nn.Module: ...

    @property
    def text_encoder(self) -> torch.nn.Module: ...

    @property
    def tokenizer(self) -> Any: ...

    @property
    def base_hash(self) -> str: ...

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor: ...

    def predict_noise(self, x_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor: ...

    def randn(self, shape, generator: torch.Generator) -> torch.Tensor: ...

    def tokenize(self, prompts: list[str]) -> torch.Tensor: ...

    def sample(
        self,
        prompts: list[str],
        n: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> torch.Tensor: ...

    def cross_attention_layers(self) -> dict[str, torch.nn.Module]: ...

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...

    def frozen_copy(self) -> ModelAdapter: ...

    def copy(self, share: bool = False) -> ModelAdapter: ...

    def state_delta(self, reference: ModelAdapter) -> dict[str, torch.Tensor]: ...

    def apply_delta(self, changed: dict[str, torch.Tensor]) -> None: ...

    def apply_inference(self, state: dict[str, Any]) -> None: ...
