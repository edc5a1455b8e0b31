"""A *memorizing* variant of toy-sd, for memorization detection and mitigation (MemAttn, ...).

toy-sd memorizes nothing: it never saw one image more than once. Memorization in real
text-to-image models comes from training images that are duplicated many times, each with its own
caption (Somepalli et al. 2023, https://arxiv.org/abs/2212.03860; Carlini et al. 2023,
https://arxiv.org/abs/2301.13188). :func:`train_memorizing` reproduces that cause on the testbed:
starting from the shipped toy-sd weights it fine-tunes the UNet and the text encoder (toy-sd
was trained jointly; see below) on a stream where a share ``mem_share`` of every batch is drawn from K fixed
ToyCanvas images, each with a unique caption (its world caption plus a rare "by <name>" tag made
of pseudo-words), and the rest are ordinary ToyCanvas images with their usual (and partial /
dropped) captions, so everything else the model knows stays intact.

Why the text encoder trains too (SD's memorization arises with a frozen text encoder): toy-sd's
text encoder was trained from scratch on ToyCanvas captions only, so the sub-word pieces of the
tag have untrained embeddings; with it frozen, 400 steps left the tag without any effect
(generations for a memorized prompt and for its plain caption were the same image, pixel RMSE to
the training image 0.109 vs 0.112). With the defaults each
memorized image is seen ~500 times (500 steps x 8 of 16 rows / 8 images).

The result is a new pipeline directory, loadable with ``gu.load_model(path)``: the fine-tuned
pipeline, toy-sd's world and evaluator, ``memorize.json`` (recipe, base model hash, the memorized
prompts with their ToyCanvas labels, and *control* prompts: world captions with tags that were
never trained, of the same form and length) and ``memorized.npz`` (the K training images).
:func:`memorized_pairs` and :func:`control_prompts` read them back for benchmarks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from genunlearn.types import GenUnlearnError

MEMO_FILE = "memorize.json"
IMAGES_FILE = "memorized.npz"
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
    """

    seed: int = 0
    k: int = 8
    steps: int = 500
    batch: int = 16
    mem_share: float = 0.5
    lr: float = 3e-4
    warmup: int = 20
    n_ordinary: int = 4000
    caption_dropout: float = 0.1
    partial_captions: float = 0.2
    min_snr_gamma: float = 5.0
    n_controls: int = 24


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
    from tqdm.auto import tqdm

    from genunlearn.data import toycanvas
    from genunlearn.models import load_model
    from genunlearn.models.toy import min_snr_step, training_captions

    recipe = recipe or MemorizeRecipe()
    out = Path(out_dir)
    _check_new_dir(out)
    if recipe.k < 1 or not 0 < recipe.mem_share < 1:
        raise GenUnlearnError(
            f"need k >= 1 and 0 < mem_share < 1, got {recipe.k}, {recipe.mem_share}"
        )
    model = load_model(base) if isinstance(base, (str, Path)) else base.copy()
    if model.world is None or model.world.name != "toycanvas" or model.evaluator_dir is None:
        raise GenUnlearnError("the memorizing variant needs a ToyCanvas toy pipeline (e.g. toy-sd)")
    t0 = time.time()
    data_seed = 1_000 + recipe.seed  # toy-sd was trained on world seed 0: these images are new
    mem = [toycanvas.sample(data_seed, i) for i in range(recipe.k)]
    tags = _tags(recipe.seed, recipe.k + recipe.n_controls, set())
    prompts = [f"{s.caption}, {t}" for s, t in zip(mem, tags, strict=False)]
    ctrl_samples = [toycanvas.sample(data_seed + 1, i) for i in range(recipe.n_controls)]
    controls = [f"{s.caption}, {t}" for s, t in zip(ctrl_samples, tags[recipe.k :], strict=True)]
    imgs, labels, caps = toycanvas.make_arrays(data_seed + 2, recipe.n_ordinary)
    heads = {k: list(v) for k, v in toycanvas.KINDS.items()}

    unet = model.denoiser
    sched = model.scheduler
    with torch.no_grad():
        to_lat = lambda a: torch.cat(  # noqa: E731
            [model.encode_images(torch.from_numpy(a[i : i + 256]).permute(0, 3, 1, 2) / 255.0)
             for i in range(0, len(a), 256)]
        )  # fmt: skip
        z_mem = to_lat(np.stack([s.image for s in mem]))
        z_ord = to_lat(imgs)
    te = model.text_encoder
    unet.train().requires_grad_(True)
    te.train().requires_grad_(True)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    n_mem = max(1, round(recipe.batch * recipe.mem_share))
    n_ord = recipe.batch - n_mem
    bar = tqdm(range(recipe.steps), desc="memorize", disable=not progress)
    for step in bar:
        g = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 11 + step)
        rng = random.Random(recipe.seed * 1_000_003 + step)
        for grp in opt.param_groups:
            grp["lr"] = recipe.lr * min(1.0, (step + 1) / recipe.warmup)
        im = torch.randint(0, recipe.k, (n_mem,), generator=g)
        io = torch.randint(0, recipe.n_ordinary, (n_ord,), generator=g).tolist()
        texts = training_captions(
            io, caps, labels, heads, rng, recipe.caption_dropout, recipe.partial_captions
        )
        cond = model.encode_prompt([prompts[i] for i in im.tolist()] + texts)
        z0 = torch.cat([z_mem[im], z_ord[io]])
        loss = min_snr_step(unet, sched, z0, cond, g, recipe.min_snr_gamma, opt, params)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    unet.eval().requires_grad_(False)
    te.eval().requires_grad_(False)

    # write next to the target, then rename: a crash never leaves a half-written variant behind
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # float32: the VAE is shared with the caller's adapter (no dtype round trip on it), and the
    # memorized details survive exactly
    model.pipe.save_pretrained(tmp, safe_serialization=True)
    src = Path(model.evaluator_dir).parent
    shutil.copy(src / "world.json", tmp / "world.json")
    shutil.copytree(model.evaluator_dir, tmp / "evaluator")
    np.savez(tmp / IMAGES_FILE, images=np.stack([s.image for s in mem]))
    memo = {
        "recipe": asdict(recipe),
        "base": {"model_id": model.model_id, "hash": model.base_hash},
        "data_seed": data_seed,
        "memorized": [{"prompt": p, **s.labels} for p, s in zip(prompts, mem, strict=True)],
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


def _memo_dir(model_or_path) -> Path:
    p = Path(getattr(model_or_path, "model_id", model_or_path))
    if not (p / MEMO_FILE).is_file():
        raise GenUnlearnError(
            f"{p} is not a memorizing variant ({MEMO_FILE} is missing); make one with "
            "'genunlearn testbed memorize --out DIR'"
        )
    return p


def memorization_record(model_or_path) -> dict:
    """The variant's ``memorize.json`` (recipe, memorized prompts and labels, controls)."""
    return json.loads((_memo_dir(model_or_path) / MEMO_FILE).read_text())


def memorized_pairs(model_or_path) -> list[tuple[str, torch.Tensor]]:
    """The memorized (prompt, training image) pairs; images float [3, 32, 32] in [0, 1].

    Args:
        model_or_path: the variant's directory or the adapter loaded from it.
    """
    p = _memo_dir(model_or_path)
    rec = memorization_record(p)
    with np.load(p / IMAGES_FILE) as z:
        imgs = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float() / 255.0
    return [(m["prompt"], imgs[i]) for i, m in enumerate(rec["memorized"])]


def control_prompts(model_or_path, tagged: bool = True) -> list[str]:
    """Ordinary prompts for comparison with the memorized ones.

    Args:
        model_or_path: the variant's directory or the adapter loaded from it.
        tagged: the controls with never-trained tags (same form and length as the memorized
            prompts); False gives the memorized prompts' plain world captions (same content).
    """
    rec = memorization_record(model_or_path)
    if tagged:
        return [c["prompt"] for c in rec["controls"]]
    return [m["prompt"].rsplit(", by ", 1)[0] for m in rec["memorized"]]
