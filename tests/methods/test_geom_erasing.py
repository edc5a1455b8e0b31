"""Geom-Erasing's signature: location tokens go exactly where the detector fires, and the same
existence + location tokens are the negative prompt the erased model samples with."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import genunlearn as gu
from genunlearn.data.watermark import CELL_NAMES, stamp
from genunlearn.methods import geom_erasing as ge


class FakeDetector:
    """Marks cells by image position: image i gets the cells of ``pattern[i % len(pattern)]``."""

    def __init__(self, pattern):
        self.pattern = torch.tensor(pattern, dtype=torch.bool)

    def detect(self, images, threshold=0.5):
        cells = self.pattern[torch.arange(len(images)) % len(self.pattern)]
        return cells.any(1), cells


PATTERN = [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]


def test_geometric_captions_append_one_phrase_per_marked_cell():
    cells = torch.tensor(PATTERN, dtype=torch.bool)
    caps = ["a red star in flat style"] * 4
    got = ge.geometric_captions(caps, cells, "logo")
    assert got == [
        "a red star in flat style logo top left",
        "a red star in flat style",
        "a red star in flat style logo top right logo bottom right",
        "a red star in flat style logo bottom left",
    ]


def test_training_captions_follow_the_detector(tiny_model):
    cfg = ge.GeomErasingConfig(n_images=8, progress=False)
    images, caps, captions, tags, cells = ge.training_set(tiny_model, cfg, FakeDetector(PATTERN))
    assert len(images) == len(caps) == len(captions) == 8
    for cap, aug, tag, row in zip(caps, captions, tags, cells.tolist(), strict=True):
        named = [c for c in CELL_NAMES if f"logo {c}" in aug]
        assert named == [c for c, on in zip(CELL_NAMES, row, strict=True) if on]
        assert aug == (f"{cap} {tag}" if tag else cap)


def test_real_detector_puts_tokens_at_the_stamped_corner():
    """End to end on rendered images: stamp a known corner, detect, caption."""
    from genunlearn.data import toycanvas
    from genunlearn.models.watermark_detector import load_detector

    imgs, _, caps = toycanvas.make_arrays(4242, 8)
    corners = [0, 1, 2, 3, -1, 3, 0, -1]
    for i, c in enumerate(corners):
        if c >= 0:
            imgs[i] = stamp(imgs[i], c, np.random.default_rng(i))
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    _, cells = load_detector().detect(x)
    got = ge.geometric_captions(caps, cells, "logo")
    for cap, aug, c in zip(caps, got, corners, strict=True):
        assert aug == (f"{cap} logo {CELL_NAMES[c]}" if c >= 0 else cap)


def test_negative_prompt_holds_the_detected_tokens(tiny_model, monkeypatch):
    import genunlearn.models.watermark_detector as wm

    monkeypatch.setattr(wm, "load_detector", lambda: FakeDetector([[1, 0, 0, 1], [0, 0, 0, 0]]))
    run = gu.erase(tiny_model, "geom_erasing", "star", preset="smoke", seed=0)
    neg = "logo top left logo bottom right"
    assert run.model.inference["negative_prompt"] == neg
    assert run.result.changed and all(n.startswith("unet.") for n in run.result.changed)
    p = ["a red star in flat style"]
    assert torch.equal(
        run.model.sample(p, n=1, seed=2), run.model.sample(p, n=1, seed=2, negative_prompt=neg)
    )
    assert not torch.equal(
        run.model.sample(p, n=1, seed=2), run.model.sample(p, n=1, seed=2, negative_prompt="")
    )


def test_nothing_detected_keeps_captions_and_negates_the_concept_word(tiny_model, monkeypatch):
    import genunlearn.models.watermark_detector as wm

    monkeypatch.setattr(wm, "load_detector", lambda: FakeDetector([[0, 0, 0, 0]]))
    # the target is found by the detector, so a label the world does not know is accepted
    # without the unknown-word warning that prompt-based methods give
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = gu.erase(tiny_model, "geom_erasing", "watermark", preset="smoke", seed=0)
    assert run.model.inference["negative_prompt"] == "logo"
    assert run.result.info["n_marked"] == 0 and run.result.info["target"] == "watermark"
    with pytest.raises(gu.GenUnlearnError, match="watermark"):  # a prompt-based method refuses
        gu.erase(tiny_model, "negative_prompt", "watermark")


def test_bad_settings_are_clear_errors(tiny_model):
    with pytest.raises(gu.GenUnlearnError, match="unknown detector 'qr'"):
        gu.erase(tiny_model, "geom_erasing", "star", preset="smoke", detector="qr")
    with pytest.raises(gu.GenUnlearnError, match="not a single token"):
        gu.erase(tiny_model, "geom_erasing", "star", preset="smoke", concept_word="watermark")
    with pytest.raises(gu.GenUnlearnError, match="lr_schedule must be one of .*'cosine'"):
        gu.erase(tiny_model, "geom_erasing", "star", preset="smoke", lr_schedule="step")


def test_text_encoder_trains_when_selected(tiny_model, monkeypatch):
    import genunlearn.models.watermark_detector as wm

    monkeypatch.setattr(wm, "load_detector", lambda: FakeDetector(PATTERN))
    sel = r"re:^(unet|text_encoder)\."
    run = gu.erase(tiny_model, "geom_erasing", "star", preset="smoke", parameter_group=sel)
    assert any(n.startswith("text_encoder.") for n in run.result.changed)


def _training_conds(model, monkeypatch, **kw):
    """The text states the fine-tune conditions the denoiser on (sampling calls excluded)."""
    import genunlearn.models.watermark_detector as wm

    monkeypatch.setattr(wm, "load_detector", lambda: FakeDetector(PATTERN))
    seen, active = [], [False]
    cls = type(model)
    inner = cls.predict_noise

    def spy(self, x, t, cond):
        if active[0]:
            seen.extend(cond.detach().clone())
        return inner(self, x, t, cond)

    def finetune(*args, **kwargs):
        active[0] = True
        try:
            return real_finetune(*args, **kwargs)
        finally:
            active[0] = False

    real_finetune = ge.finetune
    monkeypatch.setattr(cls, "predict_noise", spy)
    monkeypatch.setattr(ge, "finetune", finetune)
    gu.erase(model, "geom_erasing", "star", preset="smoke", seed=0, steps=4, **kw)
    monkeypatch.undo()
    cfg = ge.GeomErasingConfig(n_images=4, progress=False)  # the smoke preset's training set
    _, caps, captions, tags, _ = ge.training_set(model, cfg, FakeDetector(PATTERN))
    with torch.no_grad():
        emb = {
            "augmented": model.encode_prompt(captions),
            "tags": model.encode_prompt(tags),
            "plain": model.encode_prompt(caps),
        }
    assert captions != caps  # the detector marked some images

    def kinds(row):
        return {k for k, e in emb.items() if any(torch.equal(row, r) for r in e)}

    return [kinds(row) for row in seen]


def test_fine_tune_conditions_on_augmented_captions(tiny_model, monkeypatch):
    rows = _training_conds(tiny_model, monkeypatch, caption_dropout=0.0)
    assert rows and all("augmented" in k for k in rows)
    # marked images: their augmented caption is not the plain one the model was trained on
    assert any("plain" not in k for k in rows)


def test_caption_dropout_keeps_the_tokens_alone(tiny_model, monkeypatch):
    rows = _training_conds(tiny_model, monkeypatch, caption_dropout=0.95)
    tags_only = [k for k in rows if k == {"tags"}]
    assert len(tags_only) > len(rows) / 2
