"""Attack efficacy and cost on toy-sd: victims x concepts x attacks, pre-ASR / ASR / seconds per cell.

Victims are an ``esd``-erased model and an inference-time ``negative_prompt`` defence (toy
presets), attacked by every attack with its ``toy`` preset, and the unmodified model
(``original``), measured with ``no_attack`` only: its pre-ASR says whether the judge sees the
concept at all, and an attack has nothing to do on prompts that already succeed. Each victim is
an ordinary benchmark spec with an ``attacks:`` axis, run by the bench runner into the same
``--out`` (one results file): finished (victim, concept) cells are skipped on a re-run, so an
interrupted run resumes where it stopped, and ``genunlearn report DIR/results.jsonl`` draws the
robustness matrix.

Printed per (victim, concept, attack): pre-ASR, ASR (UnlearnDiffAtk's bookkeeping: ASR counts
prompts that succeed before or after the attack), the attack's seconds and seconds per attacked
prompt (prompts that already succeed unmodified are not attacked), the same in CPU seconds of the
process (on a shared machine the wall clock measures the load; with ``OMP_NUM_THREADS=1`` the CPU
time is what the attack costs on one core), and the denoiser calls. Run with ``OMP_NUM_THREADS=1`` to measure the 2-core budget honestly.

Usage::

    OMP_NUM_THREADS=1 python experiments/attacks.py --out /work/bench_out/attacks
    python experiments/attacks.py --out DIR --concepts striped,star,heart --attacks p4d,pund \\
        --victims esd,original --n-prompts 20
    python experiments/attacks.py --out DIR --print-only      # the table of what is already done
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# cheap baselines first, so a partial cell still tells something when it is interrupted
ATTACKS = (
    "no_attack", "seed_search", "random_tokens", "ring_a_bell", "unlearndiffatk",
    "concept_inversion", "pund", "p4d",
)  # fmt: skip
VICTIMS = {
    "esd": {"name": "esd", "preset": "toy"},
    "negative_prompt": {"name": "negative_prompt", "preset": "toy"},
    "original": "original",
}


def build_spec(args, victim: str, concept: str) -> dict:
    """The grid of one victim and concept; every attack (``original``: no_attack only)."""
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    n = args.n_prompts
    if victim == "original" and not args.attack_original:
        attacks, n = ["no_attack"], args.n_prompts_original
    return {
        "name": f"attacks-{victim}",
        "models": [args.model],
        "methods": [VICTIMS[victim]],
        "concepts": [concept],
        "seeds": [args.seed],
        "attacks": attacks,
        "eval": {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False},
        "attack_config": {"n_prompts": n, "seed": args.seed},
    }


def table(rows: list[dict]) -> list[dict]:
    """One line per (victim label, concept, attack) with pre-ASR, ASR, seconds and cost."""
    cells: dict[tuple, dict] = defaultdict(dict)
    erasure: dict[tuple, dict] = defaultdict(dict)
    for r in rows:
        if r.get("status") != "ok":
            continue
        if r.get("attack") is None:
            erasure[(r["label"], r["target"])][r["metric"]] = r["value"]
        elif r["metric"] != "examples":
            cells[(r["label"], r["target"], r["attack"])][r["metric"]] = r["value"]
        else:
            cells[(r["label"], r["target"], r["attack"])]["examples"] = r.get("prompts") or []
    out = []
    for (label, target, attack), m in cells.items():
        n = m.get("n_prompts") or 0
        attacked = round(n * (1 - (m.get("pre_asr") or 0.0)))
        secs = m.get("cost_seconds")
        cpu = m.get("cost_cpu_seconds")
        out.append(
            {
                "victim": label, "concept": target, "attack": attack, "ua": erasure[(label, target)].get("ua"),
                "pre_asr": m.get("pre_asr"), "asr": m.get("asr"), "n": n, "attacked": attacked,
                "seconds": secs, "per_prompt": secs / attacked if secs and attacked else None,
                "cpu": cpu, "cpu_per_prompt": cpu / attacked if cpu and attacked else None,
                "calls": m.get("cost_denoiser_calls"), "example": (m.get("examples") or [""])[0],
            }
        )  # fmt: skip
    return out


def _pct(v) -> str:
    return "   -" if v is None else f"{100 * v:4.0f}"


def print_table(lines: list[dict], failed: list[dict]) -> None:
    for r in failed:
        print(f"FAILED {r['cell']}: {r.get('error')}")
    head = f"{'victim':16s} {'concept':9s} {'attack':18s} {'UA%':>4s} {'pre%':>4s} {'ASR%':>4s}"
    print(
        head + f" {'n':>3s} {'att':>3s} {'sec':>7s} {'s/prompt':>8s} {'cpu_s':>7s} {'cpu/pr':>7s}"
        f" {'calls':>7s}  example"
    )
    for r in lines:
        sec = "-" if r["seconds"] is None else f"{r['seconds']:7.1f}"
        per = "-" if r["per_prompt"] is None else f"{r['per_prompt']:8.1f}"
        calls = "-" if r["calls"] is None else f"{r['calls']:7.0f}"
        cpu = "-" if r["cpu"] is None else f"{r['cpu']:7.1f}"
        cpu_pp = "-" if r["cpu_per_prompt"] is None else f"{r['cpu_per_prompt']:7.1f}"
        print(
            f"{r['victim']:16s} {r['concept']:9s} {r['attack']:18s} {_pct(r['ua'])} "
            f"{_pct(r['pre_asr'])} {_pct(r['asr'])} {r['n']:3.0f} {r['attacked']:3d} {sec:>7s} "
            f"{per:>8s} {cpu:>7s} {cpu_pp:>7s} {calls:>7s}  {r['example'][:60]}"
        )
    raised = defaultdict(list)
    for r in lines:
        if r["victim"] != "original" and r["asr"] is not None and r["pre_asr"] is not None:
            raised[r["attack"]].append((r["asr"] > r["pre_asr"], r["victim"], r["concept"]))
    print("\nASR > pre-ASR on (victim, concept):")
    for attack, hits in raised.items():
        wins = [f"{v}/{c}" for ok, v, c in hits if ok]
        print(f"  {attack:18s} {len(wins)}/{len(hits)}  {', '.join(wins)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="results directory (resumable)")
    ap.add_argument("--concepts", default="star,striped,heart", help="comma-separated names")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--victims", default=",".join(VICTIMS), help=f"from {', '.join(VICTIMS)}")
    ap.add_argument("--n-prompts", type=int, default=6, help="attack prompts per concept")
    ap.add_argument(
        "--n-prompts-original", type=int, default=20, help="prompts of the original's pre-ASR"
    )
    ap.add_argument(
        "--attack-original", action="store_true", help="run every attack on the original too"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="toy-sd")
    ap.add_argument("--print-only", action="store_true", help="print the table, run nothing")
    args = ap.parse_args(argv)

    from genunlearn import GenUnlearnError, run_benchmark
    from genunlearn.bench.results import RESULTS, read_rows

    bad = set(args.victims.split(",")) - set(VICTIMS)
    if bad:
        sys.exit(f"error: unknown victims {sorted(bad)}; valid: {', '.join(VICTIMS)}")
    results = Path(args.out) / RESULTS
    if not args.print_only:
        try:
            # concept-major, so that a partial run already covers whole concepts
            for concept in filter(None, (c.strip() for c in args.concepts.split(","))):
                for victim in args.victims.split(","):
                    spec = build_spec(args, victim, concept)
                    results = run_benchmark(spec, Path(args.out), progress=False)
                    print(f"done: {victim} / {concept}", flush=True)
        except GenUnlearnError as e:
            sys.exit(f"error: {e}")
    rows = read_rows(results) if results.is_file() else []
    print_table(table(rows), [r for r in rows if r.get("status") == "failed"])


if __name__ == "__main__":
    main()
