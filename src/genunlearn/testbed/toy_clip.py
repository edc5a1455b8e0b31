"""The toy-clip recipe: a tiny ``transformers.CLIPModel`` trained contrastively on ToyCanvas.

**toy-clip** (ViT image tower on 32x32 ToyCanvas images with 8x8 patches; 2-layer text
transformer on toy-sd's CLIP tokenizer) is committed under ``assets/toy-clip`` (fp16, ~1.7 MB,
with the ``recipe.json`` that made it) in the layout of a real CLIP checkpoint, so
:func:`genunlearn.models.clip.load_clip` loads it like any local CLIP directory.

Training (:func:`train_toy_clip`, run by ``python experiments/toy_clip.py --train``) follows CLIP's
symmetric contrastive objective with a learned temperature, with changes that suit a world of
only 400 distinct captions: the image->text softmax runs over *all* 400 full captions (no false
negatives from duplicate captions in a batch); a second image->text term runs over the image's
caption and its 20 *hard negatives*, the captions that change one attribute (the rivals of the
acceptance figure below; in the 400-way softmax they get little of the gradient once the easy
captions are ruled out); and the text->image side uses every caption in the batch plus sampled
partial captions ("a star", "a red shape", "striped style") with all matching batch images as
positives, so that prompts naming only some attributes are scored sensibly too. Images get a
random flip and a few pixels of translation (every label survives both) and the evaluator's light
blur/noise augmentation, so that decoded toy-sd samples are judged like rendered ones.

Acceptance figure (:func:`caption_rank_accuracy`): on fresh images of a world seed training never
used, the image's own caption must score above all 20 one-attribute-off captions.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path

import torch
from torch.nn import functional as F

from genunlearn.models.clip import NAME, OPENAI_MEAN, OPENAI_STD, Clip
from genunlearn.testbed.augment import augment
from genunlearn.testbed.loop import train_loop


@dataclass(frozen=True)
class ClipRecipe:
    """The toy-clip recipe (``recipe.json`` next to the weights records the one that made them)."""

    seed: int = 0
    n_images: int = 12000
    steps: int = 2800
    batch: int = 128
    partial: int = 64  # partial captions per step (text->image side)
    hard: float = 1.0  # weight of the image->text loss over the 20 one-attribute-off captions
    shift: int = 3  # random translation (pixels) of the training images; also a random h-flip
    lr: float = 2e-3
    warmup: int = 100
    vision_width: int = 128
    vision_layers: int = 3
    patch: int = 8
    text_width: int = 64
    text_layers: int = 2
    embed_dim: int = 128


def build_toy_clip(tokenizer, recipe: ClipRecipe, image_size: int = 32):
    """A randomly initialised tiny ``CLIPModel`` for ``tokenizer``."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(recipe.seed)
    r = recipe
    text = dict(
        vocab_size=len(tokenizer), hidden_size=r.text_width, intermediate_size=4 * r.text_width,
        num_hidden_layers=r.text_layers, num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(
        image_size=image_size, patch_size=r.patch, hidden_size=r.vision_width,
        intermediate_size=4 * r.vision_width, num_hidden_layers=r.vision_layers,
        num_attention_heads=4,
    )  # fmt: skip
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=r.embed_dim)
    return CLIPModel(cfg)


# partial-caption templates and the attributes each one names
PARTIAL = (
    ("a {object}", ("object",)),
    ("a {colour} {object}", ("colour", "object")),
    ("a {object} in {style} style", ("object", "style")),
    ("a {colour} shape", ("colour",)),
    ("a shape in {style} style", ("style",)),
    ("{style} style", ("style",)),
    ("a {colour} shape in {style} style", ("colour", "style")),
)


def partial_caption(labels: dict[str, str], rng: random.Random) -> tuple[str, dict[str, str]]:
    """A caption naming some of an image's attributes, and the attributes it names."""
    template, named = rng.choice(PARTIAL)
    return template.format(**labels), {k: labels[k] for k in named}


def _positives(named: list[dict[str, str]], labels: torch.Tensor, kinds: dict) -> torch.Tensor:
    """[T, B] mask: image b has every attribute that text t names (labels: [B, 3] indices)."""
    pos = torch.ones(len(named), len(labels), dtype=torch.bool)
    for t, attrs in enumerate(named):
        for k, v in attrs.items():
            col = list(kinds).index(k)
            pos[t] &= labels[:, col] == kinds[k].index(v)
    return pos


