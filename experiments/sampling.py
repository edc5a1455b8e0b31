"""Images per second: genunlearn's sampler against diffusers' StableDiffusionPipeline.__call__.

Both run in the same process on the same pipeline, with the same prompts, number of images, steps
and guidance scale, and the pipeline's own scheduler, after one warm-up call each. genunlearn's
``SDAdapter.sample`` encodes each distinct prompt once and batches the conditional and
unconditional branches; diffusers' ``__call__`` is timed with ``output_type="pt"`` so neither
side pays for PIL conversion.

The default model is the built-in ``toy-sd`` (8x8 latents, 32x32 images). If its weights are not
installed, pass ``--model PATH`` to any local diffusers SD directory, for instance one written by
``genunlearn.testbed.sd_configs.save_random_pipeline`` (``--make-reduced PATH`` writes one).

Usage::

    python experiments/sampling.py                       # toy-sd, 4 prompts x 16 images, 25 steps
    python experiments/sampling.py --make-reduced /tmp/sd-reduced
    python experiments/sampling.py --model /tmp/sd-reduced --prompts 2 --n 4 --steps 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

PROMPTS = (
    "a red star in striped style",
    "a blue circle in dotted style",
    "a green heart in flat style",
    "a yellow square in checkered style",
    "a purple moon in wavy style",
    "a orange arrow in gradient style",
    "a cyan ring in outlined style",
    "a pink diamond in noisy style",
)


def load(model: str | None):
    """The adapter for ``model`` (default toy-sd), with a clear exit if it cannot be loaded."""
    import genunlearn

    name = model or "toy-sd"
    try:
        return genunlearn.load_model(name)
    except genunlearn.GenUnlearnError as e:
        hint = "" if model else " (pass --model PATH, e.g. a directory from --make-reduced PATH)"
        sys.exit(f"cannot load {name!r}: {e}{hint}")


def timed(fns, repeats: int) -> list[list[float]]:
    """Wall times of each function over ``repeats`` rounds (after the caller's warm-up).

    The functions alternate within a round (ABBA), so a drift in machine load hits both alike.
    """
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        # ABBA order: every other round runs the functions in reverse, so that neither side
        # always follows the other (allocator and cache state after a big call favour the next)
        order = list(enumerate(fns)) if r % 2 == 0 else list(enumerate(fns))[::-1]
        for i, fn in order:
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="pipeline directory (default: toy-sd)")
    ap.add_argument("--make-reduced", metavar="PATH", default=None,
                    help="write a reduced random SD pipeline to PATH, then benchmark it")  # fmt: skip
    ap.add_argument("--prompts", type=int, default=4, help=f"distinct prompts (<= {len(PROMPTS)})")
    ap.add_argument("--n", type=int, default=16, help="images per prompt")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeats", type=int, default=6, help="timed rounds per sampler (best and median printed)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--prompts must be between 1 and {len(PROMPTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = args.model
    if args.make_reduced:
        from genunlearn.testbed.sd_configs import save_random_pipeline

        model = str(save_random_pipeline(args.make_reduced, "reduced", seed=args.seed))
    adapter = load(model)
    pipe = adapter.pipe
    prompts = list(PROMPTS[: args.prompts])
    size = adapter.latent_shape[-1] * pipe.vae_scale_factor
    total = len(prompts) * args.n
    print(
        f"model={adapter.model_id} image={size}x{size} prompts={len(prompts)} n={args.n} "
        f"images={total} steps={args.steps} guidance={args.guidance} "
        f"threads={torch.get_num_threads()} scheduler={type(pipe.scheduler).__name__}"
    )

    def ours():
        return adapter.sample(prompts, n=args.n, steps=args.steps, guidance=args.guidance,
                              seed=args.seed)  # fmt: skip

    def theirs():
        with torch.no_grad():
            return pipe(
                prompt=prompts, num_images_per_prompt=args.n, num_inference_steps=args.steps,
                guidance_scale=args.guidance, height=size, width=size, output_type="pt",
                generator=torch.Generator().manual_seed(args.seed),
            ).images  # fmt: skip

    a, b = ours(), theirs()  # warm-up, and a check that both produce the same kind of output
    if a.shape != b.shape:
        sys.exit(f"shape mismatch: genunlearn {tuple(a.shape)} vs diffusers {tuple(b.shape)}")
    runs_ours, runs_theirs = timed([ours, theirs], args.repeats)
    for stat, pick in (("best", min), ("median", statistics.median)):
        t_ours, t_theirs = pick(runs_ours), pick(runs_theirs)
        print(f"[{stat} of {args.repeats}]")
        print(
            f"  genunlearn SDAdapter.sample:         {total / t_ours:8.2f} images/s ({t_ours:.2f} s)"
        )
        print(
            f"  diffusers StableDiffusionPipeline(): {total / t_theirs:8.2f} images/s ({t_theirs:.2f} s)"
        )
        print(f"  ratio genunlearn / diffusers:        {t_theirs / t_ours:8.2f}x")


if __name__ == "__main__":
    main()
