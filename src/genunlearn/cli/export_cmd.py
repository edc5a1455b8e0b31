"""Export a run's erased model as plain diffusers files: a pipeline directory that
``StableDiffusionPipeline.from_pretrained`` loads without genunlearn, or one component's weights
(``--unet-only`` / ``--text-encoder-only``: a flat .safetensors state dict)."""

from __future__ import annotations

HELP = "export a run as a plain diffusers pipeline (or a UNet / text-encoder file)"


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, help="a run directory (genunlearn erase --out)")
    p.add_argument(
        "--out", required=True,
        help="new pipeline directory; a .safetensors file with --unet-only / --text-encoder-only",
    )  # fmt: skip
    which = p.add_mutually_exclusive_group()
    which.add_argument("--unet-only", action="store_true",
                       help="write only the UNet's full state dict (one .safetensors file)")  # fmt: skip
    which.add_argument("--text-encoder-only", action="store_true",
                       help="write only the text encoder's full state dict")  # fmt: skip
    p.add_argument("--dtype", default=None,
                   help="float32, float16 or bfloat16 for the written weights (default: the "
                   "dtype the run was made in)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier genunlearn export at --out (never other files)")  # fmt: skip
    p.add_argument("--allow-inference", action="store_true",
                   help="export the weights even though the run acts at inference time (negative "
                   "prompt, filters, attention hooks, add-ons); what is left out is listed in "
                   "genunlearn_inference.json")  # fmt: skip


def run(args) -> int:
    from genunlearn import api
    from genunlearn.models.export import inference_parts

    part = "unet" if args.unet_only else "text_encoder" if args.text_encoder_only else "pipeline"
    r = api.Run.load(args.run, dtype=args.dtype)
    left_out = inference_parts(r.model) if args.allow_inference else []
    path = r.export(
        args.out, part=part, overwrite=args.overwrite, allow_inference=args.allow_inference
    )
    print(f"wrote {path} ({part}, {str(r.model.dtype).removeprefix('torch.')})")
    for line in left_out:
        print(f"left out: {line}")
    return 0
