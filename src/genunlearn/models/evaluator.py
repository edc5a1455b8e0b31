"""The world's evaluator: a small CNN with one classification head per attribute.

On ToyCanvas it has ``object``, ``style`` and ``colour`` heads and plays the role that the
fine-tuned ViT-L/16 plays in UnlearnCanvas: it scores UA / IRA / CRA, gives the features of the
feature-space FID, and judges attack success. For a user's own image folder (``testbed train
--data DIR``) it has a single ``class`` head.

This module loads and runs it; :mod:`genunlearn.testbed.evaluator` trains it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from genunlearn.types import GenUnlearnError

WEIGHTS = "evaluator.safetensors"
META = "evaluator.json"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(),
    )


class Evaluator(nn.Module):
    """Multi-head image classifier for a labelled world.

    Args:
        heads: attribute name -> ordered list of label names.
        width: channels of the first stage (doubled twice).
        image_size: side of the square input images the evaluator was trained on.
    """

    def __init__(self, heads: dict[str, list[str]], width: int = 32, image_size: int = 32):
        super().__init__()
        reserved = [k for k in heads if hasattr(nn.Module, k) or k in ("body", "heads")]
        if reserved:
            from genunlearn.types import GenUnlearnError

            raise GenUnlearnError(
                f"evaluator head names {reserved} clash with torch.nn.Module attributes; "
                "rename those attributes (e.g. 'kind' instead of 'type')"
            )
        self.heads_labels = {k: list(v) for k, v in heads.items()}
        self.width = width
        self.image_size = image_size
        w = width
        self.body = nn.Sequential(
            _block(3, w),
            nn.MaxPool2d(2),
            _block(w, 2 * w),
            nn.MaxPool2d(2),
            _block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, len(v)) for k, v in heads.items()})

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    @property
    def device(self) -> torch.device:
        """Where the evaluator's weights are (inputs are moved there)."""
        return next(self.parameters()).device

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float()  # images may come from a model on another device
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        return x * 2.0 - 1.0

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, feature_dim] of images in [0, 1] (used by the feature-space FID)."""
        return self.body(self._prep(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {k: h(f) for k, h in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, list[str]]:
        """Label names per head for images [N, 3, H, W] in [0, 1].

        Raises:
            GenUnlearnError: the images hold NaN or infinity (broken images are never labelled,
                so a broken model can never score as a perfect erasure).
        """
        if not torch.isfinite(images).all():
            raise GenUnlearnError(
                "the evaluator was given NaN or infinite images; they come from a broken model "
                "and cannot be labelled"
            )
        was = self.training
        self.eval()
        out: dict[str, list[str]] = {k: [] for k in self.heads_labels}
        for i in range(0, len(images), batch_size):
            logits = self(images[i : i + batch_size])
            for k, v in logits.items():
                out[k] += [self.heads_labels[k][j] for j in v.argmax(1).tolist()]
        self.train(was)
        return out

    def save(self, directory: str | Path) -> None:
        """Write ``evaluator.safetensors`` and ``evaluator.json`` into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / WEIGHTS))
        meta = {"heads": self.heads_labels, "width": self.width, "image_size": self.image_size}
        (d / META).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> Evaluator:
        """Load an evaluator saved by :meth:`save`."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / META).is_file() or not (d / WEIGHTS).is_file():
            from genunlearn.types import GenUnlearnError

            raise GenUnlearnError(
                f"{d} is not an evaluator directory: expected {META} and {WEIGHTS} in it"
            )
        meta = json.loads((d / META).read_text())
        with torch.device("cpu"):  # built and loaded on the CPU; ``.to()`` moves it
            ev = cls(meta["heads"], meta["width"], meta["image_size"])
        ev.load_state_dict(load_file(str(d / WEIGHTS)))
        return ev.eval()
