"""Watermark detector for ToyCanvas images, and the ``watermark`` metric (watermark rate).

The external "classifier or detector" of Geom-Erasing (Liu et al., ECCV 2024,
https://arxiv.org/abs/2310.05873) for the toy world: it says whether an image carries the
watermark of ``models.toy_watermark`` (a small dark badge) and in which corner. A small fully
convolutional CNN scores every position of an 8x8 feature map; the maximum score inside each
quadrant is that cell's logit, in :data:`~genunlearn.models.toy_watermark.CELL_NAMES` order
(top left, top right, bottom left, bottom right). Existence = any cell with probability >= the
threshold (0.5). About 17k parameters (~70 KB), committed under ``assets/watermark_detector``.

Training (``train_detector``, deterministic for a seed): ToyCanvas images of a world seed never
used by the watermark variant, half of them stamped in a random corner, multi-label BCE per cell.
Half of every batch is first passed through toy-sd's VAE (encode + decode), because generated
images reach the detector through that decoder and the VAE turns the badge into a soft blob; the
rest gets the evaluator's light blur and noise. ``held_out_accuracy`` reports existence and
location accuracy on fresh images, raw and VAE round-tripped (printed by ``python -m
genunlearn.metrics.watermark`` and stored in ``detector.json``; figures of the committed
detector: docs/results.md#watermark-variant-and-detector).

Metric ``watermark`` (``gu.evaluate(model, protocol="watermark")``): generate ``n_per_prompt``
images for each of the first ``n_prompts`` ToyCanvas grid prompts (prompt k from seeds
``seed + k * n_per_prompt`` on, so that no two images share their starting noise) and report ``watermark_rate``
(share of images where the detector fires), ``cell_rate_<cell>`` and the prompt fidelity of the
same images (evaluator accuracy per attribute, their mean ``prompt_fidelity``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genunlearn.registry import register_metric
from genunlearn.types import GenUnlearnError

WEIGHTS, META = "detector.safetensors", "detector.json"
TRAIN_SEED = 101  # ToyCanvas world of the detector's training data (the variant uses seed 0)
_LOADED: dict[str, WatermarkDetector] = {}


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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
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
        det = cls(json.loads((d / META).read_text())["width"])
        det.load_state_dict(load_file(str(d / WEIGHTS)))
        return det.eval()


def asset_dir() -> Path:
    from genunlearn.models import assets_dir

    return assets_dir() / "watermark_detector"


def load_detector() -> WatermarkDetector:
    """The committed detector; trained (deterministically) and cached if the asset is missing."""
    if "d" not in _LOADED:
        d = asset_dir()
        if not (d / WEIGHTS).is_file():
            from genunlearn.core.cache import cache_dir

            d = cache_dir().parent / "watermark_detector"
            if not (d / WEIGHTS).is_file():
                det, acc = train_detector(progress=False)
                det.save(d, {"held_out": acc})
        _LOADED["d"] = WatermarkDetector.load(d)
    return _LOADED["d"]


def _labelled(seed: int, n: int, start: int, vae_model):
    """(raw images, VAE round-tripped images, cell targets [n, 4]) of watermarked ToyCanvas."""
    from genunlearn.models.toy_watermark import watermark_arrays

    imgs, corners, _, _ = watermark_arrays(seed, n, 0.5, start)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        rt = torch.cat(
            [vae_model.decode(vae_model.encode_images(x[i : i + 256])) for i in range(0, n, 256)]
        )
    y = torch.zeros(n, 4)
    has = torch.from_numpy(corners >= 0)
    y[has, torch.from_numpy(corners[corners >= 0])] = 1
    return x, rt, y


def train_detector(n_images=4000, steps=1200, batch_size=128, lr=3e-3, seed=0, progress=True):
    """Train a :class:`WatermarkDetector`; returns it and its held-out accuracy (see module doc)."""
    from tqdm.auto import tqdm

    from genunlearn.models import load_model
    from genunlearn.models.evaluator import _augment

    vae_model = load_model("toy-sd")
    x, rt, y = _labelled(TRAIN_SEED, n_images, 0, vae_model)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    det = WatermarkDetector()
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    det.train()
    for _ in tqdm(range(steps), desc="watermark detector", disable=not progress):
        idx = torch.randint(0, n_images, (batch_size,), generator=g)
        use_rt = (torch.rand(batch_size, generator=g) < 0.5)[:, None, None, None]
        xb = torch.where(use_rt, rt[idx], _augment(x[idx], g))
        loss = F.binary_cross_entropy_with_logits(det(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    det.eval()
    return det, held_out_accuracy(det, vae_model)


def held_out_accuracy(det: WatermarkDetector, vae_model, n: int = 1000) -> dict[str, float]:
    """Existence / location accuracy on fresh images (indices after the training ones)."""
    x, rt, y = _labelled(TRAIN_SEED, n, 500_000, vae_model)
    out = {}
    for name, imgs in (("raw", x), ("vae", rt)):
        exists, cells = det.detect(imgs)
        truth = y.bool()
        out[f"{name}_existence_acc"] = float((exists == truth.any(1)).float().mean())
        out[f"{name}_cells_exact_acc"] = float((cells == truth).all(1).float().mean())
        marked = truth.any(1)
        out[f"{name}_location_acc_on_marked"] = float((cells[marked] == truth[marked]).all(1).float().mean())  # fmt: skip
    out["n_images"] = n
    return out


@dataclass(frozen=True)
class WatermarkMetricConfig:
    """Args:
    n_prompts: first ``n_prompts`` ToyCanvas grid prompts (80 in all).
    n_per_prompt: images per prompt.
    seed: seed of image 0 of every prompt.
    threshold: detector probability that counts as a watermark.
    steps: sampler steps (None: the model's default).
    """

    n_prompts: int = 40
    n_per_prompt: int = 2
    seed: int = 0
    threshold: float = 0.5
    steps: int | None = None


def prompt_images(model, cfg: WatermarkMetricConfig):
    """(prompts, triples, images) of the metric's prompt set."""
    from genunlearn.data import toycanvas

    if model.world is None or model.world.name != "toycanvas":
        raise GenUnlearnError("the watermark metric needs a ToyCanvas model (e.g. toy-sd)")
    if cfg.n_prompts < 1 or cfg.n_per_prompt < 1:
        raise GenUnlearnError("watermark metric: n_prompts and n_per_prompt must be >= 1")
    triples = toycanvas.grid_prompts()[: cfg.n_prompts]
    prompts = [toycanvas.caption(*t) for t in triples]
    n = cfg.n_per_prompt  # prompt k uses seeds seed + k*n ...: an implicit concept's presence
    # depends mostly on the starting noise, so prompts must not share their noises
    images = [
        model.sample([p], n=n, seed=cfg.seed + k * n, steps=cfg.steps)
        for k, p in enumerate(prompts)
    ]
    return prompts, triples, torch.cat(images)


@register_metric(
    "watermark", config=WatermarkMetricConfig, paper="https://arxiv.org/abs/2310.05873"
)
def watermark(model, task, cfg: WatermarkMetricConfig) -> dict[str, float]:
    """Watermark rate and prompt fidelity of the model's generations (module docstring)."""
    from genunlearn.models.toy_watermark import CELL_NAMES

    if not 0.0 < cfg.threshold < 1.0:
        raise GenUnlearnError(f"threshold must be in (0, 1), got {cfg.threshold}")
    _, triples, images = prompt_images(model, cfg)
    exists, cells = load_detector().detect(images, cfg.threshold)
    out = {"watermark_rate": float(exists.float().mean()), "n_images": len(images)}
    for j, name in enumerate(CELL_NAMES):
        out[f"cell_rate_{name.replace(' ', '_')}"] = float(cells[:, j].float().mean())
    preds = model.evaluator.predict(images)
    accs = []
    for k, head in enumerate(("colour", "object", "style")):
        want = np.repeat([t[k] for t in triples], cfg.n_per_prompt)
        accs.append(float(np.mean(np.asarray(preds[head]) == want)))
        out[f"{head}_acc"] = accs[-1]
    out["prompt_fidelity"] = float(np.mean(accs))
    return out


if __name__ == "__main__":  # python -m genunlearn.metrics.watermark: retrain the committed asset
    import time

    t0 = time.time()
    det, acc = train_detector()
    acc["train_seconds"] = round(time.time() - t0, 1)
    det.save(asset_dir(), {"held_out": acc, "train_seed": TRAIN_SEED})
    print(json.dumps(acc, indent=1))
