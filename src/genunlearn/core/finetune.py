"""The one training loop every fine-tuning method uses.

``finetune(params, loss_fn, steps, lr, seed)`` calls ``loss_fn(step, generator)`` for a scalar
loss, steps the optimiser on ``params`` only, shows a progress bar and returns the loss history.
The generator is seeded from ``(seed, step)``, so a run is reproducible and resumable mid-way.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable

import torch

from genunlearn.types import GenUnlearnError

#: how the model being erased trains (set by ``gu.erase`` from the model, read by :func:`finetune`
#: so that no method has to pass it on): ``optimizer_8bit`` swaps Adam/AdamW for bitsandbytes'
#: 8-bit versions on a GPU; ``dtype`` is the model's frozen-weight dtype (float16 on CUDA gets a
#: gradient scaler, as mixed precision needs)
_OPTIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "finetune_options", default=None
)


def _options() -> dict:
    return _OPTIONS.get() or {}


@contextlib.contextmanager
def training_options(optimizer_8bit: bool = False, dtype: torch.dtype | None = None):
    """Run the block's :func:`finetune` calls with these options (see :data:`_OPTIONS`).

    Yields a list that receives ``(steps, seconds)`` of every :func:`finetune` call in the block
    (``gu.erase`` reports seconds per step from it).
    """
    record: list[tuple[int, float]] = []
    token = _OPTIONS.set({"optimizer_8bit": bool(optimizer_8bit), "dtype": dtype, "log": record})
    try:
        yield record
    finally:
        _OPTIONS.reset(token)


def _optimizer(name: str, plist, lr: float, weight_decay: float):
    """The optimiser of :func:`finetune` (8-bit Adam/AdamW where asked for and possible)."""
    opts = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if name not in opts:
        raise GenUnlearnError(f"optimizer must be one of {sorted(opts)}, got {name!r}")
    on_gpu = any(p.device.type == "cuda" for p in plist)
    if _options().get("optimizer_8bit") and name != "sgd" and on_gpu:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise GenUnlearnError(
                "optimizer_8bit needs the bitsandbytes package (pip install bitsandbytes); "
                "or train with the default 32-bit optimiser"
            ) from None
        cls = bnb.optim.Adam8bit if name == "adam" else bnb.optim.AdamW8bit
        return cls(plist, lr=lr, weight_decay=weight_decay)
    return opts[name](plist, lr=lr, weight_decay=weight_decay)


class DivergenceError(GenUnlearnError):
    """The loss became NaN or infinite; ``step`` is where training stopped."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


#: learning-rate schedules of :func:`finetune`
LR_SCHEDULES = ("constant", "cosine")


def finetune(
    params: dict[str, torch.nn.Parameter] | list[torch.nn.Parameter],
    loss_fn: Callable[[int, torch.Generator], torch.Tensor],
    steps: int,
    lr: float,
    seed: int | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    grad_clip: float | None = None,
    progress: bool = True,
    desc: str = "train",
    mask: dict[str, torch.Tensor] | None = None,
    lr_schedule: str = "constant",
) -> list[float]:
    """Minimise ``loss_fn`` over ``params``.

    Args:
        params: the trainable parameters (named dict or list); nothing else changes.
        loss_fn: ``(step, generator) -> scalar loss``.
        steps: optimisation steps.
        lr: learning rate.
        seed: seeds the per-step generators (None: torch's current seed, which ``gu.erase`` sets).
        optimizer: "adam" or "adamw" or "sgd".
        weight_decay: AdamW/SGD weight decay.
        grad_clip: clip the global gradient norm (None: no clipping).
        progress: show a progress bar.
        desc: progress bar label.
        mask: name -> 0/1 tensor multiplied into each gradient (SalUn-style saliency masks).
        lr_schedule: "constant", or "cosine" (the rate decays from ``lr`` to 0 over ``steps``, so
            the weights settle instead of ending wherever the last large steps left them).

    Returns:
        The loss of every step.
    """
    from tqdm.auto import tqdm

    if seed is None:
        seed = torch.initial_seed() % (2**31)
    named = params if isinstance(params, dict) else {str(i): p for i, p in enumerate(params)}
    plist = list(named.values())
    if lr_schedule not in LR_SCHEDULES:
        raise GenUnlearnError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    opt = _optimizer(optimizer, plist, lr, weight_decay)
    # float16 activations underflow small gradients: scale the loss (a no-op elsewhere)
    half = _options().get("dtype") == torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=half and any(p.is_cuda for p in plist))
    history: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        g = torch.Generator("cpu").manual_seed(int(seed) * 1_000_003 + step)
        loss = loss_fn(step, g)
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"{desc}: the loss is {float(loss.detach())} at step {step} of {steps}; training stopped "
                f"(try a lower learning rate than {lr})",
                step,
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # masks and clipping see the true gradients
        if mask is not None:
            for n, p in named.items():
                if p.grad is not None and n in mask:
                    p.grad.mul_(mask[n])
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(plist, grad_clip)
        if lr_schedule == "cosine":
            for grp in opt.param_groups:
                grp["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        scaler.step(opt)
        scaler.update()
        history.append(float(loss.detach()))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    if "log" in _options():
        _options()["log"].append((steps, time.perf_counter() - started))
    for p in plist:
        p.requires_grad_(False)
    # the last update is not followed by a loss evaluation: check the weights themselves
    bad = [n for n, p in named.items() if not torch.isfinite(p).all()]
    if bad:
        raise DivergenceError(
            f"{desc}: after {steps} steps {len(bad)} trained tensor(s) hold NaN or infinity "
            f"(first: {bad[0]}); training diverged (try a lower learning rate than {lr})",
            steps,
        )
    return history
