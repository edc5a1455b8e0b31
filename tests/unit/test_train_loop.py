"""The testbed's one training loop: an interrupted and resumed run equals an uninterrupted one,
checkpoints are written atomically under a unique temporary name and read as plain tensors."""

from __future__ import annotations

import pytest
import torch

from genunlearn.testbed import loop
from genunlearn.testbed.loop import atomic_save, load_checkpoint, train_loop
from genunlearn.types import GenUnlearnError

STEPS = 7


class _Stop(Exception):
    """Stands for a crash or Ctrl-C in the middle of a run."""


def _run(ck, stop_at: int | None = None, every: int = 2, restore_opt: bool = True):
    """A tiny regression trained with AdamW and per-step noise; returns (weights, start step)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)

    def step_fn(step):
        if step == stop_at:
            raise _Stop
        g = torch.Generator().manual_seed(1_000 + step)
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) - x[:, :3] * 2).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def restore(saved):
        model.load_state_dict(saved["model"])
        if restore_opt:
            opt.load_state_dict(saved["opt"])

    start = train_loop(
        step_fn, STEPS, checkpoint=ck, every=every, save_last=True, progress=False,
        state=lambda: {"model": model.state_dict(), "opt": opt.state_dict()}, restore=restore,
    )  # fmt: skip
    return model.state_dict(), start


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    full, start = _run(tmp_path / "a.pt")
    assert start == 0 and load_checkpoint(tmp_path / "a.pt")["step"] == STEPS
    ck = tmp_path / "b.pt"
    with pytest.raises(_Stop):
        _run(ck, stop_at=5)
    assert load_checkpoint(ck)["step"] == 4  # the last checkpoint before the crash
    resumed, start = _run(ck)
    assert start == 4
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    # a finished run resumes to the end at once and changes nothing
    again, start = _run(ck)
    assert start == STEPS and all(torch.equal(full[k], again[k]) for k in full)
    # the comparison can fail: resuming without the optimiser's state ends elsewhere
    ck2 = tmp_path / "c.pt"
    with pytest.raises(_Stop):
        _run(ck2, stop_at=5)
    partial, _ = _run(ck2, restore_opt=False)
    assert not all(torch.equal(full[k], partial[k]) for k in full)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_atomic_save_never_touches_a_neighbouring_tmp_file(tmp_path):
    target = tmp_path / "unet_ckpt.pt"
    neighbour = tmp_path / "unet_ckpt.pt.tmp"  # the name a fixed-suffix writer would use
    neighbour.write_bytes(b"someone else's file")
    atomic_save({"step": 1, "w": torch.ones(2)}, target)
    assert neighbour.read_bytes() == b"someone else's file"
    assert load_checkpoint(target)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet_ckpt.pt", "unet_ckpt.pt.tmp"]


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "ck.pt"
    atomic_save({"step": 2}, target)
    with pytest.raises(Exception):  # noqa: B017 - torch.save's own error type
        atomic_save({"step": 3, "bad": lambda: 0}, target)  # a lambda cannot be pickled
    assert load_checkpoint(target)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_temporary_names_are_unique(tmp_path, monkeypatch):
    seen = []
    real = loop.os.replace

    def spy(src, dst):
        seen.append(src)
        return real(src, dst)

    monkeypatch.setattr(loop.os, "replace", spy)
    for i in range(3):
        atomic_save({"step": i}, tmp_path / "ck.pt")
    assert len(set(seen)) == 3
    assert all(str(tmp_path) == str(loop.Path(s).parent) for s in seen)


def test_a_checkpoint_needs_state_and_restore(tmp_path):
    with pytest.raises(GenUnlearnError, match="state and restore"):
        train_loop(lambda s: torch.zeros(()), 1, checkpoint=tmp_path / "x.pt", progress=False)
