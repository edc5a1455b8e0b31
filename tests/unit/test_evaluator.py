"""Evaluator: save/load round trip, a short training run that learns, missing-file errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genunlearn.models.evaluator import META, WEIGHTS, Evaluator
from genunlearn.testbed.evaluator import train_evaluator
from genunlearn.types import GenUnlearnError

HEADS = {"colour": ["red", "blue"], "position": ["top", "bottom"]}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny convolutions: extra threads only add overhead (and contention) on a busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dataset(n: int, seed: int, size: int = 8):
    """Grey images with the top or bottom half painted red or blue (two easy heads)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 2))
    imgs = np.full((n, size, size, 3), 128, dtype=np.uint8)
    rgb = {0: (220, 30, 30), 1: (30, 40, 220)}
    for i, (c, h) in enumerate(labels):
        rows = slice(0, size // 2) if h == 0 else slice(size // 2, size)
        imgs[i, rows] = rgb[int(c)]
    imgs = np.clip(imgs + rng.integers(-10, 11, size=imgs.shape), 0, 255).astype(np.uint8)
    return imgs, labels


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    torch.manual_seed(0)
    ev = Evaluator(HEADS, width=4, image_size=8)
    # Move the BatchNorm running statistics off their defaults so buffers must round-trip too.
    ev.train()
    with torch.no_grad():
        for _ in range(3):
            ev(torch.rand(6, 3, 8, 8) * 0.5 + 0.3)
    ev.eval()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    before = ev(x)
    ev.save(tmp_path / "ev")
    assert (tmp_path / "ev" / META).is_file() and (tmp_path / "ev" / WEIGHTS).is_file()
    loaded = Evaluator.load(tmp_path / "ev")
    assert not loaded.training
    assert loaded.heads_labels == HEADS and loaded.width == 4 and loaded.image_size == 8
    after = loaded(x)
    assert set(after) == set(HEADS)
    for k in HEADS:
        assert torch.equal(before[k], after[k])
    # A fresh, untrained evaluator gives different logits: the comparison is not vacuous.
    assert not torch.equal(
        Evaluator(HEADS, width=4, image_size=8).eval()(x)["colour"], before["colour"]
    )


def test_load_from_empty_dir_names_the_expected_files(tmp_path):
    with pytest.raises(GenUnlearnError) as e:
        Evaluator.load(tmp_path)
    assert META in str(e.value) and WEIGHTS in str(e.value) and str(tmp_path) in str(e.value)


def test_predict_returns_label_names_and_restores_mode():
    ev = Evaluator(HEADS, width=4, image_size=8).train()
    out = ev.predict(torch.rand(7, 3, 8, 8), batch_size=3)
    assert set(out) == set(HEADS)
    assert all(len(v) == 7 and set(v) <= set(HEADS[k]) for k, v in out.items())
    assert ev.training


def test_features_resize_inputs_to_the_training_size():
    ev = Evaluator(HEADS, width=4, image_size=8).eval()
    f = ev.features(torch.rand(2, 3, 16, 16))
    assert f.shape == (2, ev.feature_dim) == (2, 16)


def test_short_training_beats_chance_on_an_easy_world():
    imgs, labels = _dataset(256, seed=0)
    ev = train_evaluator(imgs, labels, HEADS, steps=30, batch_size=8, lr=5e-3, progress=False)
    assert not ev.training and ev.image_size == 8
    test_imgs, test_labels = _dataset(100, seed=1)
    x = torch.as_tensor(test_imgs).permute(0, 3, 1, 2).float() / 255.0
    pred = ev.predict(x)
    for i, head in enumerate(HEADS):
        want = [HEADS[head][j] for j in test_labels[:, i]]
        acc = np.mean([p == w for p, w in zip(pred[head], want, strict=True)])
        assert acc >= 0.9, (head, acc)


def test_head_names_that_clash_with_module_attributes_are_a_clear_error():
    from genunlearn.types import GenUnlearnError

    with pytest.raises(GenUnlearnError, match="'type'.*clash"):
        Evaluator({"type": ["a", "b"]}, width=4, image_size=8)
    ev = Evaluator({"kind": ["a", "b"]}, width=4, image_size=8)
    assert set(ev(torch.rand(1, 3, 8, 8))) == {"kind"}
