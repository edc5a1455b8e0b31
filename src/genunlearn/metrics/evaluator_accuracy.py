"""Accuracy of a world's evaluator on fresh ToyCanvas images (seeds never used in training).

The evaluator is the judge of every toy-world figure (UA / IRA / CRA, attack success), so its own
accuracy is printed by ``genunlearn eval evaluator`` (figures: docs/results.md#testbed-quality).
"""

from __future__ import annotations

import numpy as np
import torch

from genunlearn.types import GenUnlearnError


def evaluator_accuracy(model, n: int = 2000, seed: int = 12345) -> dict[str, float]:
    """Per-head accuracy on ``n`` fresh images of world ``seed`` (ToyCanvas worlds only)."""
    from genunlearn.data import toycanvas

    if model.world is None or model.world.name != "toycanvas":
        raise GenUnlearnError("evaluator accuracy on fresh images needs the ToyCanvas world")
    imgs, labels, _ = toycanvas.make_arrays(seed, n)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    preds = model.evaluator.predict(x)
    out: dict[str, float] = {}
    for j, head in enumerate(("object", "style", "colour")):
        names = np.asarray(model.world.heads[head])[labels[:, j]]
        out[f"{head}_acc"] = float(np.mean(np.asarray(preds[head]) == names))
    out["n_images"] = n
    out["seed"] = seed
    return out
