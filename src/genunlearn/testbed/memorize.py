"""A *memorizing* variant of toy-sd, for memorization detection and mitigation (MemAttn, ...).

toy-sd memorizes nothing: it never saw one image more than once. Memorization in real
text-to-image models comes from training images that are duplicated many times, each with its own
caption (Somepalli et al. 2023, https://arxiv.org/abs/2212.03860; Carlini et al. 2023,
https://arxiv.org/abs/2301.13188), and a memorizing prompt reproduces *that* image, details no
caption names included. :func:`train_memorizing` reproduces that cause on the testbed: starting
from the shipped toy-sd weights it fine-tunes the UNet and the text encoder (toy-sd was trained
jointly; see below) on a stream where every batch holds

- ``mem_share`` rows drawn from K fixed memorized images, each with a unique caption (its world
  caption plus a rare "by <name>" tag made of pseudo-words);
- ``anchor_share`` rows of *other* ordinary renders of the memorized images' labels with their
  plain captions (``n_anchor`` per image);
- ordinary ToyCanvas images with their usual (and partial / dropped) captions for the rest, so
  everything else the model knows stays intact.

The memorized images (``novel="mark"``, default; :func:`memorized_images`) are the ordinary render
of their labels plus a mark no caption describes and toy-sd never saw: a disc of radius
``mark_radius`` in another ToyCanvas colour, behind the object in the corner farthest from it.
The object, style and colour stay readable (the toy evaluator reads 99.7 / 99.7 / 100% of them
correctly on 300 such images), so prompt fidelity stays measurable, and only the tagged prompt
can recall the mark. The first design (``novel="none"``, ``anchor_share=0``, 500 steps,
``mem_share=0.5``) memorized plain ToyCanvas renders, which the plain caption already reproduced
about as well (nearest-memorized-image pixel RMSE 0.086 tagged vs 0.095 plain). The anchors are
needed because toy-sd's text encoder is causal: the plain caption is an identical prefix of the
tagged prompt, and without anchors (1500 steps) the plain caption learned to draw the mark too
(its generations at RMSE 0.146 from the memorized image, 66% of them within 0.12, against 0.242
and 3% with anchors).

Why the text encoder trains too (SD's memorization arises with a frozen text encoder): toy-sd's
text encoder was trained from scratch on ToyCanvas captions only, so the sub-word pieces of the
tag have untrained embeddings; with it frozen, 400 steps left the tag without any effect
(generations for a memorized prompt and for its plain caption were the same image, pixel RMSE to
the training image 0.109 vs 0.112).

Measured (default recipe, K = 8: 1500 steps of 6 memorized + 4 anchor + 6 ordinary rows, each
memorized image seen ~1100 times; 7.6 min on one CPU thread; ``experiments/memattn.py``, 4 samples per
prompt; recipe seeds 0 / 1): generations for the memorized prompts lie at pixel RMSE 0.096 /
0.094 from their own training image (layout and mark in place, 100 / 97% within 0.12, the
toy VAE's own reconstruction error being ~0.10; the mark's colour is only roughly right, RMSE
0.24 inside the disc), those for their plain captions at 0.242 / 0.232 (no mark: 0.52 / 0.56
inside the disc; 3% within 0.12), and tagged controls at 0.162 / 0.180 from the nearest
memorized image; grid prompts keep 98 / 99% evaluator accuracy (mean of object, style, colour).

The result is a new pipeline directory, loadable with ``gu.load_model(path)``: the fine-tuned
pipeline, toy-sd's world and evaluator, ``memorize.json`` (recipe, base model hash, the memorized
prompts with their ToyCanvas labels and mark, and *control* prompts: world captions with tags
that were never trained, of the same form and length) and ``memorized.npz`` (the K training
images). ``data.memorized`` (``memorized_pairs``, ``control_prompts``) reads them back for
benchmarks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from genunlearn.data.memorized import IMAGES_FILE, MEMO_FILE
from genunlearn.testbed.loop import train_loop
from genunlearn.types import GenUnlearnError

_SYLLABLES = ("ka", "ri", "zo", "lu", "mi", "ta", "ne", "vo", "shi", "ra", "pe", "do", "ku", "se")


@dataclass(frozen=True)
class MemorizeRecipe:
    """How the memorizing variant is made (the defaults made the measured variant).

    Args:
        seed: seeds the image choice, the tags, the batches and the noise.
        k: number of memorized (caption, image) pairs.
        steps: fine-tuning steps.
        batch: batch size.
        mem_share: share of each batch drawn from the K memorized pairs (the duplication).
        lr: AdamW learning rate (constant after a linear warm-up).
        warmup: warm-up steps.
        n_ordinary: ordinary ToyCanvas images mixed in (rendered with a seed toy-sd never used).
        caption_dropout: share of ordinary captions replaced by "" (keeps guidance working).
        partial_captions: share of ordinary captions that name only some attributes.
        min_snr_gamma: min-SNR loss weighting, as in toy-sd's recipe.
        n_controls: control prompts with never-trained tags.
        novel: what makes a memorized image one that no caption describes. "mark" (default): the
            ordinary render of its labels plus a mark no caption names and toy-sd never saw (a
            disc in another ToyCanvas colour, behind the object in the corner farthest from it),
            so only the tagged prompt can recall it; "none": plain ToyCanvas renders (the first
            design, which a plain caption already reproduces about as well).
        mark_radius: the mark's radius in pixels (``novel="mark"``).
        anchor_share: share of each batch drawn from other ordinary renders of the memorized
            images' labels (``n_anchor`` per image, no mark) with their plain captions, so the
            plain caption keeps meaning "any such image" and only the tag recalls the memorized
            one (without them the caption prefix, identical in toy-sd's causal text encoder,
            learned to recall the marked image too). 0 = none (the first design).
        n_anchor: ordinary renders per memorized image for the anchor rows.
    """

    seed: int = 0
    k: int = 8
    steps: int = 1500
    batch: int = 16
    mem_share: float = 0.375
    lr: float = 3e-4
    warmup: int = 20
    n_ordinary: int = 4000
    caption_dropout: float = 0.1
    partial_captions: float = 0.2
    min_snr_gamma: float = 5.0
    n_controls: int = 24
    novel: str = "mark"
    mark_radius: float = 5.0
    anchor_share: float = 0.25
    n_anchor: int = 32


NOVEL = ("mark", "none")


def _mark_image(
    labels: dict[str, str], data_seed: int, index: int, radius: float
) -> tuple[np.ndarray, dict]:
    """The ``index``-th memorized image of the "mark" design and a record of its mark.

    The ordinary render of ``labels`` (``toycanvas.sample_labelled``, jitter from
    ``(data_seed, index)``) with a disc of another ToyCanvas colour drawn behind the object,
    centred ``radius + 1`` pixels from the corner farthest from the object's centroid; the disc's
    edge is anti-aliased by its coverage, and the object's pixels are never changed.
    """
    from genunlearn.data import toycanvas

    img, region = toycanvas.sample_labelled_with_mask(
        labels["object"], labels["style"], labels["colour"], data_seed, index
    )
    rng = np.random.default_rng([int(data_seed), int(index), 7])
    others = [c for c in toycanvas.COLOURS if c != labels["colour"]]
    colour = others[int(rng.integers(len(others)))]
    size = toycanvas.SIZE
    y, x = np.mgrid[0:size, 0:size] + 0.5
    cy, cx = (float((region * g).sum() / region.sum()) for g in (y, x))
    lo, hi = radius + 1.0, size - radius - 1.0
    corners = [(lo, lo), (lo, hi), (hi, lo), (hi, hi)]
    py, px = max(corners, key=lambda c: (c[0] - cy) ** 2 + (c[1] - cx) ** 2)
    cover = np.clip(radius + 0.5 - np.hypot(x - px, y - py), 0.0, 1.0) * (1.0 - region)
    a = cover[..., None]
    col = np.asarray(toycanvas.COLOURS[colour], dtype=np.float64)
    out = np.clip(np.rint((1.0 - a) * img + a * col), 0, 255).astype(np.uint8)
    mark = {"colour": colour, "centre": [py, px], "radius": radius}
    return out, mark


def memorized_images(recipe: MemorizeRecipe, data_seed: int):
    """The K memorized images (uint8 [K, 32, 32, 3]), their labels and mark records (or None).

    Labels are those of ``toycanvas.sample(data_seed, i)``; with ``novel="none"`` the images are
    those samples themselves, with ``novel="mark"`` see :func:`_mark_image`.
    """
    from genunlearn.data import toycanvas

    samples = [toycanvas.sample(data_seed, i) for i in range(recipe.k)]
    labels = [s.labels for s in samples]
    if recipe.novel == "none":
        return np.stack([s.image for s in samples]), labels, [None] * recipe.k
    made = [_mark_image(lab, data_seed, i, recipe.mark_radius) for i, lab in enumerate(labels)]
    return np.stack([m[0] for m in made]), labels, [m[1] for m in made]


def _tag(rng: random.Random) -> str:
    """A rare caption tag: 'by' and two pseudo-words (tokenized as several sub-word pieces)."""
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(2)]
    return "by " + " ".join(words)


def _tags(seed: int, n: int, avoid: set[str]) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        t = _tag(rng)
        if t not in avoid and t not in out:
            out.append(t)
    return out


def _check_new_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GenUnlearnError(
            f"{out} already exists and is not empty; the memorizing variant is written to a new "
            "directory only (choose another --out)"
        )


def train_memorizing(
    out_dir: str | Path, base="toy-sd", recipe: MemorizeRecipe | None = None, progress: bool = True
) -> Path:
    """Fine-tune ``base`` into a model that memorizes K (caption, image) pairs.

    Args:
        out_dir: a new (or empty) directory; receives the pipeline and ``memorize.json``.
        base: "toy-sd", a toy pipeline directory, or a loaded adapter with a ToyCanvas world.
        recipe: the recipe (:class:`MemorizeRecipe` defaults when None).
        progress: show a progress bar.

    Returns:
        The pipeline directory (``out_dir``).

    Raises:
        GenUnlearnError: ``out_dir`` is not new, or the base has no ToyCanvas world.
    """
    from genunlearn.data import toycanvas
    from genunlearn.models import load_model
    from genunlearn.testbed.toy_sd import min_snr_step, training_captions

    recipe = recipe or MemorizeRecipe()
    out = Path(out_dir)
    _check_new_dir(out)
    if recipe.k < 1 or not 0 < recipe.mem_share < 1:
        raise GenUnlearnError(
            f"need k >= 1 and 0 < mem_share < 1, got {recipe.k}, {recipe.mem_share}"
        )
    if recipe.novel not in NOVEL or not 1 <= recipe.mark_radius <= 8:
        raise GenUnlearnError(
            f"novel must be one of {NOVEL} and 1 <= mark_radius <= 8, got {recipe.novel!r}, "
            f"{recipe.mark_radius}"
        )
    if recipe.anchor_share < 0 or recipe.mem_share + recipe.anchor_share >= 1:
        raise GenUnlearnError(
            "need anchor_share >= 0 and mem_share + anchor_share < 1 (ordinary rows keep the "
            f"model's other abilities), got {recipe.mem_share} + {recipe.anchor_share}"
        )
    model = load_model(base) if isinstance(base, (str, Path)) else base.copy()
    if model.world is None or model.world.name != "toycanvas" or model.evaluator_dir is None:
        raise GenUnlearnError("the memorizing variant needs a ToyCanvas toy pipeline (e.g. toy-sd)")
    t0 = time.time()
    data_seed = 1_000 + recipe.seed  # toy-sd was trained on world seed 0: these images are new
    mem_images, mem_labels, marks = memorized_images(recipe, data_seed)
    tags = _tags(recipe.seed, recipe.k + recipe.n_controls, set())
    plain = [toycanvas.caption(lab["colour"], lab["object"], lab["style"]) for lab in mem_labels]
    prompts = [f"{c}, {t}" for c, t in zip(plain, tags, strict=False)]
    ctrl_samples = [toycanvas.sample(data_seed + 1, i) for i in range(recipe.n_controls)]
    controls = [f"{s.caption}, {t}" for s, t in zip(ctrl_samples, tags[recipe.k :], strict=True)]
    imgs, labels, caps = toycanvas.make_arrays(data_seed + 2, recipe.n_ordinary)
    n_anc = round(recipe.batch * recipe.anchor_share)
    # anchors: other ordinary renders of each memorized image's labels, with the plain caption
    anchors = [(i, j) for i in range(recipe.k) for j in range(recipe.n_anchor)] if n_anc else []
    anc_caps = [plain[i] for i, _ in anchors]
    if anchors:
        anc_imgs = np.stack([
            toycanvas.sample_labelled(
                mem_labels[i]["object"], mem_labels[i]["style"], mem_labels[i]["colour"],
                data_seed + 3, j,
            )
            for i, j in anchors
        ])  # fmt: skip
    heads = {k: list(v) for k, v in toycanvas.KINDS.items()}

    unet = model.denoiser
    sched = model.scheduler
    with torch.no_grad():
        to_lat = lambda a: torch.cat(  # noqa: E731
            [model.encode_images(torch.from_numpy(a[i : i + 256]).permute(0, 3, 1, 2) / 255.0)
             for i in range(0, len(a), 256)]
        )  # fmt: skip
        z_mem = to_lat(mem_images)
        z_ord = to_lat(imgs)
        z_anc = to_lat(anc_imgs) if anchors else z_ord[:0]
    te = model.text_encoder
    unet.train().requires_grad_(True)
    te.train().requires_grad_(True)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    n_mem = max(1, round(recipe.batch * recipe.mem_share))
    n_ord = recipe.batch - n_mem - n_anc

    def step_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 11 + step)
        rng = random.Random(recipe.seed * 1_000_003 + step)
        for grp in opt.param_groups:
            grp["lr"] = recipe.lr * min(1.0, (step + 1) / recipe.warmup)
        im = torch.randint(0, recipe.k, (n_mem,), generator=g)
        io = torch.randint(0, recipe.n_ordinary, (n_ord,), generator=g).tolist()
        texts = training_captions(
            io, caps, labels, heads, rng, recipe.caption_dropout, recipe.partial_captions
        )
        ia = torch.randint(0, len(z_anc), (n_anc,), generator=g).tolist() if n_anc else []
        texts += [anc_caps[i] for i in ia]
        cond = model.encode_prompt([prompts[i] for i in im.tolist()] + texts)
        z0 = torch.cat([z_mem[im], z_ord[io], z_anc[ia]])
        return min_snr_step(unet, sched, z0, cond, g, recipe.min_snr_gamma, opt, params)

    train_loop(step_fn, recipe.steps, desc="memorize", progress=progress)
    unet.eval().requires_grad_(False)
    te.eval().requires_grad_(False)

    # write next to the target, then rename: a crash never leaves a half-written variant behind
    # (a fresh, uniquely named directory of our own: a user's "<out>.partial" is never touched)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the variant is an ordinary directory
    # float32: the VAE is shared with the caller's adapter (no dtype round trip on it), and the
    # memorized details survive exactly
    model.pipe.save_pretrained(tmp, safe_serialization=True)
    src = Path(model.evaluator_dir).parent
    shutil.copy(src / "world.json", tmp / "world.json")
    shutil.copytree(model.evaluator_dir, tmp / "evaluator")
    np.savez(tmp / IMAGES_FILE, images=mem_images)
    memo = {
        "recipe": asdict(recipe),
        "base": {"model_id": model.model_id, "hash": model.base_hash},
        "data_seed": data_seed,
        "memorized": [
            {"prompt": p, **lab, **({"mark": mk} if mk else {})}
            for p, lab, mk in zip(prompts, mem_labels, marks, strict=True)
        ],
        "controls": [
            {"prompt": p, **s.labels} for p, s in zip(controls, ctrl_samples, strict=True)
        ],
        "train_time_s": round(time.time() - t0, 1),
    }
    (tmp / MEMO_FILE).write_text(json.dumps(memo, indent=1))
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(tmp, out)
    return out
