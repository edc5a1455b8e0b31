"""Upper bound for ConceptPrune on a model: zero a whole hooked module and see what survives.

ConceptPrune zeroes a selection of the weights of one Linear per transformer block (the
``hook_module``: ``ff.net.2`` by default). This script zeroes *all* of them, in every block, and
prints UnlearnCanvas UA / IRA / CRA per concept. If a concept survives with everything removed,
no selection of those weights can erase it: the concept reaches the image by another path.

Usage::

    python experiments/prune_bound.py --concepts star,striped,heart [--hook ffn] [--n-per-prompt 1]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    import torch

    import genunlearn as gu
    from genunlearn.methods.concept_prune import HOOKS, pruned_layers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-sd")
    ap.add_argument("--concepts", default="star,striped,heart")
    ap.add_argument("--hook", default="ffn", choices=sorted(HOOKS))
    ap.add_argument("--n-per-prompt", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    model = gu.load_model(args.model)
    layers = pruned_layers(model, args.hook)
    with torch.no_grad():
        for lin in layers.values():
            lin.weight.zero_()
    n = sum(lin.weight.numel() for lin in layers.values())
    print(f"zeroed {HOOKS[args.hook]} in {len(layers)} blocks ({n:,} weights)")
    print(f"{'concept':<12}{'UA':>6}{'IRA':>6}{'CRA':>6}")
    for concept in args.concepts.split(","):
        r = gu.evaluate(
            model,
            gu.ErasureTask(target=concept),
            protocol="unlearncanvas",
            n_per_prompt=args.n_per_prompt,
            fid=False,
        )
        print(f"{concept:<12}{r['ua']:>6.0%}{r['ira']:>6.0%}{r['cra']:>6.0%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
