"""ToyCanvas: the procedural, seeded world genunlearn's testbed lives in.

A stand-in for UnlearnCanvas (Zhang et al., 2024, arXiv:2402.11846) small enough for a CPU: every
image is 32x32 RGB and shows one **object** (a shape) drawn in one **style** (a rendering of its
fill) and one **colour**, with jittered position, size, rotation and background. Captions follow
UnlearnCanvas' template: ``"a {colour} {object} in {style} style"``.

``sample(seed, index)`` is a pure function of its arguments: nothing is stored on disk, and the
same ``(seed, index)`` gives the same image, labels and caption on every machine (only numpy's
``default_rng`` and float arithmetic are involved).

Shapes are implicit functions on a 4x super-sampled grid (anti-aliasing comes from averaging), the
style is a texture in image space, so an object keeps its identity under any style.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OBJECTS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "ring",
    "diamond",
    "moon",
    "arrow",
)
STYLES: tuple[str, ...] = (
    "flat",
    "striped",
    "dotted",
    "checkered",
    "gradient",
    "outlined",
    "noisy",
    "wavy",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 70, 215),
    "yellow": (235, 195, 20),
    "purple": (145, 45, 185),
}
KINDS: dict[str, tuple[str, ...]] = {
    "object": OBJECTS,
    "style": STYLES,
    "colour": tuple(COLOURS),
}
SIZE = 32
_SS = 3  # super-sampling factor for anti-aliased edges


def caption(colour: str, obj: str, style: str) -> str:
    """The UnlearnCanvas-style caption of one image."""
    return f"a {colour} {obj} in {style} style"


def kind_of(name: str) -> str | None:
    """The kind ("object", "style", "colour") of a ToyCanvas concept name, or None."""
    for kind, names in KINDS.items():
        if name in names:
            return kind
    return None


@dataclass(frozen=True)
class Sample:
    """One ToyCanvas image with its labels."""

    image: np.ndarray  # uint8 [32, 32, 3]
    object: str
    style: str
    colour: str

    @property
    def caption(self) -> str:
        return caption(self.colour, self.object, self.style)

    @property
    def labels(self) -> dict[str, str]:
        return {"object": self.object, "style": self.style, "colour": self.colour}


# --------------------------------------------------------------------------- shapes
def _shape_mask(obj: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape in its own frame: roughly [-1, 1]^2, v pointing down."""
    r = np.hypot(u, v)
    if obj == "circle":
        return r <= 0.9
    if obj == "square":
        return np.maximum(abs(u), abs(v)) <= 0.75
    if obj == "triangle":
        return (v <= 0.75) & (abs(u) <= 0.95 * (v + 0.9) / 1.65)
    if obj == "star":
        a = ((np.arctan2(v, u) + np.pi / 2) % (2 * np.pi / 5)) / (2 * np.pi / 5)
        tri = np.abs(1.0 - 2.0 * a)  # 1 at the five points, 0 between them
        return r <= 0.4 + 0.58 * tri**1.6
    if obj == "heart":
        x, y = u * 1.15, -v * 1.15 + 0.15
        return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0
    if obj == "cross":
        return ((abs(u) <= 0.3) & (abs(v) <= 0.92)) | ((abs(v) <= 0.3) & (abs(u) <= 0.92))
    if obj == "ring":
        return (r >= 0.42) & (r <= 0.95)
    if obj == "diamond":
        return abs(u) / 0.7 + abs(v) <= 0.97
    if obj == "moon":
        return (r <= 0.9) & (np.hypot(u - 0.5, v + 0.15) > 0.72)
    if obj == "arrow":
        shaft = (abs(v) <= 0.26) & (u >= -0.95) & (u <= 0.15)
        head = (u >= 0.05) & (u <= 0.95) & (abs(v) <= 0.75 * (0.95 - u) / 0.9)
        return shaft | head
    raise KeyError(obj)


