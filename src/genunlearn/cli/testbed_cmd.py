"""Train a toy pipeline and its evaluator (ToyCanvas by default, or your own image folder).

Stages (data -> evaluator -> VAE -> latents -> UNet + text encoder -> export) checkpoint under
OUT/work; running the same command again resumes. --background detaches and logs to OUT/train.log.
"""

from __future__ import annotations

HELP = "train the toy-sd testbed (or a toy pipeline on your image folder)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    tr = sub.add_parser("train", help="train (resumable); writes OUT/toy-sd with its evaluator")
    tr.add_argument("--out", required=True, help="output directory (resumes if it holds a run)")
    tr.add_argument(
        "--data", default=None, help="class-per-folder image directory instead of ToyCanvas"
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--images", type=int, default=None, help="ToyCanvas images to render")
    tr.add_argument("--evaluator-steps", type=int, default=None)
    tr.add_argument("--vae-steps", type=int, default=None)
    tr.add_argument("--unet-steps", type=int, default=None)
    tr.add_argument("--background", action="store_true", help="detach; log to OUT/train.log")


def run(args) -> int:
    import dataclasses
    import logging
    import subprocess
    import sys
    from pathlib import Path

    from genunlearn.models.toy import TrainRecipe, train_testbed

    out = Path(args.out)
    if args.background:
        out.mkdir(parents=True, exist_ok=True)
        argv = [a for a in sys.argv[1:] if a != "--background"]
        log = (out / "train.log").open("a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "genunlearn.cli.main", *argv],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        print(f"training in the background (pid {proc.pid}); log: {out / 'train.log'}")
        return 0
    changes = {
        "seed": args.seed,
        "n_images": args.images,
        "evaluator_steps": args.evaluator_steps,
        "vae_steps": args.vae_steps,
        "unet_steps": args.unet_steps,
    }
    recipe = dataclasses.replace(
        TrainRecipe(), **{k: v for k, v in changes.items() if v is not None}
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = train_testbed(out, recipe, data_dir=args.data, progress=not args.quiet)
    print(f"pipeline: {path}  (load it with genunlearn.load_model({str(path)!r}))")
    return 0
