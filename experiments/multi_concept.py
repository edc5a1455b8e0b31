"""Erase many concepts in ONE call (MACE's claim) and print what survives, on toy-sd.

For each seed: one ``gu.erase`` with all the concepts as the task's targets, then the
UnlearnCanvas protocol on the multi-target task (UA over images of any erased concept; IRA on the
images that carry none of them, over the erased concepts' kinds; CRA over the other kind), and UA
of each concept on its own. Prints one line per concept and a summary line per seed.

Usage::

    python experiments/multi_concept.py --method mace \\
        --concepts flat,striped,dotted,checkered,wavy,circle,square,triangle,star,heart --seeds 0,1
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="mace")
    ap.add_argument("--concepts", required=True, help="comma-separated world concepts")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--model", default="toy-sd")
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--n-per-prompt", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method overrides")
    args = ap.parse_args(argv)

    import genunlearn as gu
    from genunlearn.config import parse_overrides

    model = gu.load_model(args.model)
    concepts = tuple(c.strip() for c in args.concepts.split(",") if c.strip())
    over = parse_overrides(args.set)
    ev = {"protocol": "unlearncanvas", "n_per_prompt": args.n_per_prompt, "fid": False}
    print(f"{args.method} ({args.preset}) erasing {len(concepts)} concepts at once: {concepts}")
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.time()
        run = gu.erase(model, args.method, gu.ErasureTask(concepts), preset=args.preset,
                       seed=seed, **over)  # fmt: skip
        sec = time.time() - t0
        for c in concepts:
            r = gu.evaluate(run.model, gu.ErasureTask(c), **ev)
            print(f"  seed {seed} {c:<10} UA {r['ua']:.1%}")
        r = gu.evaluate(run.model, gu.ErasureTask(concepts), **ev)
        print(
            f"seed {seed}: UA {r['ua']:.1%}  retain IRA {r['ira']:.1%}  CRA {r['cra']:.1%}  "
            f"({r['n_target_images']} target / {r['n_retain_images']} retain images; "
            f"erase {sec:.1f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
