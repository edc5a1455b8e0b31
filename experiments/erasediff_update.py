"""EraseDiff's toy preset under the bilevel update (default) or the official one, on protocol cells.

    python experiments/erasediff_update.py --cells checkered:0 cross:0 noisy:0 moon:1 [--official]

Prints one JSON line per cell: UA / IRA / CRA (%, 2 images per grid prompt) and the erase time.
"""

from __future__ import annotations

import argparse
import json
import time

import genunlearn as gu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=["checkered:0", "cross:0", "noisy:0", "moon:1"])
    ap.add_argument("--official", action="store_true", help="inner_grad=False (f* a constant)")
    args = ap.parse_args()
    model = gu.load_model("toy-sd")
    for cell in args.cells:
        concept, seed = cell.split(":")
        t0 = time.time()
        run = gu.erase(model, "erasediff", concept, seed=int(seed), samples=False,
                       inner_grad=not args.official)  # fmt: skip
        took = time.time() - t0
        s = gu.evaluate(run.model, concept, n_per_prompt=2, fid=False)
        row = {k: round(100 * s[k], 1) for k in ("ua", "ira", "cra")}
        print(json.dumps({"concept": concept, "seed": int(seed), **row, "erase_s": round(took)}))


if __name__ == "__main__":
    main()