def train_toy_clip(
    out_dir: str | Path,
    recipe: ClipRecipe | None = None,
    progress: bool = True,
    eval_every: int = 0,
):
    """Train toy-clip on ToyCanvas and save it as a CLIP directory; returns the directory.

    Args:
        out_dir: receives the model, tokenizer, ``preprocessor_config.json`` and ``recipe.json``.
        recipe: the recipe (:class:`ClipRecipe` defaults when None).
        progress: show a progress bar.
        eval_every: print the caption rank-1 accuracy on 300 fresh images every this many steps
            (0: never).
    """
    import numpy as np
    from tqdm.auto import tqdm
    from transformers import CLIPTokenizer

    from genunlearn.data import toycanvas
    from genunlearn.models import assets_dir

    r = recipe or ClipRecipe()
    tok = CLIPTokenizer.from_pretrained(
        assets_dir() / "toy-sd" / "tokenizer", local_files_only=True
    )
    imgs, lab_idx, _ = toycanvas.make_arrays(r.seed + 101, r.n_images, progress=progress)
    kinds = list(toycanvas.KINDS)
    labels = [
        {k: toycanvas.KINDS[k][j] for k, j in zip(kinds, row, strict=True)} for row in lab_idx
    ]
    captions = all_captions()
    cap_index = {c: i for i, c in enumerate(captions)}
    data = {
        "labels": labels,
        "lab_t": torch.from_numpy(lab_idx),
        "target": torch.tensor([cap_index[_caption(la)] for la in labels]),
        "rivals": one_off_table(captions),
    }
    x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    model = build_toy_clip(tok, r, image_size=x_all.shape[-1])
    clip = Clip(model, tok, preprocessor_config(x_all.shape[-1]), NAME)
    model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=0.05)
    all_tokens = clip.tokens(captions)
    # one generator and one Random for the whole run (the recipe of the committed toy-clip)
    g = torch.Generator().manual_seed(r.seed)
    rng = random.Random(r.seed)

    def step_fn(step: int) -> torch.Tensor:
        warm = min(1.0, (step + 1) / r.warmup)
        for grp in opt.param_groups:
            grp["lr"] = r.lr * warm * 0.5 * (1 + np.cos(np.pi * step / r.steps))
        idx = torch.randint(0, len(x_all), (r.batch,), generator=g)
        x = augment(_shift_flip(x_all[idx].float() / 255, r.shift, g), g)
        loss = _contrastive_loss(clip, x, idx, all_tokens, data, r, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if eval_every and (step + 1) % eval_every == 0:
            model.eval()
            acc = caption_rank_accuracy(clip, n=300, seed=5151)  # not the bench seed
            model.train()
            tqdm.write(f"step {step + 1}: loss {loss.item():.3f}, rank-1 {acc['rank1']:.3f} "
                       f"(object {acc['rank1_object']:.3f}, style {acc['rank1_style']:.3f}, "
                       f"colour {acc['rank1_colour']:.3f})")  # fmt: skip
        return loss.detach()

    train_loop(step_fn, r.steps, desc="toy-clip", progress=progress)
    model.eval()
    return save_toy_clip(model, tok, out_dir, r)


def _contrastive_loss(clip: Clip, x, idx, all_tokens, data: dict, r: ClipRecipe, rng):
    """toy-clip's objective on one batch (module docstring): full-caption image->text, the
    one-attribute-off hard negatives, and text->image over full and sampled partial captions."""
    from genunlearn.data import toycanvas

    model, target, labels = clip.model, data["target"], data["labels"]
    img = F.normalize(Clip.pooled(model.get_image_features(pixel_values=clip.pixels(x))), dim=-1)
    txt_full = F.normalize(Clip.pooled(model.get_text_features(**all_tokens)), dim=-1)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * img @ txt_full.T
    loss_i2t = F.cross_entropy(logits, target[idx])
    # the acceptance test's rivals: the true caption (column 0) against the 20 captions that
    # change one attribute; the 400-way softmax above spends most of its mass elsewhere
    loss_hard = F.cross_entropy(
        logits.gather(1, data["rivals"][target[idx]]), torch.zeros(r.batch, dtype=torch.long)
    )
    # text->image: the batch's distinct full captions plus sampled partial captions, each
    # with every batch image it describes as a positive
    in_batch = sorted(set(target[idx].tolist()))
    picks = [int(idx[rng.randrange(r.batch)]) for _ in range(r.partial)]
    part = [partial_caption(labels[i], rng) for i in picks]
    tokens = clip.tokens([t for t, _ in part])
    txt_part = F.normalize(Clip.pooled(model.get_text_features(**tokens)), dim=-1)
    texts = torch.cat([txt_full[in_batch], txt_part])
    named = [labels[int(idx[(target[idx] == c).nonzero()[0, 0]])] for c in in_batch]
    named += [attrs for _, attrs in part]
    pos = _positives(named, data["lab_t"][idx], toycanvas.KINDS)
    logp = (scale * texts @ img.T).log_softmax(-1)
    loss_t2i = -(logp.masked_fill(~pos, -torch.inf).logsumexp(-1)).mean()
    return 0.5 * (loss_i2t + loss_t2i) + r.hard * loss_hard


def _shift_flip(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and translation by up to ``shift`` pixels (edge-replicated).

    Every ToyCanvas label survives both (a mirrored arrow or moon is still an arrow or moon).
    """
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if shift <= 0:
        return x
    padded = F.pad(x, (shift,) * 4, mode="replicate")
    dy, dx = (torch.randint(0, 2 * shift + 1, (n,), generator=g).tolist() for _ in range(2))
    return torch.stack(
        [padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(zip(dy, dx, strict=True))]
    )


def one_off_table(captions: list[str]) -> torch.Tensor:
    """[len(captions), 21] indices: each caption, then the 20 captions one attribute away."""
    from genunlearn.data import toycanvas

    index = {c: i for i, c in enumerate(captions)}
    rows = []
    for o, s, c in product(*toycanvas.KINDS.values()):
        lab = {"object": o, "style": s, "colour": c}
        row = [index[_caption(lab)]]
        for k, names in toycanvas.KINDS.items():
            row += [index[_caption({**lab, k: v})] for v in names if v != lab[k]]
        rows.append((row[0], row))
    table = torch.zeros(len(captions), 21, dtype=torch.long)
    for i, row in rows:
        table[i] = torch.tensor(row)
    return table


def preprocessor_config(size: int) -> dict:
    """A ``CLIPImageProcessor`` config for ``size``-pixel images (CLIP's mean and std)."""
    return {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": size}, "do_center_crop": True,
        "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(OPENAI_MEAN),
        "image_std": list(OPENAI_STD), "resample": 3, "do_convert_rgb": True,
    }  # fmt: skip


def save_toy_clip(model, tokenizer, out_dir: str | Path, recipe: ClipRecipe) -> Path:
    """Save in the CLIP directory layout (fp16 weights, loaded back as float32)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(d, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(d)
    size = model.config.vision_config.image_size
    (d / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(size), indent=1))
    (d / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1))
    return d


def _caption(labels: dict[str, str]) -> str:
    from genunlearn.data import toycanvas

    return toycanvas.caption(labels["colour"], labels["object"], labels["style"])


def all_captions() -> list[str]:
    """Every full ToyCanvas caption (10 objects x 8 styles x 5 colours = 400), sorted."""
    from genunlearn.data import toycanvas

    k = toycanvas.KINDS
    return sorted(toycanvas.caption(c, o, s) for o, s, c in product(*k.values()))


@torch.no_grad()
def caption_rank_accuracy(clip: Clip, n: int = 1000, seed: int = 4242) -> dict[str, float]:
    """Share of fresh ToyCanvas images whose own caption beats every one-attribute-off caption.

    For an image of (colour, object, style) the rivals are the 4 + 9 + 7 = 20 captions that change
    exactly one attribute; success means the true caption has the strictly highest similarity.
    ``rank1_<kind>`` counts only the rivals that change that attribute. The images come from a
    world seed that training never used.
    """
    from genunlearn.data import toycanvas

    imgs, lab_idx, _ = toycanvas.make_arrays(seed, n)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    captions = all_captions()
    index = {c: i for i, c in enumerate(captions)}
    sim = clip.encode_images(x) @ clip.encode_texts(captions).T
    kinds = list(toycanvas.KINDS)
    wins = dict.fromkeys(kinds, 0)
    total = 0
    for i, row in enumerate(lab_idx):
        lab = {k: toycanvas.KINDS[k][j] for k, j in zip(kinds, row, strict=True)}
        true = sim[i, index[_caption(lab)]]
        ok_all = True
        for k in kinds:
            rivals = [index[_caption({**lab, k: v})] for v in toycanvas.KINDS[k] if v != lab[k]]
            ok = bool((true > sim[i, rivals]).all())
            wins[k] += ok
            ok_all &= ok
        total += ok_all
    out = {"rank1": total / n, "n_images": n}
    out.update({f"rank1_{k}": wins[k] / n for k in kinds})
    return out
