"""The ToyCanvas watermark: a small dark badge stamped into a corner, and watermarked renders.

World knowledge shared by the watermark testbed variant (``testbed.watermark``), its detector
(``metrics.watermark``) and Geom-Erasing: the glyph (:data:`GLYPH`), the names of the four image
cells (:data:`CELL_NAMES`, single tokens of the toy tokenizer: "top", "bottom", "left",
"right"), how a badge is stamped (:func:`stamp`) and which renders carry one
(:func:`watermark_arrays`, pure in ``(seed, index)``).
"""

from __future__ import annotations

import numpy as np

# the watermark: a 6x6 dark frame with a light 2x2 centre (a "badge"), stamped almost opaque
GLYPH = np.pad(np.zeros((2, 2), np.float32), 2, constant_values=1.0)
CELL_NAMES: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
# first render index of watermarked data: toy-sd's own training images come before it
FIRST_INDEX = 1_000_000


def stamp(image: np.ndarray, corner: int, rng: np.random.Generator) -> np.ndarray:
    """Stamp the watermark into ``corner`` (index into :data:`CELL_NAMES`) of a uint8 HWC image.

    Position (1-2 px from the edges), ink (near black) and opacity jitter a little per image, so
    that a detector cannot key on one exact pixel pattern.
    """
    h, w = image.shape[:2]
    k = GLYPH.shape[0]
    off_y, off_x = rng.integers(1, 3, size=2)
    top = int(off_y) if corner in (0, 1) else h - k - int(off_y)
    left = int(off_x) if corner in (0, 2) else w - k - int(off_x)
    alpha = GLYPH[..., None] * rng.uniform(0.85, 1.0)
    ink = rng.uniform(5, 35)
    out = image.astype(np.float32)
    patch = out[top : top + k, left : left + k]
    out[top : top + k, left : left + k] = patch * (1 - alpha) + ink * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def watermark_arrays(seed: int, n: int, p: float, start: int = FIRST_INDEX):
    """ToyCanvas images of world ``seed``, each watermarked with probability ``p``.

    Returns:
        (uint8 images [n, 32, 32, 3], int64 corners [n] (-1 = no watermark), int64 labels
        [n, 3], captions). Pure in ``(seed, index)``.
    """
    from genunlearn.data import toycanvas

    imgs, labels, caps = toycanvas.make_arrays(seed, n, start)
    corners = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([int(seed), 7_919, start + i])
        if rng.random() < p:
            corners[i] = int(rng.integers(len(CELL_NAMES)))
            imgs[i] = stamp(imgs[i], int(corners[i]), rng)
    return imgs, corners, labels, caps
