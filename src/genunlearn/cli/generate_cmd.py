"""Generate images from a model (or from an erased run) into one PNG grid."""

from __future__ import annotations

HELP = "generate an image grid from a model or a run"


def add_arguments(p) -> None:
    from genunlearn.cli.main import add_overwrite_argument

    p.add_argument("--model", default="toy-sd", help="toy-sd or a local diffusers directory")
    p.add_argument("--run", default=None, help="a run directory (its erased model)")
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--n", type=int, default=8, help="images per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--out", required=True, help="output PNG path")
    add_overwrite_argument(p)


def run(args) -> int:
    from genunlearn import api
    from genunlearn.cli.main import check_output_file
    from genunlearn.core.images import save_grid

    check_output_file(args.out, args.overwrite)

    model = api.load_run(args.run) if args.run else api.load_model(args.model)
    images = model.sample(
        args.prompt, n=args.n, steps=args.steps, guidance=args.guidance, seed=args.seed,
        negative_prompt=args.negative_prompt, progress=not args.quiet,
    )  # fmt: skip
    path = save_grid(images, args.out, nrow=args.n)
    print(f"wrote {path} ({len(images)} images)")
    return 0
