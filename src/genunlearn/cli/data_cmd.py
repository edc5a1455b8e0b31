"""ToyCanvas data: preview a grid of the world (rows: objects, columns: styles)."""

from __future__ import annotations

HELP = "preview the ToyCanvas world"


def add_arguments(p) -> None:
    from genunlearn.cli.main import add_overwrite_argument

    sub = p.add_subparsers(dest="action", required=True)
    pr = sub.add_parser(
        "preview", help="write a PNG grid: one row per object, one column per style"
    )
    pr.add_argument("--out", required=True, help="output PNG path")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--scale", type=int, default=4, help="pixel upscaling of the PNG")
    add_overwrite_argument(pr)
    sp = sub.add_parser("split", help="print the evaluation prompts of a concept: target / retain")
    sp.add_argument("--concept", required=True, action="append", help="target concept(s)")


def run(args) -> int:
    if args.action == "split":
        return _split(args.concept)
    from genunlearn.cli.main import check_output_file

    check_output_file(args.out, args.overwrite)
    import numpy as np
    import torch

    from genunlearn.core.images import save_grid
    from genunlearn.data import toycanvas as tc

    colours = list(tc.COLOURS)
    imgs = [
        tc.sample_labelled(o, s, colours[(i + j) % len(colours)], args.seed, 0)
        for i, o in enumerate(tc.OBJECTS)
        for j, s in enumerate(tc.STYLES)
    ]
    t = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    path = save_grid(t, args.out, nrow=len(tc.STYLES), scale=args.scale)
    print(f"wrote {path} ({len(tc.OBJECTS)} objects x {len(tc.STYLES)} styles)")
    return 0


def _split(targets: list[str]) -> int:
    from genunlearn.data.world import World

    world = World.toycanvas()
    has, without = world.split(targets)
    kinds = sorted({world.concept(t).kind for t in targets})
    print(f"target prompts ({len(has)}): UA is measured on these")
    for lab in has:
        print("  " + world.caption(lab))
    others = [k for k in world.heads if k not in kinds]
    print(f"retain prompts ({len(without)}): IRA ({', '.join(kinds)} head) and CRA "
          f"({', '.join(others)} heads) are measured on these")  # fmt: skip
    for lab in without:
        print("  " + world.caption(lab))
    return 0
