"""MemAttn on the memorizing toy-sd variant: detection AUC, copy distance, prompt fidelity.

Prints, for a variant made by ``genunlearn testbed memorize`` (or ``--make DIR`` to make one):

- **detection AUC** of MemAttn's attention-entropy score, memorized prompts against (a) controls of
  the same form with never-trained tags and (b) the memorized prompts' plain world captions
  (same content, no tag); per mode (E per layer and over all layers, D), from one sampling run;
- **nearest-neighbour distance** (pixel RMSE in [0, 1], and evaluator-feature L2) of generations
  to the memorized training images, for memorized prompts without and with MemAttn, and for
  the plain captions and tagged controls as not-memorized references; plus the share of
  near-copies (pixel RMSE below ``--copy-rmse``), the RMSE to the prompt's *own* training image
  and, for the "mark" design, the RMSE inside the mark's disc (the feature only memorization
  can produce; ~0 when reproduced);
- **prompt fidelity**: evaluator accuracy (object / style / colour and their mean) of
  generations for ordinary prompts (the world's grid prompts) and of the memorized prompts'
  content, without and with MemAttn.

``--c1`` takes several values and ``--mask on|off|both`` overrides the preset's padding mask:
the copy and fidelity tables then get one row per setting (detection runs once: it reads the
unmitigated attention).

Usage::

    genunlearn testbed memorize --out /tmp/toy-mem          # ~8 min on one CPU thread
    python experiments/memattn.py --model /tmp/toy-mem --n 4
    python experiments/memattn.py --model /tmp/toy-mem --c1 1.25 2 4 --mask both
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of scores ``pos`` (positives) vs ``neg`` (ties count one half)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def nn_distances(images, refs, evaluator):
    """Per image: min pixel RMSE and min evaluator-feature L2 to ``refs``."""
    rmse = (images[:, None] - refs[None]).pow(2).mean(dim=(2, 3, 4)).sqrt().min(1).values
    with torch.no_grad():
        fi, fr = evaluator.features(images), evaluator.features(refs)
    feat = torch.cdist(fi, fr).min(1).values
    return rmse, feat


def own_distances(images, refs, n, marks):
    """Per image (prompt-major, ``n`` per prompt): RMSE to its own prompt's reference image, and
    RMSE inside that image's mark disc (NaN without marks)."""
    own = refs.repeat_interleave(n, 0)
    rmse = (images - own).pow(2).mean(dim=(1, 2, 3)).sqrt()
    if not all(marks):
        return rmse, torch.full_like(rmse, float("nan"))
    h, w = images.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    discs = torch.stack(
        [((yy - m["centre"][0]).hypot(xx - m["centre"][1]) <= m["radius"] - 0.5) for m in marks]
    ).repeat_interleave(n, 0)  # [rows, H, W]: the mark's fully covered pixels
    err = (images - own).pow(2).mean(1)  # [rows, H, W]
    mark = ((err * discs).sum(dim=(1, 2)) / discs.sum(dim=(1, 2))).sqrt()
    return rmse, mark


