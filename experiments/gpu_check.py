"""The GPU check: seconds per step and peak memory of seven methods, and sampling throughput, on
full-size SD-1.5 shapes with random weights, in float16 and bfloat16.

Nothing is downloaded: the pipeline comes from ``genunlearn.testbed.sd_configs`` with random
weights (the numbers depend on shapes, not values). Each method runs its own ``erase`` through
``gu.erase`` with the ``paper`` preset and only its step count (and the number of images it
generates before training) cut down, so a step is the paper's step: its batch size, its
partial DDIM trajectory (ESD, SPM), its mask and data (SalUn). The table prints

- ``s/step``: the training loop's seconds per step (``metrics.json``'s ``seconds_per_step``);
  closed-form methods (UCE) have no steps, their whole edit is timed instead;
- ``set-up``: the rest of the erase (anchor / forget images, masks, teachers);
- ``train est.``: s/step x the paper's step count, the training loop of a whole erase;
- ``peak``: peak memory of the whole erase (``torch.cuda.max_memory_allocated`` on a GPU, the
  process's peak RSS on a CPU), the model's own weights included;

next to UnlearnCanvas' efficiency table (A100, a whole erase, their Table 5). Sampling
throughput is images per second at the size's resolution with 50 DDIM steps and CFG.

Usage::

    python experiments/gpu_check.py                    # sd15 shapes on the first GPU (< 8 min)
    python experiments/gpu_check.py --size reduced     # seconds on a CPU (CI runs this)
"""

from __future__ import annotations

import argparse
import gc
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

#: (registry name, overrides of the paper preset, the paper's training steps)
CASES = {
    "esd-x": ("esd", {"train_method": "xattn"}, 1000),
    "esd-u": ("esd", {"train_method": "noxattn"}, 1000),
    "concept_ablation": ("concept_ablation", {"n_anchor_images": 4}, 200),
    "salun": ("salun", {"n_forget_images": 8, "n_remain_images": 8, "mask_batch_size": 2}, 500),
    "uce": ("uce", {}, 0),
    "mace": ("mace", {"n_images": 2}, 50),
    "spm": ("spm", {}, 3000),
}
#: UnlearnCanvas Table 5 (A100, one whole erase): seconds and GB, where the table has the method
UNLEARNCANVAS = {
    "esd-x": (6163, 17.8), "esd-u": (6163, 17.8), "concept_ablation": (734, 10.1),
    "salun": (667, 30.8), "uce": (434, 5.1),
}  # fmt: skip


def fields(cls) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


def build(size: str, device, dtype):
    """A random-weight SD pipeline of ``size`` in the adapter, on ``device`` in ``dtype``."""
    from genunlearn.models.sd import SDAdapter
    from genunlearn.testbed.sd_configs import build_random_pipeline

    pipe = build_random_pipeline(size, seed=0).to(device=device, dtype=dtype)
    return SDAdapter(pipe, f"random-{size}", f"random-{size}-seed0", sampling={"guidance": 7.5})


def sampling_throughput(model, n: int, steps: int) -> float:
    """Images per second: ``n`` images of one prompt, ``steps`` DDIM steps with CFG."""
    model.sample(["warm up"], n=1, steps=2, seed=0)
    sync(model.device)
    t = time.perf_counter()
    model.sample(["a photo of a cat"], n=n, steps=steps, seed=0, batch_size=n)
    sync(model.device)
    return n / (time.perf_counter() - t)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> list[dict]:
    import genunlearn as gu
    from genunlearn import registry
    from genunlearn.models.device import resolve_device

    registry.load_builtin()

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("sd15", "reduced"), default="sd15")
    ap.add_argument("--device", default=None, help="default: the first GPU, else the CPU")
    ap.add_argument("--dtypes", default=None, help="comma-separated (default: float16,bfloat16 "
                    "on a GPU, float32,bfloat16 on a CPU)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=3, help="training steps per method (>= 2)")
    ap.add_argument("--only", action="append", choices=sorted(CASES))
    ap.add_argument("--images", type=int, default=8, help="images for the throughput")
    ap.add_argument("--sample-steps", type=int, default=50)
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    dtypes = args.dtypes or ("float16,bfloat16" if device.type == "cuda" else "float32,bfloat16")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"size={args.size} device={device} ({name}) threads={torch.get_num_threads()}")
    task = gu.ErasureTask("van gogh", anchor="a painting")
    rows = []
    for dt in dtypes.split(","):
        model = build(args.size, device, getattr(torch, dt))
        for case in args.only or list(CASES):
            method, overrides, paper_steps = CASES[case]
            extra = {"steps": args.steps} if paper_steps else {}
            if "progress" in fields(registry.get("method", method).config):
                extra["progress"] = False
            t = time.perf_counter()
            run = gu.erase(model, method, task, preset="paper", samples=False,
                           **overrides, **extra)  # fmt: skip
            sync(device)
            total = time.perf_counter() - t
            eff = run.efficiency
            sps = eff.get("seconds_per_step")
            rows.append({
                "dtype": dt, "case": case, "seconds_per_step": sps,
                "setup_s": total - (sps or 0) * eff.get("train_steps", 0),
                "train_estimate_s": sps * paper_steps if sps else total,
                "peak_gb": eff["peak_memory_bytes"] / 1e9, "scope": eff["peak_memory_scope"],
            })  # fmt: skip
            del run
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append({"dtype": dt, "case": "sampling",
                     "images_per_s": sampling_throughput(model, args.images, args.sample_steps)})  # fmt: skip
        del model
        gc.collect()
    print_table(rows, args)
    return rows


def print_table(rows: list[dict], args) -> None:
    print("\n| dtype | method | s/step | set-up s | train est. s | peak GB | UnlearnCanvas A100 "
          "(s / GB, whole erase) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["case"] == "sampling":
            print(f"| {r['dtype']} | sampling ({args.sample_steps} steps, CFG) | "
                  f"{r['images_per_s']:.2f} images/s | | | | |")  # fmt: skip
            continue
        ref = UNLEARNCANVAS.get(r["case"])
        sps = f"{r['seconds_per_step']:.3f}" if r["seconds_per_step"] else "closed form"
        print(f"| {r['dtype']} | {r['case']} | {sps} | {r['setup_s']:.1f} | "
              f"{r['train_estimate_s']:.0f} | {r['peak_gb']:.2f} | "
              f"{f'{ref[0]:,} / {ref[1]}' if ref else '-'} |")  # fmt: skip


if __name__ == "__main__":
    main()
