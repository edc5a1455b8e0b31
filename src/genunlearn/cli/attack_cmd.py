"""Attack an erased model (a run) or any model to see whether the concept comes back."""

from __future__ import annotations

HELP = "attack an erased run or a model; prints pre-ASR and ASR"


def add_arguments(p) -> None:
    from genunlearn.cli.main import add_overwrite_argument, add_set_argument

    p.add_argument("--attack", required=True, help="attack name (genunlearn ls attacks)")
    p.add_argument("--run", default=None, help="run directory of the erased model")
    p.add_argument("--model", default="toy-sd", help="model to attack when no --run is given")
    p.add_argument("--concept", default=None, help="target concept (default: the run's)")
    p.add_argument("--preset", default=None)
    p.add_argument("--out", default=None, help="write adversarial images (PNG) here")
    add_overwrite_argument(p)
    add_set_argument(p, "attack config")


def run(args) -> int:
    from genunlearn import api
    from genunlearn.cli.main import check_output_file
    from genunlearn.config import parse_overrides
    from genunlearn.types import GenUnlearnError

    check_output_file(args.out, args.overwrite)

    concept = args.concept
    if args.run:
        from genunlearn.runs import read_record

        rec = read_record(args.run)
        concept = concept or rec["task"]["target"]
        original = api.load_model(rec["base_model"])
        model = api.load_run(args.run, model=original)
    else:
        original = model = api.load_model(args.model)
    if not concept:
        raise GenUnlearnError("--concept is required when attacking a model without --run")
    res = api.attack(model, args.attack, concept, original=original, preset=args.preset,
                     **parse_overrides(args.set))  # fmt: skip
    print(f"{args.attack} on {concept}: pre-ASR {res.pre_asr:.3f}  ASR {res.asr:.3f}  "
          f"({len(res.prompts)} prompts, {res.cost})")  # fmt: skip
    if args.out and res.images is not None:
        from genunlearn.core.images import save_grid

        print(f"wrote {save_grid(res.images, args.out)}")
    return 0
