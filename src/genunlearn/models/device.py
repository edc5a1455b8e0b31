"""Devices and precisions: what a user names, checked against what the machine offers.

``resolve_device`` turns ``None`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` / ``"mps"`` into a
``torch.device`` (``None`` = the first GPU if one is visible, else the CPU); ``resolve_dtype``
turns ``None`` / ``"float32"`` / ``"float16"`` / ``"bfloat16"`` (or a ``torch.dtype``) into a
``torch.dtype`` the device supports. The frozen weights of a model live in that dtype; trainable
parameters, optimizer state and losses stay float32 (``core/finetune.py`` upcasts what it trains
and runs the forward under autocast).
"""

from __future__ import annotations

import torch

from genunlearn.types import GenUnlearnError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def resolve_device(device=None) -> torch.device:
    """The device named by ``device`` (None: ``cuda:0`` if a GPU is visible, else ``cpu``).

    Raises:
        GenUnlearnError: an unknown device name, or a device this machine lacks (the message
            names the devices that are there).
    """
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str) and device.strip():
        name = device.strip().lower()
    else:
        raise GenUnlearnError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")
    try:
        d = torch.device(name)
    except (RuntimeError, ValueError):
        raise GenUnlearnError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N, mps") from None
    if d.type == "cpu":
        return torch.device("cpu")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise GenUnlearnError(
                f"device {device!r}: no GPU is visible to torch on this machine; use device='cpu'"
            )
        n = torch.cuda.device_count()
        index = 0 if d.index is None else d.index
        if index >= n:
            raise GenUnlearnError(
                f"device {device!r}: this machine has {n} GPU(s), cuda:0 .. cuda:{n - 1}"
            )
        return torch.device("cuda", index)
    if d.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise GenUnlearnError(f"device {device!r}: MPS is not available here; use 'cpu'")
        return torch.device("mps")
    raise GenUnlearnError(f"unsupported device {device!r}; valid: cpu, cuda, cuda:N, mps")


def resolve_dtype(dtype=None, device: torch.device | None = None) -> torch.dtype:
    """The floating-point dtype named by ``dtype`` (None: float32), checked against ``device``.

    Raises:
        GenUnlearnError: an unknown name, or a half precision the device cannot compute in.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    elif isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        key = _ALIASES.get(key, key)
        if key not in DTYPES:
            raise GenUnlearnError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        out = DTYPES[key]
    else:
        raise GenUnlearnError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if out not in DTYPES.values():
        raise GenUnlearnError(f"dtype {dtype!r} is not supported; valid: {', '.join(DTYPES)}")
    dev = device or torch.device("cpu")
    if out is torch.bfloat16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GenUnlearnError(
            f"dtype bfloat16: GPU {torch.cuda.get_device_name(dev)} cannot compute in it; use "
            "float16 or float32"
        )
    if out is torch.bfloat16 and dev.type == "mps":
        raise GenUnlearnError("dtype bfloat16 is not supported on mps here; use float16 or float32")
    return out


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype ("float32", "float16", "bfloat16", ...)."""
    return str(dtype).removeprefix("torch.")
