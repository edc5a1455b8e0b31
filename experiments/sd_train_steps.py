"""Seconds per training step and peak memory of fine-tuning methods on full-size SD-1.5 shapes.

Builds SD-1.5's UNet, text encoder and VAE from configs with random weights (no download,
``genunlearn.testbed.sd_configs``), wraps them in the same ``SDAdapter`` a real checkpoint gets,
and runs each method's own ``erase`` function for a few steps: ESD-x (``esd``,
``train_method=xattn``), ESD-u (``esd``, ``train_method=noxattn``) and Concept Ablation
(``concept_ablation``, K/V). The training loop of every step is timed separately (the time from
one step's loss call to the next), so set-up work (the frozen teacher copy, anchor images) is
reported apart from the per-step cost.

What is measured is the method's real step: ESD's step includes its partial DDIM trajectory
(``ddim_steps`` is set to 2 here, so a step runs at most one guided sampling step before the
teacher and student passes; the paper's 50-step schedule costs on average 25 guided steps
more), Concept Ablation's step one student forward/backward plus the model-based target pass.
Anchor images are generated with 2 sampling steps instead of 50. Peak memory is measured per
method by ``core.efficiency.measure`` (process peak RSS, reset before each method; on a GPU
``torch.cuda.max_memory_allocated``), and includes the model itself (built
afresh for each method).

``--compare`` measures the memory-sharing change side by side: each method runs twice, each time
in a fresh process, once as the library is (``shared``: the frozen teacher shares every tensor
training does not change, the VAE decodes a 512x512 image at a time) and once with the previous
behaviour put back (``copied``: ``frozen_copy`` deep-copies the UNet and text encoder, the VAE
decodes a whole batch at once), and prints both rows with their ratios.

Usage::

    python experiments/sd_train_steps.py                      # sd15 shapes, all three
    python experiments/sd_train_steps.py --size reduced       # seconds, for a quick check
    python experiments/sd_train_steps.py --only esd-x
    python experiments/sd_train_steps.py --only esd-x --only concept_ablation --compare
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

CASES = {
    "esd-x": ("esd", {"train_method": "xattn", "ddim_steps": 2}),
    "esd-u": ("esd", {"train_method": "noxattn", "ddim_steps": 2}),
    "concept_ablation": ("concept_ablation", {"n_anchor_images": 2, "batch_size": 1}),
}


def timed_finetune(module, stamps: list[float]):
    """Wrap ``module.finetune`` so that every loss call and the end of training are stamped."""
    real = module.finetune

    def wrapper(params, loss_fn, *args, **kw):
        def stamped(step, g):
            stamps.append(time.perf_counter())
            return loss_fn(step, g)

        out = real(params, stamped, *args, **kw)
        stamps.append(time.perf_counter())
        return out

    module.finetune = wrapper
    return real


def main(argv: list[str] | None = None) -> None:
    import importlib

    from genunlearn import registry
    from genunlearn.api import _entry_config
    from genunlearn.core.efficiency import measure
    from genunlearn.models.sd import SDAdapter
    from genunlearn.testbed.sd_configs import build_random_pipeline
    from genunlearn.types import ErasureTask

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("sd15", "reduced"), default="sd15")
    ap.add_argument("--steps", type=int, default=3, help="training steps per method (>= 2)")
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    ap.add_argument("--target", default="van gogh")
    ap.add_argument("--compare", action="store_true", help="shared vs copied, side by side")
    ap.add_argument("--copied", action="store_true", help="(internal) the previous behaviour")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="the opt-in memory saver (SDAdapter.set_memory)")  # fmt: skip
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args)
    if args.copied:
        previous_behaviour()

    print(f"size={args.size} threads={torch.get_num_threads()}")
    task = ErasureTask(args.target, anchor="a painting")
    for case in args.only or list(CASES):
        method, overrides = CASES[case]
        entry = registry.get("method", method)
        cfg = _entry_config(
            entry, "paper", None, {**overrides, "steps": args.steps, "progress": False}
        )
        mod = importlib.import_module(entry.fn.__module__)
        stamps: list[float] = []
        real = timed_finetune(mod, stamps)
        # a fresh model per method (not a copy next to the original), so that peak memory is
        # the method's own: the model, its frozen teacher if any, gradients and optimiser state
        t0 = time.perf_counter()
        work = SDAdapter(build_random_pipeline(args.size, seed=0), f"random-{args.size}",
                         f"random-{args.size}-seed0", sampling={"steps": 2, "guidance": 7.5})  # fmt: skip
        if args.gradient_checkpointing:
            work.set_memory(gradient_checkpointing=True)
        print(f"{case}: model built in {time.perf_counter() - t0:.1f} s")
        torch.manual_seed(0)
        t = time.perf_counter()
        try:
            with measure() as eff:
                entry.fn(work, task, cfg)
        finally:
            mod.finetune = real
        total = time.perf_counter() - t
        steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        n_train = sum(p.numel() for n, p in work.named_parameters() if n in _trained(work, cfg))
        print(
            f"{case:18s} trained params {n_train:>12,}  set-up {stamps[0] - t:6.1f} s  "
            f"step {statistics.median(steps):6.1f} s (median of {len(steps)}; "
            f"min {min(steps):.1f}, max {max(steps):.1f})  total {total:6.1f} s  "
            f"peak memory {eff['peak_memory_bytes'] / 2**20:.0f} MiB ({eff['peak_memory_scope']})"
        )
        del work
        gc.collect()


def previous_behaviour() -> None:
    """Put back what the memory change replaced: deep-copied teachers, whole-batch VAE calls."""
    import copy

    from genunlearn.models import sd

    sd.aliased_copy = copy.deepcopy
    sd.VAE_PIXELS_PER_CALL = 2**62


def compare(args) -> None:
    """Each case as ``shared`` and as ``copied``, each in its own process (own peak RSS)."""
    import subprocess
    import sys

    results = {}
    for case in args.only or list(CASES):
        for variant in ("shared", "copied"):
            cmd = [sys.executable, __file__, "--size", args.size, "--steps", str(args.steps),
                   "--only", case, "--target", args.target] + (["--copied"] if variant == "copied" else [])  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            line = [ln for ln in out.splitlines() if ln.startswith(case)][-1]
            step = float(line.split(" step ")[1].split()[0])
            peak = float(line.split("peak memory ")[1].split()[0])
            results[case, variant] = (step, peak)
            print(f"{variant:6s} {line}", flush=True)
    print("\n| method | step s (shared / copied, ratio) | peak MiB (shared / copied) |")
    print("|---|---|---|")
    for case in args.only or list(CASES):
        (s1, m1), (s0, m0) = results[case, "shared"], results[case, "copied"]
        print(f"| {case} | {s1:.1f} / {s0:.1f} ({s1 / s0:.2f}) | {m1:.0f} / {m0:.0f} |")


def _trained(model, cfg) -> set[str]:
    from genunlearn.core.params import select_parameters

    sel = getattr(cfg, "train_method", None) or getattr(cfg, "parameter_group", "kv")
    return set(select_parameters(model, sel))


if __name__ == "__main__":
    main()
