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
    wm = sub.add_parser(
        "watermark", help="fine-tune toy-sd on ToyCanvas with implicit watermarks into a new DIR"
    )
    wm.add_argument("--out", required=True, help="new output directory (the pipeline)")
    wm.add_argument("--p", type=float, default=None, help="fraction of watermarked images")
    wm.add_argument("--seed", type=int, default=None)
    wm.add_argument("--steps", type=int, default=None, help="UNet fine-tuning steps")
    wm.add_argument("--images", type=int, default=None, help="ToyCanvas images to render")
    wm.add_argument("--base", default="toy-sd", help="ToyCanvas pipeline to start from")
    mem = sub.add_parser(
        "memorize", help="fine-tune toy-sd to memorize K duplicated captioned images into a new DIR"
    )
    mem.add_argument("--out", required=True, help="new output directory (the pipeline)")
    mem.add_argument(
        "--k", type=int, default=None, help="number of memorized (caption, image) pairs"
    )
    mem.add_argument("--seed", type=int, default=None)
    mem.add_argument("--steps", type=int, default=None, help="fine-tuning steps")
    mem.add_argument(
        "--novel",
        choices=("mark", "none"),
        default=None,
        help="memorized images: ordinary renders plus a mark no caption names (default), or "
        "plain renders (the first design)",
    )
    mem.add_argument("--base", default="toy-sd", help="ToyCanvas pipeline to start from")


def run(args) -> int:
    import dataclasses
    import logging
    import subprocess
    import sys
    from pathlib import Path

    from genunlearn.testbed.toy_sd import TrainRecipe, train_testbed

    out = Path(args.out)
    if args.action == "watermark":
        from genunlearn.testbed.watermark import WatermarkRecipe, train_watermark_variant

        changes = {"p": args.p, "seed": args.seed, "steps": args.steps, "n_images": args.images}
        recipe = dataclasses.replace(
            WatermarkRecipe(), **{k: v for k, v in changes.items() if v is not None}
        )
        path = train_watermark_variant(out, recipe, base=args.base, progress=not args.quiet)
        print(f"pipeline: {path}  (load it with genunlearn.load_model({str(path)!r}))")
        return 0
    if args.action == "memorize":
        from genunlearn.testbed.memorize import MemorizeRecipe, train_memorizing

        changes = {"k": args.k, "seed": args.seed, "steps": args.steps, "novel": args.novel}
        recipe = dataclasses.replace(
            MemorizeRecipe(), **{k: v for k, v in changes.items() if v is not None}
        )
        path = train_memorizing(out, base=args.base, recipe=recipe, progress=not args.quiet)
        print(f"pipeline: {path}  (load it with genunlearn.load_model({str(path)!r}))")
        return 0
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
