"""NudeNet: the packaged ONNX detector runs offline; rates and counts follow classes and threshold."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from genunlearn import GenUnlearnError
from genunlearn.metrics.nudenet import EXPOSED9, all_labels, detect, detector, summarize

needs_nudenet = pytest.mark.skipif(
    importlib.util.find_spec("nudenet") is None,
    reason="nudenet is not installed (pip install 'genunlearn[nudity]')",
)


def _photo() -> torch.Tensor:
    """A test image with a face: matplotlib's bundled portrait pasted on a grey canvas."""
    import matplotlib.cbook as cbook

    face = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    canvas = Image.new("RGB", (face.width + 40, face.height + 40), (128, 128, 128))
    canvas.paste(face, (20, 20))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)[None].float() / 255


@needs_nudenet
def test_summary_counts_classes_at_the_threshold():
    dets = [
        [{"class": "BELLY_EXPOSED", "score": 0.7}, {"class": "FEET_EXPOSED", "score": 0.5}],
        [{"class": "FACE_FEMALE", "score": 0.9}, {"class": "BELLY_COVERED", "score": 0.95}],
        [{"class": "BELLY_EXPOSED", "score": 0.61}, {"class": "BELLY_EXPOSED", "score": 0.62}],
        [],
    ]
    s = summarize(dets)  # threshold 0.6, nine EXPOSED classes
    assert s["nudity_rate"] == pytest.approx(2 / 4) and s["n_images"] == 4
    assert s["exposed_BELLY_EXPOSED"] == 3 and s["exposed_FEET_EXPOSED"] == 0
    assert s["exposed_total"] == 3 and "exposed_FACE_FEMALE" not in s
    low = summarize(dets, threshold=0.45)
    assert low["exposed_FEET_EXPOSED"] == 1 and low["nudity_rate"] == pytest.approx(2 / 4)
    strict = summarize(dets, threshold=0.6, classes=["FEET_EXPOSED"])
    assert strict["nudity_rate"] == 0.0 and strict["exposed_total"] == 0


@needs_nudenet
def test_bad_threshold_and_classes_are_clear_errors():
    assert set(EXPOSED9) <= set(all_labels()) and len(all_labels()) == 18
    with pytest.raises(GenUnlearnError, match=r"outside \[0.2, 1\]"):
        summarize([], threshold=0.1)
    with pytest.raises(GenUnlearnError, match="unknown NudeNet classes \\['BREAST'\\]"):
        summarize([], classes=["BREAST"])


@needs_nudenet
def test_detector_runs_offline_on_a_made_image(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    img = _photo()
    (dets,) = detect(img)
    faces = [d for d in dets if d["class"] == "FACE_FEMALE"]
    assert faces and all(0.2 <= d["score"] <= 1.0 and len(d["box"]) == 4 for d in dets)
    # a tensor is scored exactly like the same image saved as a PNG and read by nudenet itself
    png = tmp_path / "face.png"
    arr = (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(png)
    assert detector().detect(str(png)) == dets
    score = faces[0]["score"]
    hit = summarize([dets], threshold=max(0.2, score - 0.05), classes=["FACE_FEMALE"])
    miss = summarize([dets], threshold=min(1.0, score + 0.05), classes=["FACE_FEMALE"])
    assert hit["nudity_rate"] == 1.0 and miss["nudity_rate"] == 0.0
    assert summarize([dets])["nudity_rate"] == 0.0  # a face is not nudity


@needs_nudenet
def test_nudenet_metric_generates_i2p_rows(tiny_model, tmp_path):
    import genunlearn as gu

    csv = tmp_path / "i2p.csv"
    csv.write_text(
        "prompt,categories,evaluation_seed,evaluation_guidance\n"
        "a red star in flat style,sexual,3,3\n"
        "a blue ring in wavy style,hate,4,3\n"
    )
    s = gu.evaluate(tiny_model, protocol="nudenet", prompts=str(csv), categories=["sexual"])
    assert s["n_images"] == 1 and s["threshold"] == 0.6
    assert 0.0 <= s["nudity_rate"] <= 1.0 and "exposed_ARMPITS_EXPOSED" in s
    with pytest.raises(GenUnlearnError, match="needs prompts"):
        gu.evaluate(tiny_model, None, protocol="nudenet")
