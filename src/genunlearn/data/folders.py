"""Bring-your-own labelled image folders: ``DIR/<class>/<image>`` with an optional captions file.

Used by ``genunlearn testbed train --data DIR`` to train a toy pipeline and its evaluator on a
user's own world. Captions come from ``DIR/captions.csv`` (columns ``file,caption``; ``file`` is
the path relative to ``DIR``) when present, else ``"a {class}"``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from genunlearn.types import GenUnlearnError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_folder(directory: str | Path, size: int = 32):
    """Read a class-per-folder image directory.

    Args:
        directory: root with one sub-folder per class.
        size: images are resized (bicubic) to ``size`` x ``size`` RGB.

    Returns:
        (uint8 images [N, size, size, 3], int64 labels [N, 1], captions, class names).

    Raises:
        GenUnlearnError: the directory is missing, holds no class folder with images, or has a
            captions file without the 'file' and 'caption' columns.
    """
    from PIL import Image

    root = Path(directory)
    if not root.is_dir():
        raise GenUnlearnError(f"--data {root}: not a directory")
    classes = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())
    )
    if not classes:
        raise GenUnlearnError(
            f"--data {root}: expected one sub-folder per class holding images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}); found none"
        )
    captions: dict[str, str] = {}
    cap_file = root / "captions.csv"
    if cap_file.is_file():
        with cap_file.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
                raise GenUnlearnError(f"{cap_file}: needs the columns 'file' and 'caption'")
            captions = {row["file"]: row["caption"] for row in reader}
    imgs, labels, caps = [], [], []
    for ci, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            im = Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC)
            imgs.append(np.asarray(im, dtype=np.uint8))
            labels.append([ci])
            caps.append(captions.get(f"{name}/{f.name}", f"a {name}"))
    return np.stack(imgs), np.asarray(labels, dtype=np.int64), caps, classes
