"""The one training loop of the testbed recipes: resumable, with atomic checkpoints.

:func:`train_loop` runs ``step_fn(step)`` for ``step`` in ``[start, steps)``; the step function
does one whole optimiser step and returns its loss. Every recipe derives its randomness from the
step number (a generator seeded from ``(seed, step)``), so a run that is interrupted and resumed
from its last checkpoint ends with exactly the weights of an uninterrupted run.

Checkpoints are plain containers of tensors written by :func:`atomic_save` (a uniquely named
temporary file in the target's directory, then ``os.replace``: a crash or a concurrent writer
never leaves a half-written checkpoint) and read back by :func:`load_checkpoint` with
``weights_only=True`` (a checkpoint can never run code).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from genunlearn.types import GenUnlearnError

log = logging.getLogger("genunlearn.testbed")


def load_checkpoint(path: str | Path):
    """A training checkpoint, read with ``weights_only=True`` (tensors and plain containers only,
    never code): anything else is refused with a clear error instead of being executed.

    Raises:
        GenUnlearnError: the file is damaged or holds anything but tensors and plain containers.
    """
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors have many types
        raise GenUnlearnError(
            f"checkpoint {path} cannot be read as plain tensors ({type(e).__name__}); it is "
            "damaged or was not written by genunlearn: delete it to restart that stage"
        ) from None


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a unique temporary file next to ``path``, then rename it over ``path``.

    The temporary name is unique (``mkstemp``), so two writers never share one; it lives in the
    target's directory, so the rename is atomic (same file system).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train_loop(
    step_fn: Callable[[int], torch.Tensor],
    steps: int,
    *,
    checkpoint: str | Path | None = None,
    state: Callable[[], dict] | None = None,
    restore: Callable[[dict], None] | None = None,
    every: int = 200,
    save_last: bool = False,
    desc: str = "train",
    progress: bool = True,
) -> int:
    """Run ``step_fn`` for the steps not yet done; resume from ``checkpoint`` when it exists.

    Args:
        step_fn: ``step -> loss``; one complete optimiser step whose randomness depends on
            ``step`` only (so that resuming reproduces an uninterrupted run).
        steps: total number of steps.
        checkpoint: file of the resumable state (None: no checkpoints, no resume).
        state: what to checkpoint (weights, optimiser state, EMA, ...); ``"step"`` is added.
        restore: puts a loaded checkpoint's state back (the inverse of ``state``).
        every: write a checkpoint after every ``every`` steps.
        save_last: also write one after the last step.
        desc: progress bar label.
        progress: show a progress bar.

    Returns:
        The step the run resumed from (0 for a fresh run).
    """
    from tqdm.auto import tqdm

    if checkpoint is not None and (state is None or restore is None):
        raise GenUnlearnError("train_loop: a checkpoint needs both state and restore")
    start = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        saved = load_checkpoint(checkpoint)
        restore(saved)
        start = int(saved["step"])
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
    for step in bar:
        loss = step_fn(step)
        bar.set_postfix(loss=f"{float(loss):.4f}")
        done = step + 1
        if checkpoint is not None and (done % every == 0 or (save_last and done == steps)):
            atomic_save({**state(), "step": done}, checkpoint)
            log.info("%s step %d loss %.4f", desc, done, float(loss))
    return start
