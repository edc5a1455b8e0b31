"""The ToyCanvas watermark detector: per-cell logits of the badge of ``data.watermark``.

A small fully convolutional CNN scores every position of an 8x8 feature map; the maximum score
inside each quadrant is that cell's logit, in :data:`~genunlearn.data.watermark.CELL_NAMES` order
(top left, top right, bottom left, bottom right). About 17k parameters (~70 KB), committed under
``assets/watermark_detector``. This module builds, saves and loads it (:func:`load_detector`:
the committed one); the metric that uses it is ``metrics.watermark``, Geom-Erasing uses it too,
and its training recipe is ``testbed.detector``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from genunlearn.types import GenUnlearnError

WEIGHTS, META = "detector.safetensors", "detector.json"
_LOADED: dict[str, WatermarkDetector] = {}


def detector_dir() -> Path:
    """Directory of the committed detector weights."""
    from genunlearn.models import assets_dir

    return assets_dir() / "watermark_detector"


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]


class WatermarkDetector(nn.Module):
    """Per-cell watermark logits [N, 4] for images [N, 3, 32, 32] in [0, 1]."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.width = width
        self.body = nn.Sequential(
            *_conv(3, w), *_conv(w, w), nn.MaxPool2d(2),
            *_conv(w, 2 * w), nn.MaxPool2d(2), *_conv(2 * w, 2 * w),
        )  # fmt: skip
        self.score = nn.Conv2d(2 * w, 1, 1)

    @property
    def device(self) -> torch.device:
        """Where the detector's weights are (inputs are moved there)."""
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device).float()  # images may come from a model on another device
        if x.shape[-2:] != (32, 32):
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
        s = self.score(self.body(x * 2 - 1))  # [N, 1, 8, 8]: a score per position
        return F.adaptive_max_pool2d(s, 2).flatten(1)  # [N, 4], row-major quadrants

    @torch.no_grad()
    def detect(self, images: torch.Tensor, threshold: float = 0.5, batch_size: int = 512):
        """(exists bool [N], cells bool [N, 4]) for images in [0, 1]."""
        self.eval()
        probs = torch.cat(
            [
                torch.sigmoid(self(images[i : i + batch_size]))
                for i in range(0, len(images), batch_size)
            ]
        )
        cells = probs >= threshold
        return cells.any(1), cells

    def save(self, directory: str | Path, meta: dict | None = None) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / WEIGHTS))
        (d / META).write_text(json.dumps({"width": self.width, **(meta or {})}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> WatermarkDetector:
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / WEIGHTS).is_file() or not (d / META).is_file():
            raise GenUnlearnError(f"{d} is not a watermark detector: expected {WEIGHTS}, {META}")
        with torch.device("cpu"):  # built and loaded on the CPU; ``.to()`` moves it
            det = cls(json.loads((d / META).read_text())["width"])
        det.load_state_dict(load_file(str(d / WEIGHTS)))
        return det.eval()


def load_detector() -> WatermarkDetector:
    """The committed detector (loaded once per process).

    Raises:
        GenUnlearnError: the asset is missing (the message names the path and how to retrain it).
    """
    if "d" not in _LOADED:
        d = detector_dir()
        if not (d / WEIGHTS).is_file():
            raise GenUnlearnError(
                f"the watermark detector is missing from {d}; reinstall genunlearn or retrain it "
                "with 'python -m genunlearn.testbed.detector'"
            )
        _LOADED["d"] = WatermarkDetector.load(d)
    return _LOADED["d"]