def fidelity(model, prompts_labels, n, seed):
    """Evaluator accuracy per attribute of ``n`` generations per (prompt, labels)."""
    prompts = [p for p, _ in prompts_labels]
    preds = model.evaluator.predict(model.sample(prompts, n=n, seed=seed, batch_size=512))
    acc = {}
    for kind in ("object", "style", "colour"):
        want = [lab[kind] for _, lab in prompts_labels for _ in range(n)]
        acc[kind] = sum(a == b for a, b in zip(preds[kind], want, strict=True)) / len(want)
    acc["mean"] = sum(acc.values()) / 3
    return acc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="memorizing variant directory")
    ap.add_argument("--make", help="train a variant into this new directory first")
    ap.add_argument("--n", type=int, default=4, help="generations (seeds) per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="toy", help="memattn preset (toy | paper)")
    ap.add_argument("--c1", type=float, nargs="+", default=None, help="override the preset's c1")
    ap.add_argument("--mask", choices=("preset", "on", "off", "both"), default="preset",
                    help="override the preset's padding mask")  # fmt: skip
    ap.add_argument("--grid", type=int, default=40, help="grid prompts for fidelity")
    ap.add_argument(
        "--copy-rmse", type=float, default=0.12,
        help="near-copy threshold (toy-sd's VAE alone reconstructs the marked images at ~0.10)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    import genunlearn as gu
    from genunlearn.data.memorized import control_prompts, memorization_record, memorized_pairs
    from genunlearn.data.toycanvas import grid_prompts
    from genunlearn.methods.memattn import MemAttnConfig, attention_trajectory
    from genunlearn.methods.memattn import scores_from_trajectory as scores
    from genunlearn.testbed.memorize import train_memorizing

    if args.make:
        t0 = time.time()
        train_memorizing(args.make, progress=True)
        print(f"variant written to {args.make} in {time.time() - t0:.0f} s")
        args.model = args.model or args.make
    if not args.model:
        ap.error("--model or --make is required")
    torch.manual_seed(0)
    model = gu.load_model(args.model)
    pairs = memorized_pairs(model)
    rec = memorization_record(model)
    mem = [p for p, _ in pairs]
    refs = torch.stack([im for _, im in pairs])
    tagged, plain = control_prompts(model), control_prompts(model, tagged=False)
    n = args.n
    task = gu.ErasureTask(tuple(mem))
    c1s = args.c1 or [None]
    masks = {"preset": [None], "on": [True], "off": [False], "both": [False, True]}[args.mask]
    runs = []
    for c1 in c1s:
        for mask in masks:
            over = {k: v for k, v in {"c1": c1, "mask": mask}.items() if v is not None}
            runs.append(gu.erase(model, "memattn", task, preset=args.preset, **over))
    cfg = MemAttnConfig(**runs[0].config)
    marks = [m.get("mark") for m in rec["memorized"]]
    print(f"variant {args.model}: K={len(mem)}, recipe {rec['recipe']}")
    print(f"memattn settings {[r.model.inference['memattn'] for r in runs]}")
    print(f"{n} seeds per prompt from seed {args.seed}")

    def label(r):
        st = r.model.inference["memattn"]
        return f"MemAttn c1={st['c1']:g} mask={'on' if st['mask'] else 'off'}"

    # ---------------------------------------------------------------- detection
    t0 = time.time()
    sets = {"memorized": mem, "tagged controls": tagged, "plain captions": plain}
    traj = {k: attention_trajectory(model, v, n=n, seed=args.seed) for k, v in sets.items()}
    t_det = time.time() - t0
    n_layers = traj["memorized"].shape[1]
    modes = [("E", i) for i in range(n_layers)] + [("E", None), ("D", None)]
    print(f"\ndetection AUC (memorized vs ...), {t_det:.0f} s for all trajectories")
    print(f"{'mode':<12}{'tagged controls':>18}{'plain captions':>18}")
    for mode, layer in modes:
        c = MemAttnConfig(detect_mode=mode, detect_layer=layer, late_share=cfg.late_share)
        s = {k: scores(model, traj[k], sets[k], n, c) for k in sets}
        name = f"{mode} layer {layer if layer is not None else 'all'}"
        print(
            f"{name:<12}{auc(s['memorized'], s['tagged controls']):>18.3f}"
            f"{auc(s['memorized'], s['plain captions']):>18.3f}"
        )

    # ---------------------------------------------------------------- copies
    t0 = time.time()
    ev = model.evaluator
    rows = {"memorized, no mitigation": model.sample(mem, n=n, seed=args.seed)}
    for r in runs:
        rows[f"memorized, {label(r)}"] = r.model.sample(mem, n=n, seed=args.seed)
    rows["plain captions, no mitigation"] = model.sample(plain, n=n, seed=args.seed)
    rows["tagged controls, no mitigation"] = model.sample(tagged, n=n, seed=args.seed)
    t_copy = time.time() - t0
    print(f"\nnearest-neighbour distance to the {len(mem)} memorized images ({t_copy:.0f} s)")
    print(
        f"{'generations':<40}{'NN RMSE':>9}{'feat L2':>9}{'copies':>8}{'own RMSE':>10}"
        f"{'mark RMSE':>11}"
    )
    for name, imgs in rows.items():
        rmse, feat = nn_distances(imgs, refs, ev)
        copies = float((rmse < args.copy_rmse).float().mean())
        own = own_distances(imgs, refs, n, marks) if "controls" not in name else None
        tail = f"{own[0].mean():>10.4f}{own[1].mean():>11.4f}" if own else f"{'-':>10}{'-':>11}"
        print(f"{name:<40}{rmse.mean():>9.4f}{feat.mean():>9.3f}{copies:>8.0%}{tail}")

    # ---------------------------------------------------------------- fidelity
    t0 = time.time()
    grid = [
        (f"a {c} {o} in {s} style", {"object": o, "style": s, "colour": c})
        for c, o, s in grid_prompts()[: args.grid]
    ]
    mem_labels = [(m["prompt"], m) for m in rec["memorized"]]
    fid = {
        "grid prompts, no mitigation": fidelity(model, grid, n, args.seed),
        "memorized prompts, no mitigation": fidelity(model, mem_labels, n, args.seed),
    }
    for r in runs:
        fid[f"grid prompts, {label(r)}"] = fidelity(r.model, grid, n, args.seed)
        fid[f"memorized prompts, {label(r)}"] = fidelity(r.model, mem_labels, n, args.seed)
    print(f"\nprompt fidelity (evaluator accuracy), {time.time() - t0:.0f} s")
    print(f"{'generations':<44}{'object':>8}{'style':>8}{'colour':>8}{'mean':>8}")
    for name, a in fid.items():
        print(
            f"{name:<44}{a['object']:>8.0%}{a['style']:>8.0%}{a['colour']:>8.0%}{a['mean']:>8.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