def _erode(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary erosion with a (2k+1)^2 square, via an integral image (no scipy needed)."""
    h, w = mask.shape
    p = np.pad(mask.astype(np.int32), k + 1)
    c = p.cumsum(0).cumsum(1)
    n = 2 * k + 1
    box = c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]
    return box[:h, :w] == n * n


# --------------------------------------------------------------------------- styles
def _style_fill(style, col, x, y, mask, rng) -> np.ndarray:
    """RGB fill (float, 0..255) of the object's pixels for one style; x, y in pixel units."""
    col = np.asarray(col, dtype=np.float64)
    pale = 0.25 * col + 0.75 * 245.0
    shape = x.shape + (3,)
    phase = rng.uniform(0, 1)
    if style == "flat":
        return np.broadcast_to(col, shape)
    if style == "striped":
        on = ((x + y) / 6.0 + phase) % 1.0 < 0.5
    elif style == "dotted":
        gx = (x / 5.0 + phase) % 1.0 - 0.5
        gy = (y / 5.0 + phase) % 1.0 - 0.5
        on = np.hypot(gx, gy) * 5.0 < 1.5
    elif style == "checkered":
        on = (np.floor(x / 4.0 + phase) + np.floor(y / 4.0 + phase)) % 2 == 0
        return np.where(on[..., None], col, 0.4 * col)
    elif style == "wavy":
        on = ((y + 2.2 * np.sin(x * 2 * np.pi / 9.0 + 6.28 * phase)) / 5.0) % 1.0 < 0.5
    elif style == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        t = (x - x[mask].mean()) * np.cos(ang) + (y - y[mask].mean()) * np.sin(ang)
        t = np.clip(t / 12.0 + 0.5, 0.0, 1.0)[..., None]
        return (1 - t) * 0.3 * col + t * (0.45 * col + 0.55 * 250.0)
    elif style == "noisy":
        g = rng.normal(0.0, 1.0, size=(9, 9))
        idx = np.clip((y / SIZE * 8).astype(int), 0, 8), np.clip((x / SIZE * 8).astype(int), 0, 8)
        fine = rng.normal(0.0, 1.0, size=(SIZE, SIZE))
        n = 0.7 * g[idx] + 0.5 * fine[np.clip(y.astype(int), 0, 31), np.clip(x.astype(int), 0, 31)]
        return np.clip(col * (1.0 + 0.45 * n[..., None]), 0, 255)
    elif style == "outlined":
        return np.broadcast_to(col, shape)  # the interior is cut out by the caller
    else:
        raise KeyError(style)
    return np.where(on[..., None], col, pale)


# --------------------------------------------------------------------------- rendering
def render(obj: str, style: str, colour: str, rng: np.random.Generator, return_mask: bool = False):
    """Draw one image of ``obj`` in ``style`` and ``colour`` with jitter drawn from ``rng``.

    Args:
        return_mask: also return the object's region (coverage of the whole shape, outline
            interior included, float32 [32, 32] in [0, 1]); the image is the same either way.

    Returns:
        uint8 array [32, 32, 3] (and the mask when ``return_mask``).
    """
    if obj not in OBJECTS or style not in STYLES or colour not in COLOURS:
        raise KeyError(f"not a ToyCanvas concept triple: {(obj, style, colour)}")
    n = SIZE * _SS
    pix = (np.arange(n) + 0.5) / _SS
    x, y = np.meshgrid(pix, pix)  # x to the right, y down, in pixel units
    radius = rng.uniform(9.5, 13.0)
    margin = radius + 0.5
    cx, cy = rng.uniform(margin, SIZE - margin, size=2)
    rot = np.deg2rad(rng.uniform(-15, 15))
    dx, dy = (x - cx) / radius, (y - cy) / radius
    u = np.cos(rot) * dx + np.sin(rot) * dy
    v = -np.sin(rot) * dx + np.cos(rot) * dy
    mask = _shape_mask(obj, u, v)
    region = mask.reshape(SIZE, _SS, SIZE, _SS).mean(axis=(1, 3)).astype(np.float32)
    if style == "outlined":
        mask = mask & ~_erode(mask, int(1.6 * _SS))
    col = np.clip(np.asarray(COLOURS[colour]) + rng.integers(-15, 16, size=3), 0, 255)
    bg = rng.uniform(205, 245) + rng.uniform(-8, 8, size=3)
    fill = _style_fill(style, col, x, y, mask, rng)
    img = np.where(mask[..., None], fill, bg)
    img = img.reshape(SIZE, _SS, SIZE, _SS, 3).mean(axis=(1, 3))
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return (img, region) if return_mask else img


def sample(seed: int, index: int) -> Sample:
    """The ``index``-th image of world ``seed``: labels uniform over all triples; pure."""
    rng = np.random.default_rng([int(seed), int(index)])
    obj = OBJECTS[rng.integers(len(OBJECTS))]
    style = STYLES[rng.integers(len(STYLES))]
    colour = tuple(COLOURS)[rng.integers(len(COLOURS))]
    return Sample(render(obj, style, colour, rng), obj, style, colour)


def sample_labelled(obj: str, style: str, colour: str, seed: int, index: int) -> np.ndarray:
    """An image with the given labels; the jitter is a pure function of (labels, seed, index)."""
    key = [OBJECTS.index(obj), STYLES.index(style), tuple(COLOURS).index(colour)]
    return render(obj, style, colour, np.random.default_rng([int(seed), int(index), *key]))


def sample_labelled_with_mask(obj: str, style: str, colour: str, seed: int, index: int):
    """:func:`sample_labelled` plus the object's region mask (float32 [32, 32] in [0, 1]).

    The region is what a segmenter (MACE's Grounded-SAM) would return for the object; styles and
    colours live on the object's pixels, so it is their region too.
    """
    key = [OBJECTS.index(obj), STYLES.index(style), tuple(COLOURS).index(colour)]
    rng = np.random.default_rng([int(seed), int(index), *key])
    return render(obj, style, colour, rng, return_mask=True)


def make_arrays(seed: int, n: int, start: int = 0, progress: bool = False):
    """Render ``n`` images of world ``seed`` starting at ``start``.

    Returns:
        (uint8 images [n, 32, 32, 3], int64 labels [n, 3] as (object, style, colour) indices,
        captions list).
    """
    from tqdm.auto import tqdm

    imgs = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.empty((n, 3), dtype=np.int64)
    caps = []
    colours = tuple(COLOURS)
    for i in tqdm(range(n), disable=not progress, desc="rendering ToyCanvas", leave=False):
        s = sample(seed, start + i)
        imgs[i] = s.image
        labels[i] = (OBJECTS.index(s.object), STYLES.index(s.style), colours.index(s.colour))
        caps.append(s.caption)
    return imgs, labels, caps


# --------------------------------------------------------------------------- prompt sets
def grid_prompts(n_prompts: int | None = None) -> list[tuple[str, str, str]]:
    """Every (object, style) pair once with a colour cycling through all colours.

    Returns:
        list of (colour, object, style); 80 triples for the default world.
    """
    colours = tuple(COLOURS)
    out = []
    for i, o in enumerate(OBJECTS):
        for j, s in enumerate(STYLES):
            out.append((colours[(i + j) % len(colours)], o, s))
    return out[:n_prompts] if n_prompts else out


def concept_split(target: str) -> dict[str, list[tuple[str, str, str]]]:
    """UnlearnCanvas-style prompt split for a target concept.

    Returns:
        ``{"target": [...], "in_domain": [...], "cross_domain": [...]}`` of (colour, object, style)
        triples: prompts that contain the target; prompts of other concepts of the same kind; and
        prompts without the target whose *other-kind* labels are scored (cross-domain retain).
    """
    kind = kind_of(target)
    if kind is None:
        raise KeyError(target)
    pos = {"colour": 0, "object": 1, "style": 2}[kind]
    grid = all_triples()
    has = [t for t in grid if t[pos] == target]
    without = [t for t in grid if t[pos] != target]
    return {"target": has, "in_domain": without, "cross_domain": without}


def all_triples() -> list[tuple[str, str, str]]:
    """All (colour, object, style) triples of the world, in a fixed order."""
    return [(c, o, s) for o in OBJECTS for s in STYLES for c in COLOURS]
