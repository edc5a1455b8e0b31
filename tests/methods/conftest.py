"""Fixtures for method tests: a method run up to its first training loss, with a stand-in for
the training loop that records that loss and its gradients instead of training."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pytest
import torch

#: seed of the generator the recorded ``loss_fn(0, generator)`` call gets; tests redraw the
#: step's batch from it
STEP_SEED = 11
#: seed of the generator the nudge of the trained weights draws from
NUDGE_SEED = 7


class FirstStep(NamedTuple):
    """What :func:`first_loss` returns."""

    model: Any  # the working copy the method trained (nudged weights, attached adapters)
    params: Any  # the trainable parameters the method handed to ``finetune``
    loss: torch.Tensor  # the step-0 loss, detached
    grads: tuple[torch.Tensor, ...] | None  # its gradient w.r.t. ``params`` (None: not asked)
    seed: int  # the seed of the step's generator
    cfg: Any  # the method's config


class _Stop(Exception):
    """Raised by the stand-in training loop once it has taken the first loss."""


@pytest.fixture
def first_loss(monkeypatch):
    """``run(method, model, task, **options)``: run ``method`` on a copy of ``model`` up to its
    first training loss and return a :class:`FirstStep`.

    The method's ``finetune`` is replaced by a stand-in that, on the call it records, nudges the
    trainable weights (in order, from a generator seeded :data:`NUDGE_SEED`), calls
    ``before_loss()``, takes ``loss_fn(0, generator seeded STEP_SEED)`` and its gradients, and
    stops the method. ``torch.manual_seed(0)`` is set before the method runs.

    Args of ``run``:
        method: registry name of the method.
        model: the model to copy (the copy is trained; ``model`` stays as it is).
        task: the erasure task.
        cfg: a config to use as is; None: the ``smoke`` preset with ``overrides``.
        nudge: a float: each weight moves by that multiple of its own std times a standard
            normal draw, so the student no longer equals the frozen original and a prediction
            taken from the wrong one shows; ``f(param, draw) -> delta`` for another nudge (e.g.
            an absolute scale); None: no nudge.
        before_loss: called after the nudge, before the loss (to record state the loss sees).
        earlier: one callable per ``finetune`` call before the recorded one (a method with
            stages): it gets ``(params, loss)``, ``loss`` that call's first loss taken the same
            way, and its return value is what ``finetune`` returns.
        grads: take the gradients (False where the loss does not reach every parameter).
        **overrides: config overrides on top of the ``smoke`` preset.
    """
    from genunlearn import registry
    from genunlearn.config import build_config

    def run(
        method: str,
        model,
        task,
        *,
        cfg=None,
        nudge: float | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        before_loss: Callable[[], None] | None = None,
        earlier: Sequence[Callable[[Any, torch.Tensor], Any]] = (),
        grads: bool = True,
        **overrides,
    ) -> FirstStep:
        entry = registry.get("method", method)
        if cfg is None:
            cfg = build_config(entry.config, entry.presets["smoke"], overrides)
        elif overrides:
            raise TypeError("first_loss: pass either cfg or overrides, not both")
        stages, out = list(earlier), {}

        def fake_finetune(params, loss_fn, steps, lr, **kw):
            if stages:
                return stages.pop(0)(params, loss_fn(0, torch.Generator().manual_seed(STEP_SEED)))
            plist = list(params.values()) if isinstance(params, dict) else list(params)
            if nudge is not None:
                shift = nudge if callable(nudge) else (lambda p, z: nudge * p.std() * z)
                g = torch.Generator().manual_seed(NUDGE_SEED)
                with torch.no_grad():
                    for p in plist:
                        p.add_(shift(p, torch.randn(p.shape, generator=g)))
            if before_loss is not None:
                before_loss()
            loss = loss_fn(0, torch.Generator().manual_seed(STEP_SEED))
            out.update(
                params=params,
                loss=loss.detach(),
                grads=torch.autograd.grad(loss, plist) if grads else None,
            )
            raise _Stop

        # the method's own module: its ``finetune`` name is the one the method calls
        monkeypatch.setattr(sys.modules[entry.fn.__module__], "finetune", fake_finetune)
        work = model.copy()
        torch.manual_seed(0)
        with pytest.raises(_Stop):
            entry.fn(work, task, cfg)
        assert not stages, f"{method} called finetune fewer times than expected"
        return FirstStep(work, out["params"], out["loss"], out["grads"], STEP_SEED, cfg)

    return run
