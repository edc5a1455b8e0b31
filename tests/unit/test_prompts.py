"""Prompt-CSV readers (I2P, COCO captions, UnlearnDiffAtk attack sets) and CSV image generation."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from genunlearn import GenUnlearnError
from genunlearn.data.prompts import (
    generate,
    load_image,
    read_attack_csv,
    read_coco,
    read_i2p,
    read_prompts,
)


def _write(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


I2P_HEADER = ["prompt", "categories", "hard", "nudity_percentage", "evaluation_seed",
              "evaluation_guidance", "sd_image_width"]  # fmt: skip


def test_i2p_reads_seeds_guidance_and_filters_categories(tmp_path):
    p = _write(tmp_path / "i2p.csv", I2P_HEADER, [
        ["a red star", "sexual,violence", "1", "55.0", "1234", "7", "512"],
        ["a blue ring", "hate", "0", "0.0", "99", "12.5", "512"],
        ["a green moon", "Sexual", "0", "10.0", "7", "9", "512"],
    ])  # fmt: skip
    rows = read_i2p(p)
    assert [r.prompt for r in rows] == ["a red star", "a blue ring", "a green moon"]
    assert [r.seed for r in rows] == [1234, 99, 7]
    assert [r.guidance for r in rows] == [7.0, 12.5, 9.0]
    assert rows[0].categories == ("sexual", "violence")
    assert rows[0].extra["nudity_percentage"] == "55.0" and rows[0].case == 0
    sexual = read_i2p(p, categories=["sexual"])
    assert [r.prompt for r in sexual] == ["a red star", "a green moon"]  # case-insensitive
    assert len(read_i2p(p, limit=2)) == 2
    assert read_prompts(p)[1].guidance == 12.5  # I2P detected by its categories column


def test_missing_columns_are_all_named(tmp_path):
    p = _write(tmp_path / "bad.csv", ["prompt", "categories"], [["x", "hate"]])
    with pytest.raises(GenUnlearnError) as e:
        read_i2p(p)
    msg = str(e.value)
    assert "'evaluation_seed'" in msg and "'evaluation_guidance'" in msg and str(p) in msg
    assert "'prompt'" not in msg.split("missing")[1].split(";")[0]
    with pytest.raises(GenUnlearnError, match="'prompt' or 'caption'"):
        read_coco(_write(tmp_path / "c.csv", ["text", "evaluation_seed"], [["x", "1"]]))
    with pytest.raises(GenUnlearnError, match="does not exist"):
        read_i2p(tmp_path / "nope.csv")
    bad_seed = _write(tmp_path / "s.csv", ["prompt", "evaluation_seed"], [["x", "abc"]])
    with pytest.raises(GenUnlearnError, match="row 2: evaluation_seed must be an integer"):
        read_coco(bad_seed)


def test_coco_caption_csv(tmp_path):
    p = _write(tmp_path / "coco.csv", ["", "case_number", "prompt", "evaluation_seed", "coco_id"], [
        ["0", "17", "a cat on a mat", "2219", "391895"],
        ["1", "18", "two dogs", "5", "522418"],
    ])  # fmt: skip
    rows = read_coco(p)
    assert [(r.case, r.seed, r.guidance) for r in rows] == [(17, 2219, 7.5), (18, 5, 7.5)]
    assert rows[0].extra["coco_id"] == "391895"
    q = _write(tmp_path / "cap.csv", ["caption", "evaluation_seed", "evaluation_guidance"],
               [["a boat", "3", "5"]])  # fmt: skip
    assert read_coco(q)[0].prompt == "a boat" and read_coco(q)[0].guidance == 5.0


def test_attack_csv_image_paths(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "t.png")
    p = _write(tmp_path / "atk.csv", ["prompt", "seed", "guidance", "image"],
               [["a star", "3", "6", "t.png"]])  # fmt: skip
    (row,) = read_attack_csv(p)
    assert row.image == tmp_path / "t.png" and row.seed == 3 and row.guidance == 6.0
    assert load_image(row.image).shape == (3, 8, 8)
    # the reference layout: <dir>/prompts.csv + imgs/<case_number>_0.png; guidance defaults to 7.5
    d = tmp_path / "ds"
    (d / "imgs").mkdir(parents=True)
    _write(d / "prompts.csv", ["case_number", "prompt", "evaluation_seed"], [["4", "x", "1"]])
    with pytest.raises(GenUnlearnError, match=r"target image .*imgs/4_0.png does not exist"):
        read_attack_csv(d)
    Image.new("RGB", (8, 8)).save(d / "imgs" / "4_0.png")
    assert read_attack_csv(d)[0].guidance == 7.5
    no_img = _write(tmp_path / "n.csv", ["prompt", "seed"], [["x", "1"]])
    with pytest.raises(
        GenUnlearnError, match="'image' or 'image_path' or 'target_image' or 'case_number'"
    ):
        read_attack_csv(no_img)


def test_generate_uses_each_rows_seed_and_guidance(tiny_model, tmp_path):
    p = _write(tmp_path / "i2p.csv", I2P_HEADER[:1] + ["categories", "evaluation_seed",
               "evaluation_guidance"], [
        ["a red star in flat style", "x", "5", "3"],
        ["a blue ring in wavy style", "x", "9", "1.5"],
        ["a red star in flat style", "x", "5", "3"],
    ])  # fmt: skip
    rows = read_i2p(p)
    imgs = generate(tiny_model, rows, n_per_prompt=2, out_dir=tmp_path / "gen")
    assert imgs.shape[0] == 6
    want = tiny_model.sample(["a blue ring in wavy style"], n=2, seed=9, guidance=1.5)
    assert torch.allclose(imgs[2:4], want, atol=1e-5)
    assert torch.allclose(imgs[0:2], imgs[4:6])  # same row content -> same images
    other = tiny_model.sample(["a blue ring in wavy style"], n=2, seed=10, guidance=1.5)
    assert not torch.allclose(imgs[2:4], other)  # the seed is really used
    # the written folder is an UnlearnDiffAtk-style dataset again
    back = read_attack_csv(tmp_path / "gen")
    assert [r.seed for r in back] == [5, 9, 5] and back[1].image.name == "1_0.png"
    assert torch.allclose(load_image(back[1].image), imgs[2], atol=1 / 255 + 1e-6)
