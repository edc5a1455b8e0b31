"""CLIP score: toy-clip ranks true captions first, local CLIP directories load with the same code,
scales and errors are as documented."""

from __future__ import annotations

import json

import pytest
import torch

import genunlearn as gu
from genunlearn import GenUnlearnError
from genunlearn.metrics.clip_score import clip_scores
from genunlearn.models.clip import load_clip, toy_clip_dir
from genunlearn.testbed.toy_clip import (
    ClipRecipe,
    build_toy_clip,
    caption_rank_accuracy,
    save_toy_clip,
)

needs_toy_clip = pytest.mark.skipif(
    not (toy_clip_dir() / "config.json").is_file(), reason="toy-clip weights are not committed"
)


@pytest.fixture(scope="module")
def random_clip_dir(tmp_path_factory):
    """A randomly initialised tiny CLIP saved in the standard CLIP directory layout."""
    from transformers import CLIPTokenizer

    from genunlearn.models import assets_dir

    tok = CLIPTokenizer.from_pretrained(assets_dir() / "toy-sd" / "tokenizer")
    recipe = ClipRecipe(vision_width=32, vision_layers=1, text_width=32, text_layers=1,
                        embed_dim=16)  # fmt: skip
    d = tmp_path_factory.mktemp("clip")
    return save_toy_clip(build_toy_clip(tok, recipe), tok, d, recipe)


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(GenUnlearnError, match=f"no directory {tmp_path / 'nope'}"):
        load_clip(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(GenUnlearnError, match=r"missing \['preprocessor_config.json', 'model"):
        load_clip(tmp_path / "half")


def test_local_clip_directory_loads_and_scores(random_clip_dir):
    clip = load_clip(random_clip_dir)
    assert clip.name == str(random_clip_dir)
    imgs = torch.rand(3, 3, 32, 32)
    texts = ["a red star", "a blue ring in wavy style", "a red star"]
    cos = clip_scores(imgs, texts, clip)
    assert cos.shape == (3,) and bool((cos.abs() <= 1 + 1e-5).all())
    img_e, txt_e = clip.encode_images(imgs), clip.encode_texts(texts)
    assert torch.allclose(cos, (img_e * txt_e).sum(-1), atol=1e-5)
    assert torch.allclose(clip_scores(imgs, texts, clip, scale="x100"), 100 * cos, atol=1e-4)
    with pytest.raises(GenUnlearnError, match="valid: cosine, x100"):
        clip_scores(imgs, texts, clip, scale="logit")
    with pytest.raises(GenUnlearnError, match="3 images but 2 texts"):
        clip_scores(imgs, texts[:2], clip)


def test_preprocessing_resizes_shortest_side_and_centre_crops(random_clip_dir):
    clip = load_clip(random_clip_dir)
    cfg = json.loads((random_clip_dir / "preprocessor_config.json").read_text())
    x = torch.rand(2, 3, 32, 40)  # no resize needed (shortest side 32): only the centre crop
    mean = torch.tensor(cfg["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["image_std"]).view(1, 3, 1, 1)
    assert torch.allclose(clip.pixels(x), (x[..., :, 4:36] - mean) / std)
    assert clip.pixels(torch.rand(1, 3, 64, 96)).shape == (1, 3, 32, 32)


@needs_toy_clip
def test_toy_clip_prefers_the_true_caption_over_one_attribute_changes():
    from genunlearn.data import toycanvas

    clip = load_clip("toy-clip")
    imgs, labels, caps = toycanvas.make_arrays(31337, 60)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    true = clip_scores(x, caps, clip)
    for j, kind in enumerate(("object", "style", "colour")):
        names = toycanvas.KINDS[kind]
        swapped = []
        for cap, lab in zip(caps, labels, strict=True):
            words = cap.split()
            old = names[lab[j]]
            words[words.index(old)] = names[(lab[j] + 1) % len(names)]
            swapped.append(" ".join(words))
        assert bool((true > clip_scores(x, swapped, clip)).float().mean() > 0.9), kind
    assert caption_rank_accuracy(clip, n=200, seed=99)["rank1"] >= 0.9


def test_clip_score_metric_on_a_model(tiny_model, random_clip_dir):
    s = gu.evaluate(tiny_model, "star", protocol="clip_score", clip=str(random_clip_dir))
    assert {"clip_target", "clip_retain", "clip_score", "clip_scale"} <= set(s)
    assert s["clip_scale"] == 1.0 and -1.0 <= s["clip_score"] <= 1.0
    t = gu.evaluate(
        tiny_model, "star", protocol="clip_score", clip=str(random_clip_dir), scale="x100"
    )
    assert t["clip_target"] == pytest.approx(100 * s["clip_target"], rel=1e-4)
    with pytest.raises(GenUnlearnError, match="no directory"):
        gu.evaluate(tiny_model, "star", protocol="clip_score", clip="/nonexistent/clip")
