"""toy-clip: train it (optional) and print its caption-ranking accuracy on fresh ToyCanvas images.

Acceptance figure: for each image, its own caption must score above all 20 captions that change
exactly one attribute (4 other colours, 9 other objects, 7 other styles); ``rank1`` is the share
of images where it does. Also prints the CLIP score of matching vs shuffled captions and, with
``--toy-sd``, the CLIP score of toy-sd's own samples for the evaluation grid.

Usage::

    python experiments/toy_clip.py                      # evaluate the committed toy-clip
    python experiments/toy_clip.py --train --out /tmp/toy-clip   # retrain (~20 min on 1 thread)
    python experiments/toy_clip.py --train --out src/genunlearn/assets/toy-clip   # replace the asset
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", action="store_true", help="train toy-clip first")
    ap.add_argument("--out", default=None, help="where --train writes (default: the asset dir)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    ap.add_argument("--images", type=int, default=None, help="override the recipe's n_images")
    ap.add_argument("--clip", default="toy-clip", help="toy-clip or a CLIP directory to evaluate")
    ap.add_argument("--n", type=int, default=1000, help="fresh images to rank")
    ap.add_argument("--toy-sd", action="store_true", help="also score toy-sd's grid samples")
    ap.add_argument("--eval-every", type=int, default=0, help="print rank-1 while training")
    args = ap.parse_args(argv)

    import dataclasses

    import torch

    from genunlearn.models.clip import load_clip, toy_clip_dir
    from genunlearn.testbed.toy_clip import ClipRecipe, caption_rank_accuracy, train_toy_clip

    target = args.clip
    if args.train:
        recipe = ClipRecipe()
        if args.steps:
            recipe = dataclasses.replace(recipe, steps=args.steps)
        if args.images:
            recipe = dataclasses.replace(recipe, n_images=args.images)
        t0 = time.perf_counter()
        target = str(train_toy_clip(args.out or toy_clip_dir(), recipe, eval_every=args.eval_every))
        print(f"trained {target} in {time.perf_counter() - t0:.0f}s "
              f"(torch threads: {torch.get_num_threads()})")  # fmt: skip
    clip = load_clip(target)
    t0 = time.perf_counter()
    acc = caption_rank_accuracy(clip, n=args.n)
    print(
        f"rank-1 among one-attribute-off captions: {100 * acc['rank1']:.1f}% of {args.n} images "
        f"(object {100 * acc['rank1_object']:.1f}%, style {100 * acc['rank1_style']:.1f}%, "
        f"colour {100 * acc['rank1_colour']:.1f}%; {time.perf_counter() - t0:.1f}s)"
    )
    from genunlearn.data import toycanvas
    from genunlearn.metrics.clip_score import clip_scores

    imgs, _, caps = toycanvas.make_arrays(777, 400)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    match = clip_scores(x, caps, clip).mean()
    shuffled = clip_scores(x, caps[1:] + caps[:1], clip).mean()
    print(f"CLIP score (cosine) on real images: matching {match:.3f}, shuffled {shuffled:.3f}")
    if args.toy_sd:
        import genunlearn as gu

        model = gu.load_model("toy-sd")
        s = gu.evaluate(model, protocol="clip_score", clip=target, n_per_prompt=1)
        print(f"toy-sd grid samples: CLIP score {s['clip_score']:.3f} ± {s['clip_score_std']:.3f}")


if __name__ == "__main__":
    main()
