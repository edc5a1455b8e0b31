"""Evaluate: a protocol on a model or run, the evaluator itself, or the base model's fidelity.

genunlearn eval evaluator            evaluator accuracy on fresh ToyCanvas images
genunlearn eval base                 toy-sd prompt fidelity (fidelity protocol)
genunlearn eval run --run DIR        a protocol on an erased run (default unlearncanvas)
genunlearn eval model --model M      a protocol on a model
"""

from __future__ import annotations

HELP = "evaluate a model, a run, the evaluator, or the base testbed"


def add_arguments(p) -> None:
    from genunlearn.cli.main import add_overwrite_argument, add_set_argument

    p.add_argument("target", choices=["evaluator", "base", "run", "model"])
    p.add_argument("--model", default="toy-sd")
    p.add_argument("--run", default=None, help="run directory (target 'run')")
    p.add_argument("--concept", action="append", default=None, help="erased concept(s)")
    p.add_argument("--protocol", default=None, help="metric family (genunlearn ls metrics)")
    p.add_argument("--images", type=int, default=2000, help="fresh images (target 'evaluator')")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    add_overwrite_argument(p)
    add_set_argument(p, "protocol config")


def run(args) -> int:
    import json
    from pathlib import Path

    from genunlearn import api
    from genunlearn.cli.main import check_output_file
    from genunlearn.config import parse_overrides

    check_output_file(args.json, args.overwrite, "--json")
    overrides = parse_overrides(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.target == "evaluator":
        from genunlearn.metrics.evaluator_accuracy import evaluator_accuracy

        res = evaluator_accuracy(
            api.load_model(args.model), args.images, overrides.get("seed", 12345)
        )
    elif args.target == "base":
        res = api.evaluate(args.model, None, args.protocol or "fidelity", **overrides)
    else:
        model = api.load_run(args.run) if args.target == "run" else api.load_model(args.model)
        concept = args.concept
        if args.target == "run" and not concept:
            from genunlearn.runs import read_record

            concept = read_record(args.run)["task"]["target"]
        task = tuple(concept) if isinstance(concept, list) and len(concept) > 1 else (
            concept[0] if isinstance(concept, list) else concept
        )  # fmt: skip
        res = api.evaluate(model, task, args.protocol or "unlearncanvas", **overrides)
    for k, v in res.items():
        print(f"{k:24s} {v:.4f}" if isinstance(v, float) else f"{k:24s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0
