"""Does half precision change what an erasure achieves? UA / IRA / CRA of toy presets on toy-sd
loaded in float32 and in bfloat16 (frozen weights in bfloat16, trained weights float32).

Each (method, concept) is erased once per dtype with the same seed and evaluated with the
UnlearnCanvas protocol at 2 images per grid prompt (the protocol tables' setting), on the model
in the dtype it was erased in. The last columns are the bfloat16 - float32 differences in points.

Usage::

    python experiments/precision.py                              # uce, esd on wavy and cross
    python experiments/precision.py --methods uce --concepts dotted heart
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> list[dict]:
    import genunlearn as gu

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["uce", "esd"])
    ap.add_argument("--concepts", nargs="+", default=["wavy", "cross"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    models = {dt: gu.load_model("toy-sd", device="cpu", dtype=dt) for dt in args.dtypes}
    ev = {"protocol": "unlearncanvas", "n_per_prompt": 2, "seed": 0, "fid": False}
    rows = []
    for method in args.methods:
        for concept in args.concepts:
            got = {}
            for dt, model in models.items():
                t = time.perf_counter()
                run = gu.erase(model, method, concept, preset="toy", seed=args.seed,
                               samples=False)  # fmt: skip
                s = gu.evaluate(run.model, concept, **ev)
                got[dt] = {k: 100 * s[k] for k in ("ua", "ira", "cra")}
                got[dt]["seconds"] = time.perf_counter() - t
            rows.append({"method": method, "concept": concept, **got})
            print_row(rows[-1], args.dtypes)
    return rows


def print_row(r: dict, dtypes: list[str]) -> None:
    a, b = dtypes[0], dtypes[-1]
    cells = [f"{r[d]['ua']:.1f} / {r[d]['ira']:.1f} / {r[d]['cra']:.1f}" for d in dtypes]
    diff = " / ".join(f"{r[b][k] - r[a][k]:+.1f}" for k in ("ua", "ira", "cra"))
    secs = " / ".join(f"{r[d]['seconds']:.0f}" for d in dtypes)
    print(f"| {r['method']} | {r['concept']} | {' | '.join(cells)} | {diff} | {secs} |", flush=True)


if __name__ == "__main__":
    main()
