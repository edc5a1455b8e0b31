"""Training of the ToyCanvas watermark detector (``models.watermark_detector``).

Deterministic for a seed: ToyCanvas images of a world seed never used by the watermark variant
(:data:`TRAIN_SEED`), half of them stamped in a random corner (``data.watermark``), multi-label
BCE per cell. Half of every batch is first passed through toy-sd's VAE (encode + decode), because
generated images reach the detector through that decoder and the VAE turns the badge into a soft
blob; the rest gets the light blur and noise of :mod:`genunlearn.testbed.augment`.
:func:`held_out_accuracy` reports existence and location accuracy on fresh images, raw and VAE
round-tripped; both are stored in ``detector.json``.

Retrain the committed asset with ``python -m genunlearn.testbed.detector`` (figures of the
committed detector: docs/results.md#watermark-variant-and-detector).
"""

from __future__ import annotations

import json

import torch
from torch.nn import functional as F

from genunlearn.data.watermark import watermark_arrays
from genunlearn.models.watermark_detector import WatermarkDetector, detector_dir
from genunlearn.testbed.augment import augment
from genunlearn.testbed.loop import train_loop

TRAIN_SEED = 101  # ToyCanvas world of the detector's training data (the variant uses seed 0)
HELD_OUT_START = 500_000  # render index of the first held-out image (after the training ones)


def labelled(seed: int, n: int, start: int, vae_model):
    """(raw images, VAE round-tripped images, cell targets [n, 4]) of watermarked ToyCanvas."""
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
    """Train a :class:`WatermarkDetector`; returns it and its held-out accuracy (module doc)."""
    from genunlearn.models import load_model

    vae_model = load_model("toy-sd")
    x, rt, y = labelled(TRAIN_SEED, n_images, 0, vae_model)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)  # one generator for the whole (short) run
    det = WatermarkDetector()
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    det.train()

    def step_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, n_images, (batch_size,), generator=g)
        use_rt = (torch.rand(batch_size, generator=g) < 0.5)[:, None, None, None]
        xb = torch.where(use_rt, rt[idx], augment(x[idx], g))
        loss = F.binary_cross_entropy_with_logits(det(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.detach()

    train_loop(step_fn, steps, desc="watermark detector", progress=progress)
    det.eval()
    return det, held_out_accuracy(det, vae_model)


def held_out_accuracy(det: WatermarkDetector, vae_model, n: int = 1000) -> dict[str, float]:
    """Existence / location accuracy on fresh images (indices after the training ones)."""
    x, rt, y = labelled(TRAIN_SEED, n, HELD_OUT_START, vae_model)
    out = {}
    for name, imgs in (("raw", x), ("vae", rt)):
        exists, cells = det.detect(imgs)
        truth = y.bool()
        out[f"{name}_existence_acc"] = float((exists == truth.any(1)).float().mean())
        out[f"{name}_cells_exact_acc"] = float((cells == truth).all(1).float().mean())
        marked = truth.any(1)
        out[f"{name}_location_acc_on_marked"] = float(
            (cells[marked] == truth[marked]).all(1).float().mean()
        )
    out["n_images"] = n
    return out


def main() -> None:
    """Retrain the committed detector asset and print its held-out accuracy."""
    import time

    t0 = time.time()
    det, acc = train_detector()
    acc["train_seconds"] = round(time.time() - t0, 1)
    det.save(detector_dir(), {"held_out": acc, "train_seed": TRAIN_SEED})
    print(json.dumps(acc, indent=1))


if __name__ == "__main__":  # python -m genunlearn.testbed.detector
    main()
