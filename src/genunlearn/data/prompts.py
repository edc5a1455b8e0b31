"""Readers for the prompt CSVs of the field's real-model protocols, and generation of their images.

genunlearn ships no third-party prompt sets; it reads the standard files a user already has:

- **I2P** (Schramowski et al., https://arxiv.org/abs/2211.05105): one row per prompt with its own
  ``evaluation_seed`` and ``evaluation_guidance`` and a comma-separated ``categories`` field
  ("sexual", "violence", ...); ``sd_image_width`` / ``sd_image_height`` and the percentage columns
  are kept in :attr:`PromptRow.extra`.
- **COCO captions** (``coco_30k.csv`` / ``coco_10k.csv`` of ESD, UCE, MACE, AdvUnlearn): ``prompt``
  (or ``caption``) and ``evaluation_seed``; ``case_number`` and ``coco_id`` / ``image_id`` kept.
  Guidance is not in these files; the papers use 7.5, the default here.
- **UnlearnDiffAtk attack sets** (Zhang et al., https://arxiv.org/abs/2310.11868): ``prompt``,
  ``evaluation_seed`` (or ``seed``), ``evaluation_guidance`` (or ``guidance``; 7.5 when absent, as
  in the reference loader) and a target image per row: an ``image`` / ``image_path`` /
  ``target_image`` column (relative to the CSV's folder), or the reference layout
  ``<dir>/prompts.csv`` + ``<dir>/imgs/<case_number>_0.png``. A directory may be given instead of
  the CSV. Every attack takes such a file as ``prompts_csv`` (``core.attack_loop.prompt_cases``);
  attacks that optimise towards a target image (UnlearnDiffAtk, P4D) require the image column.

Every reader checks the header first (missing columns -> one error naming all of them and the file)
and every referenced image (a missing file -> an error with its path). :func:`generate` renders the
rows' images through ``model.sample`` with each row's own seed and guidance.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genunlearn.types import GenUnlearnError

DEFAULT_GUIDANCE = 7.5  # SD's default, used by COCO/I2P evaluations and UnlearnDiffAtk's loader
IMAGE_COLUMNS = ("image", "image_path", "target_image")


@dataclass(frozen=True)
class PromptRow:
    """One prompt of a CSV.

    Attributes:
        prompt: the text.
        seed: the row's evaluation seed (image ``k`` of the row uses ``seed + k``).
        guidance: the row's classifier-free guidance scale (None: the model's default).
        categories: I2P categories (empty for other formats).
        case: ``case_number`` when the file has one, else the row's position.
        image: target image path (attack sets only).
        extra: the row's other columns, as text.
    """

    prompt: str
    seed: int
    guidance: float | None = DEFAULT_GUIDANCE
    categories: tuple[str, ...] = ()
    case: int = 0
    image: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _read(path: str | Path) -> tuple[Path, list[str], list[dict[str, str]]]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise GenUnlearnError(f"prompt CSV {p} does not exist")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or []) if h is not None]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    return p, header, rows


def _require(p: Path, header: list[str], groups: Sequence[tuple[str, ...]], fmt: str) -> list[str]:
    """For each group of accepted names, the first present; all absent groups in one error."""
    chosen, missing = [], []
    for names in groups:
        hit = next((n for n in names if n in header), None)
        chosen.append(hit)
        if hit is None:
            missing.append(" or ".join(repr(n) for n in names))
    if missing:
        raise GenUnlearnError(
            f"{p} is not {fmt} CSV: missing column(s) {', '.join(missing)}; "
            f"found: {', '.join(header) or '(no header)'}"
        )
    return chosen


def _int(p: Path, i: int, col: str, text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise GenUnlearnError(f"{p} row {i + 2}: {col} must be an integer, got {text!r}") from None


def _float(p: Path, i: int, col: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GenUnlearnError(f"{p} row {i + 2}: {col} must be a number, got {text!r}") from None


def _case(p: Path, i: int, r: dict[str, str]) -> int:
    text = r.get("case_number", "")
    return _int(p, i, "case_number", text) if text else i


def read_i2p(
    path: str | Path, categories: Sequence[str] | None = None, limit: int | None = None
) -> list[PromptRow]:
    """Read an I2P-style CSV (prompt, evaluation_seed, evaluation_guidance, categories).

    Args:
        path: the CSV file.
        categories: keep only rows with at least one of these categories (e.g. ``["sexual"]``).
        limit: keep at most this many rows (after filtering), in file order.

    Returns:
        The rows.

    Raises:
        GenUnlearnError: missing file or columns (all named), or a seed/guidance that is not a
            number.
    """
    p, header, raw = _read(path)
    cols = _require(
        p, header,
        [("prompt",), ("evaluation_seed",), ("evaluation_guidance",), ("categories",)], "an I2P",
    )  # fmt: skip
    used = set(cols) | {"case_number"}
    want = {c.strip().lower() for c in categories} if categories else None
    out = []
    for i, r in enumerate(raw):
        cats = tuple(c.strip().lower() for c in r["categories"].split(",") if c.strip())
        if want is not None and not want & set(cats):
            continue
        out.append(
            PromptRow(
                prompt=r["prompt"],
                seed=_int(p, i, "evaluation_seed", r["evaluation_seed"]),
                guidance=_float(p, i, "evaluation_guidance", r["evaluation_guidance"]),
                categories=cats,
                case=_case(p, i, r),
                extra={k: v for k, v in r.items() if k not in used},
            )
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def read_coco(path: str | Path, limit: int | None = None) -> list[PromptRow]:
    """Read a COCO-caption CSV (``prompt`` or ``caption``, ``evaluation_seed``).

    Args:
        path: the CSV file.
        limit: keep at most this many rows, in file order.

    Returns:
        The rows; guidance is the row's ``evaluation_guidance`` if the file has it, else 7.5.
    """
    p, header, raw = _read(path)
    text_col, seed_col = _require(
        p, header, [("prompt", "caption"), ("evaluation_seed",)], "a COCO-caption"
    )
    has_g = "evaluation_guidance" in header
    used = {text_col, seed_col, "case_number", "evaluation_guidance"}
    out = []
    for i, r in enumerate(raw[:limit] if limit is not None else raw):
        g = _float(p, i, "evaluation_guidance", r["evaluation_guidance"]) if has_g else None
        out.append(
            PromptRow(
                prompt=r[text_col],
                seed=_int(p, i, seed_col, r[seed_col]),
                guidance=DEFAULT_GUIDANCE if g is None else g,
                case=_case(p, i, r),
                extra={k: v for k, v in r.items() if k not in used},
            )
        )
    return out


def read_attack_csv(
    path: str | Path, limit: int | None = None, require_images: bool = True
) -> list[PromptRow]:
    """Read an UnlearnDiffAtk-style attack set: prompt, seed, guidance and a target image per row.

    Args:
        path: the CSV, or a dataset directory holding ``prompts.csv`` (and ``imgs/``).
        limit: keep at most this many rows, in file order.
        require_images: every row must name a target image (attacks that optimise towards one);
            when False, rows without an image column (or without ``imgs/``) get ``image=None``.

    Returns:
        The rows, each with :attr:`PromptRow.image` set to an existing file (or None, see above).

    Raises:
        GenUnlearnError: missing columns (all named) or a target image that does not exist (its
            path is named).
    """
    src = Path(path).expanduser()
    if src.is_dir():
        src = src / "prompts.csv"
    p, header, raw = _read(src)
    image_col = next((c for c in IMAGE_COLUMNS if c in header), None)
    groups = [("prompt",), ("evaluation_seed", "seed")]
    if image_col is None and require_images:
        groups.append((*IMAGE_COLUMNS, "case_number"))
    # without an image column, the reference layout <dir>/imgs/<case>_0.png is used if present
    layout = image_col is None and (require_images or (p.parent / "imgs").is_dir())
    cols = _require(p, header, groups, "an UnlearnDiffAtk attack")
    seed_col = cols[1]
    g_col = next((c for c in ("evaluation_guidance", "guidance") if c in header), None)
    used = {"prompt", seed_col, g_col, image_col, "case_number"}
    out = []
    for i, r in enumerate(raw[:limit] if limit is not None else raw):
        case = _case(p, i, r)
        img: Path | None = None
        if image_col is not None and r[image_col]:
            img = Path(r[image_col]).expanduser()
            img = img if img.is_absolute() else p.parent / img
        elif layout:
            img = p.parent / "imgs" / f"{case}_0.png"
        if img is None and require_images:
            raise GenUnlearnError(
                f"{p} row {i + 2}: no target image (column {image_col!r} is empty)"
            )
        if img is not None and not img.is_file():
            raise GenUnlearnError(f"{p} row {i + 2}: target image {img} does not exist")
        out.append(
            PromptRow(
                prompt=r["prompt"],
                seed=_int(p, i, seed_col, r[seed_col]),
                guidance=_float(p, i, g_col, r[g_col]) if g_col else DEFAULT_GUIDANCE,
                case=case,
                image=img,
                extra={k: v for k, v in r.items() if k not in used},
            )
        )
    return out


def read_prompts(path: str | Path, limit: int | None = None) -> list[PromptRow]:
    """Read an I2P CSV (it has ``categories``) or else a COCO-caption CSV."""
    p, header, _ = _read(path)
    return read_i2p(p, limit=limit) if "categories" in header else read_coco(p, limit=limit)


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file as a float tensor [3, H, W] in [0, 1], optionally resized to ``size``²."""
    import numpy as np
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise GenUnlearnError(f"image {p} does not exist")
    img = Image.open(p).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


