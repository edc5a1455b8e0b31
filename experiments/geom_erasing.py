"""Geom-Erasing on the watermark testbed: watermark rate before/after and prompt fidelity.

Builds the watermark variant of toy-sd if ``--variant`` does not hold one yet (``genunlearn
testbed watermark``), erases the implicit watermark with ``geom_erasing`` and prints, for the
variant, the erased model and (for reference) the plain toy-sd: the watermark rate of their
generations (the ToyCanvas watermark detector, ``metrics.watermark``), its relative drop, and the
prompt fidelity (evaluator accuracy of object / style / colour on the same images, and their mean).
Issue 5's acceptance: relative drop >= 80 %, prompt fidelity >= 80 %.

Usage::

    python experiments/geom_erasing.py --variant /tmp/toy-sd-watermark --seeds 0 \\
        [--n-prompts 80 --n-per-prompt 2] [--set steps=300 lr=1e-4]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _value(text: str):
    import yaml

    return yaml.safe_load(text)


def main() -> None:
    import torch

    import genunlearn as gu
    from genunlearn.testbed.watermark import WatermarkRecipe, train_watermark_variant

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="runs/toy-sd-watermark", help="variant directory")
    ap.add_argument("--p", type=float, default=WatermarkRecipe.p, help="if it must be built")
    ap.add_argument("--seeds", default="0", help="erasure seeds, comma-separated")
    ap.add_argument("--n-prompts", type=int, default=80)
    ap.add_argument("--n-per-prompt", type=int, default=2)
    ap.add_argument("--eval-seed", type=int, default=0)
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method overrides")
    ap.add_argument("--no-reference", action="store_true", help="skip the plain toy-sd row")
    ap.add_argument(
        "--baselines", action="store_true", help="also: negative prompt alone, fine-tune alone"
    )
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    variant = Path(args.variant)
    if not (variant / "model_index.json").is_file():
        t0 = time.time()
        train_watermark_variant(variant, WatermarkRecipe(p=args.p))
        print(f"built the watermark variant in {time.time() - t0:.0f}s: {variant}")
    overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    ev = {"n_prompts": args.n_prompts, "n_per_prompt": args.n_per_prompt, "seed": args.eval_seed}

    def score(model) -> dict:
        return gu.evaluate(model, protocol="watermark", **ev)

    header = f"{'model':<28}{'wm_rate':>9}{'drop':>8}{'fidelity':>10}{'obj':>7}{'sty':>7}{'col':>7}{'sec':>7}"
    print(header)

    def row(name, r, base_rate=None, sec=float("nan")):
        drop = 1 - r["watermark_rate"] / base_rate if base_rate else float("nan")
        print(
            f"{name:<28}{r['watermark_rate']:>9.3f}{drop:>8.1%}{r['prompt_fidelity']:>10.3f}"
            f"{r['object_acc']:>7.3f}{r['style_acc']:>7.3f}{r['colour_acc']:>7.3f}{sec:>7.0f}"
        )

    if not args.no_reference:
        row("toy-sd (reference)", score(gu.load_model("toy-sd")))
    model = gu.load_model(variant)
    before = score(model)
    row("watermark variant", before)
    if args.baselines:  # the tokens as negative prompt without Geom-Erasing's fine-tuning
        neg = gu.erase(model, "negative_prompt", "logo top left", text="logo top left")
        row("negative prompt, no tuning", score(neg.model), before["watermark_rate"])
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.time()
        task = gu.ErasureTask(target="a watermark")
        run = gu.erase(model, "geom_erasing", task, preset=args.preset, seed=seed, **overrides)
        sec = time.time() - t0
        row(f"geom_erasing seed {seed}", score(run.model), before["watermark_rate"], sec)
        print(
            f"  negative prompt: {run.model.inference['negative_prompt']!r}; info: {run.result.info}"
        )
        if args.baselines:
            no_neg = run.model.copy()
            no_neg.inference = {}
            row(f"  (fine-tune only, seed {seed})", score(no_neg), before["watermark_rate"])


if __name__ == "__main__":
    main()
