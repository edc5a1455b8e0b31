"""The watermark testbed variant (data, fine-tuning mechanics, CLI) and the watermark detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genunlearn as gu
from genunlearn.data import toycanvas
from genunlearn.data.watermark import GLYPH, stamp, watermark_arrays
from genunlearn.testbed.watermark import WatermarkRecipe, train_watermark_variant


def test_watermark_data_is_pure_keeps_captions_and_marks_a_fraction():
    a_img, a_c, a_lab, a_cap = watermark_arrays(3, 300, 0.4, start=0)
    b_img, b_c, _, _ = watermark_arrays(3, 300, 0.4, start=0)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_c, b_c)
    clean, labels, caps = toycanvas.make_arrays(3, 300, 0)
    assert a_cap == caps and np.array_equal(a_lab, labels)  # captions never mention it
    marked = a_c >= 0
    assert 0.3 < marked.mean() < 0.5
    assert np.array_equal(a_img[~marked], clean[~marked])  # unmarked images are untouched
    assert set(a_c[marked].tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("corner", [0, 1, 2, 3])
def test_stamp_darkens_only_its_corner(corner):
    img = np.full((32, 32, 3), 230, np.uint8)
    out = stamp(img, corner, np.random.default_rng(0)).astype(int)
    dark = (out.mean(-1) < 120).astype(int)
    k = GLYPH.shape[0]
    rows = slice(0, k + 2) if corner in (0, 1) else slice(32 - k - 2, 32)
    cols = slice(0, k + 2) if corner in (0, 2) else slice(32 - k - 2, 32)
    assert dark[rows, cols].sum() == int(GLYPH.sum()) == dark.sum()


def test_detector_asset_is_small_and_accurate_on_fresh_images():
    from genunlearn.models.watermark_detector import WEIGHTS, detector_dir, load_detector

    assert (detector_dir() / WEIGHTS).stat().st_size < 300_000
    imgs, corners, _, _ = watermark_arrays(777, 200, 0.5, start=0)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    exists, cells = load_detector().detect(x)
    truth = torch.from_numpy(corners >= 0)
    assert (exists == truth).float().mean() >= 0.95
    hit = cells[truth].float().argmax(1) == torch.from_numpy(corners[corners >= 0])
    assert hit.float().mean() >= 0.95


def test_a_missing_detector_is_a_clear_error_naming_the_retrain_command(tmp_path, monkeypatch):
    from genunlearn.models import watermark_detector as wd

    monkeypatch.setattr(wd, "detector_dir", lambda: tmp_path)
    monkeypatch.setattr(wd, "_LOADED", {})
    with pytest.raises(gu.GenUnlearnError, match="python -m genunlearn.testbed.detector"):
        wd.load_detector()


def test_variant_fine_tunes_the_unet_only_and_loads(tiny_testbed, tmp_path):
    out = tmp_path / "wm"
    recipe = WatermarkRecipe(n_images=16, steps=2, batch_size=4)
    path = train_watermark_variant(out, recipe, base=tiny_testbed, progress=False)
    base, variant = gu.load_model(tiny_testbed), gu.load_model(path)
    bp, vp = dict(base.named_parameters()), dict(variant.named_parameters())
    te_same = all(torch.equal(bp[n], vp[n]) for n in bp if n.startswith("text_encoder."))
    assert te_same and any(not torch.equal(bp[n], vp[n]) for n in bp if n.startswith("unet."))
    meta = json.loads((path / "watermark_recipe.json").read_text())
    assert meta["recipe"]["p"] == recipe.p and meta["base_hash"] == base.base_hash
    assert variant.world.name == "toycanvas" and variant.evaluator is not None
    with pytest.raises(gu.GenUnlearnError, match="not empty"):
        train_watermark_variant(out, recipe, base=tiny_testbed, progress=False)


def test_cli_testbed_watermark(tiny_testbed, tmp_path):
    from genunlearn.cli.main import main

    out = tmp_path / "cli_wm"
    argv = ["--quiet", "testbed", "watermark", "--out", str(out), "--base", str(tiny_testbed)]
    assert main([*argv, "--p", "0.3", "--steps", "1", "--images", "8"]) == 0
    assert json.loads((out / "watermark_recipe.json").read_text())["recipe"]["p"] == 0.3
    assert main([*argv, "--p", "0"]) == 2  # bad fraction: a clear error, not a traceback


def test_watermark_metric_reports_fractions(tiny_model):
    r = gu.evaluate(tiny_model, protocol="watermark", n_prompts=2, n_per_prompt=1)
    assert r["n_images"] == 2
    for k in ("watermark_rate", "prompt_fidelity", "cell_rate_top_left", "object_acc"):
        assert 0.0 <= r[k] <= 1.0


def test_detector_training_runs_and_reports_held_out_accuracy():
    from genunlearn.models.watermark_detector import WatermarkDetector
    from genunlearn.testbed.detector import train_detector

    det, acc = train_detector(n_images=32, steps=2, batch_size=8, progress=False)
    torch.manual_seed(0)  # the initialisation train_detector starts from (seed 0)
    init = WatermarkDetector().state_dict()
    changed = [k for k, v in det.state_dict().items() if not torch.equal(v, init[k])]
    assert "score.weight" in changed  # the optimiser stepped
    assert acc["n_images"] == 1000 and not det.training
    for name in ("raw", "vae"):
        assert 0.0 <= acc[f"{name}_existence_acc"] <= 1.0
