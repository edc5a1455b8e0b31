"""The memorized (prompt, image) pairs of a memorizing toy-sd variant, read back from its directory.

``genunlearn testbed memorize`` (``testbed.memorize``) writes ``memorize.json`` (recipe, base
model hash, the memorized prompts with their ToyCanvas labels and mark, and *control* prompts:
world captions with tags that were never trained, of the same form and length) and
``memorized.npz`` (the K training images) into the variant's pipeline directory; benchmarks of
memorization detection and mitigation read them here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genunlearn.types import GenUnlearnError

MEMO_FILE = "memorize.json"
IMAGES_FILE = "memorized.npz"


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