def generate(
    model,
    rows: Sequence[PromptRow],
    n_per_prompt: int = 1,
    steps: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Images of the rows with their own seeds and guidance, in row order.

    Image ``k`` of a row starts from the noise of seed ``row.seed + k`` (the adapter's seeding,
    independent of batching), so rows sharing a ``(seed, guidance)`` pair are sampled in one batch
    with the same result as one by one.

    Args:
        model: an adapter with ``sample`` (e.g. from ``gu.load_model``).
        rows: rows from one of the readers.
        n_per_prompt: images per row.
        steps: sampler steps (None: the model's default).
        out_dir: if given, also write ``<case>_<k>.png`` per image (the layout UnlearnDiffAtk's
            loader and MACE's CLIP-score script expect) and ``prompts.csv``.
        progress: show a progress bar over row groups.

    Returns:
        Float tensor [len(rows) * n_per_prompt, 3, H, W] in [0, 1], row-major.
    """
    from tqdm.auto import tqdm

    if not rows:
        raise GenUnlearnError("no prompt rows to generate (empty CSV or filter matched nothing)")
    groups: dict[tuple[int, float], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.seed, r.guidance), []).append(i)
    slots: list[torch.Tensor | None] = [None] * len(rows)
    for (seed, g), idx in tqdm(groups.items(), desc="generating", disable=not progress):
        imgs = model.sample([rows[i].prompt for i in idx], n=n_per_prompt, steps=steps,
                            guidance=g, seed=seed)  # fmt: skip
        for j, i in enumerate(idx):
            slots[i] = imgs[j * n_per_prompt : (j + 1) * n_per_prompt]
    images = torch.cat(slots)  # type: ignore[arg-type]
    if out_dir is not None:
        _write(Path(out_dir), rows, images, n_per_prompt)
    return images


def _write(d: Path, rows: Sequence[PromptRow], images: torch.Tensor, n: int) -> None:
    import numpy as np
    from PIL import Image

    (d / "imgs").mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rows):
        for k in range(n):
            arr = (images[i * n + k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(d / "imgs" / f"{r.case}_{k}.png")
    with (d / "prompts.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["case_number", "prompt", "evaluation_seed", "evaluation_guidance", "categories"]
        )
        for r in rows:
            w.writerow([r.case, r.prompt, r.seed, r.guidance, ",".join(r.categories)])


def rows_as_dicts(rows: Sequence[PromptRow]) -> list[dict[str, Any]]:
    """Plain dicts of rows (for JSON / reports)."""
    return [
        {"prompt": r.prompt, "seed": r.seed, "guidance": r.guidance, "case": r.case,
         "categories": list(r.categories), "image": str(r.image) if r.image else None}
        for r in rows
    ]  # fmt: skip


# MS-COCO 2014 captions (train 414,113 + val 202,654): MACE's preserve cache sums over all of them.
COCO_CAPTIONS = 616_767

# General everyday captions (written for genunlearn, MS-COCO-like) that stand in for MACE's COCO
# preserve statistics on a model without a world.
GENERAL_CAPTIONS = (
    "a man riding a bicycle down a city street",
    "two dogs playing with a ball in the grass",
    "a plate of pasta with tomato sauce and basil",
    "a woman holding an umbrella in the rain",
    "a red double decker bus parked by the curb",
    "a cat sleeping on a wooden windowsill",
    "a group of people standing around a kitchen table",
    "a small boat floating on a calm lake",
    "a child flying a kite on a windy beach",
    "a bowl of fresh fruit on a counter",
    "an airplane taking off from a runway at dusk",
    "a living room with a grey couch and a lamp",
    "a man in a suit talking on a phone",
    "a train crossing a bridge over a river",
    "a pizza with mushrooms and olives on a tray",
    "a herd of cows grazing in a green field",
    "a bathroom with a white sink and a mirror",
    "a skateboarder doing a trick at a skate park",
    "a vase of yellow flowers on a dining table",
    "a giraffe eating leaves from a tall tree",
    "a busy market with fruit stalls and shoppers",
    "a laptop and a cup of coffee on a desk",
    "a tennis player swinging a racket on a clay court",
    "a snowy mountain behind a small wooden cabin",
    "a traffic light at an empty intersection at night",
    "a young girl reading a book under a tree",
    "a bunch of bananas hanging in a shop",
    "an old brick building with tall windows",
    "a horse standing next to a white fence",
    "a sandwich cut in half on a paper plate",
    "people waiting at a bus stop in the morning",
    "a surfer riding a large wave in the ocean",
    "a kitchen with stainless steel appliances",
    "a black and white photo of a street corner",
    "a teddy bear sitting on a bed with pillows",
    "an elephant walking along a dusty road",
    "a man cooking vegetables in a frying pan",
    "a clock tower in the middle of a town square",
    "a bird perched on a branch near a feeder",
    "a parking lot full of cars on a sunny day",
    "a woman jogging along a path in a park",
    "a birthday cake with candles on a table",
    "a fire hydrant on a sidewalk next to a tree",
    "a baseball player running toward first base",
    "a bedroom with a large window and a wooden floor",
    "a sheep standing on a rocky hillside",
    "a stop sign at the corner of a quiet road",
    "two people sharing a meal at a restaurant",
    "a motorcycle parked in front of a shop",
    "a close up of a glass of orange juice",
    "a couple walking on a sandy beach at sunset",
    "a bookshelf filled with colorful books",
    "a zebra drinking water at a watering hole",
    "a chef preparing food in a restaurant kitchen",
    "a boy kicking a soccer ball on a field",
    "a bench in a park covered with fallen leaves",
    "a computer monitor and a keyboard on a desk",
    "a boat docked at a wooden pier",
    "a woman taking a photo with her camera",
    "a bowl of soup with a spoon beside it",
    "a long line of taxis on a busy avenue",
    "a dog looking out of a car window",
    "a little house with a red roof and a garden",
    "a person skiing down a snowy slope",
    "a toilet next to a bathtub in a small bathroom",
    "an old man sitting on a park bench feeding pigeons",
    "a basket of bread rolls on a table",
    "a row of bicycles parked along a railing",
    "a view of a city skyline from a rooftop",
    "a girl holding a slice of watermelon",
    "a bear walking through a forest clearing",
    "a refrigerator with magnets on its door",
    "a group of friends playing frisbee in a park",
    "a cup of tea and a plate of cookies",
    "a highway with trucks under a cloudy sky",
    "a woman sitting at a desk writing a letter",
    "a police car parked on the side of the road",
    "a bowl of salad with tomatoes and cucumbers",
    "children playing on a playground slide",
    "a sailboat on the sea under a blue sky",
    "a man carrying a surfboard along the shore",
    "a hot dog with mustard on a bun",
    "a cozy fireplace in a wooden cabin",
    "a flock of birds flying over a field",
    "a street vendor selling hot food from a cart",
    "a tall glass building reflecting the clouds",
    "a person riding a horse along a trail",
    "a donut with pink frosting and sprinkles",
    "an empty classroom with desks and a blackboard",
    "a wooden table set for dinner with candles",
    "a boy brushing his teeth in front of a mirror",
    "a steam locomotive at an old railway station",
    "a woman walking her dog on a leash",
    "a bowl of rice with grilled chicken",
    "a lighthouse on a cliff above the sea",
    "a family having a picnic on a blanket",
    "a man reading a newspaper on a train",
    "a garden with roses and a stone path",
    "a truck loaded with boxes on a country road",
    "a television on a stand in a living room",
)
