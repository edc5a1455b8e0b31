"""Training of the world's evaluator (:class:`~genunlearn.models.evaluator.Evaluator`).

AdamW with a one-cycle schedule and the light blur / noise augmentation of
:mod:`genunlearn.testbed.augment`, so that the evaluator judges decoded samples of a latent model
as it judges rendered images. Deterministic for a seed.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from genunlearn.models.evaluator import Evaluator
from genunlearn.testbed.augment import augment
from genunlearn.testbed.loop import train_loop


def train_evaluator(
    images,
    labels,
    heads: dict[str, list[str]],
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> Evaluator:
    """Train an :class:`Evaluator` on uint8 images [N, H, W, 3] and int labels [N, len(heads)].

    Args:
        images: uint8 array or tensor of images.
        labels: integer label indices, one column per head, in ``heads`` order.
        heads: attribute -> label names.
        steps: optimisation steps (AdamW, one-cycle schedule).
        batch_size: images per step.
        lr: peak learning rate.
        seed: seeds initialisation, batches and augmentation.
        progress: show a progress bar.
    """
    torch.manual_seed(seed)
    # one generator for the whole run (the recipe of the committed evaluator): not resumable,
    # and it need not be (seconds to minutes)
    g = torch.Generator().manual_seed(seed)
    x_all = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.as_tensor(labels).long()
    ev = Evaluator(heads, image_size=x_all.shape[-1])
    opt = torch.optim.AdamW(ev.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    ev.train()
    names = list(heads)

    def step_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        x = augment(x_all[idx].float() / 255.0, g)
        out = ev(x)
        loss = sum(F.cross_entropy(out[k], y_all[idx, i]) for i, k in enumerate(names))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.detach()

    train_loop(step_fn, steps, desc="evaluator", progress=progress)
    return ev.eval()
