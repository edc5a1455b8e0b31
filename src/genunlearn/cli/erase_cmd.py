"""Erase a concept with a method and write a run directory (artifact, config, samples)."""

from __future__ import annotations

HELP = "erase a concept with a method into a new run directory"


def add_arguments(p) -> None:
    from genunlearn.cli.main import add_set_argument

    p.add_argument("--model", default="toy-sd", help="toy-sd or a local diffusers directory")
    p.add_argument("--method", required=True, help="method name (genunlearn ls methods)")
    p.add_argument("--concept", required=True, action="append", help="target concept (repeatable)")
    p.add_argument("--anchor", default=None, help="anchor concept for methods that map to one")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--preset", default=None, help="toy (default on toy-sd) or paper")
    p.add_argument("--config", default=None, help="YAML file of config values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    add_set_argument(p, "config")


def run(args) -> int:
    import json

    from genunlearn import api
    from genunlearn.config import parse_overrides
    from genunlearn.types import ErasureTask

    task = ErasureTask(
        tuple(args.concept) if len(args.concept) > 1 else args.concept[0], args.anchor
    )
    r = api.erase(
        args.model, args.method, task, args.out, preset=args.preset, seed=args.seed,
        config=args.config, overwrite=args.overwrite, **parse_overrides(args.set),
    )  # fmt: skip
    print(f"run: {r.path}")
    print(json.dumps({"changed_tensors": len(r.result.changed), **r.efficiency}, indent=1))
    return 0
