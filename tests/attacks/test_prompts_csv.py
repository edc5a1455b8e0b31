"""Attack prompts from an UnlearnDiffAtk-style CSV (``prompts_csv``): each row's own prompt, seed,
guidance and target image replace the world's captions; bad files are named errors."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

import genunlearn as gu
from genunlearn.attacks import unlearndiffatk
from genunlearn.core import attack_loop as loop
from genunlearn.data.prompts import read_attack_csv

ROWS = [["a red star in flat style", "5", "2.0"], ["a blue star in dotted style", "9", "4.0"]]


def _csv(path, header, rows):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_rows_replace_the_world_prompts_with_their_own_seed_and_guidance(tiny_model, tmp_path):
    p = _csv(tmp_path / "a.csv", ["prompt", "evaluation_seed", "evaluation_guidance"], ROWS)
    res = gu.attack(tiny_model, "no_attack", "star", prompts_csv=str(p), n_prompts=5)
    assert res.prompts == [r[0] for r in ROWS]
    for i, (prompt, seed, g) in enumerate(ROWS):
        want = tiny_model.sample([prompt], n=1, seed=int(seed), guidance=float(g))
        assert torch.equal(res.images[i : i + 1], want)
    assert gu.attack(tiny_model, "no_attack", "star", prompts_csv=str(p), n_prompts=1).prompts == [
        ROWS[0][0]
    ]  # n_prompts limits the rows


def test_images_are_optional_only_for_attacks_without_a_target_image(tmp_path):
    p = _csv(tmp_path / "a.csv", ["prompt", "seed"], [["a star", "1"]])
    (row,) = read_attack_csv(p, require_images=False)
    assert row.image is None and row.guidance == 7.5
    with pytest.raises(gu.GenUnlearnError, match="'image' or 'image_path'"):
        read_attack_csv(p)
    bad = _csv(tmp_path / "b.csv", ["text", "guidance"], [["a star", "3"]])
    with pytest.raises(gu.GenUnlearnError, match="'prompt'.*'evaluation_seed' or 'seed'"):
        read_attack_csv(bad, require_images=False)


def test_unlearndiffatk_needs_and_uses_the_rows_target_images(
    tiny_model, tmp_path, forced_judge, monkeypatch
):
    no_img = _csv(tmp_path / "n.csv", ["prompt", "seed"], [["a red star in flat style", "1"]])
    with pytest.raises(gu.GenUnlearnError, match="missing column"):
        gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", prompts_csv=str(no_img))
    gone = _csv(tmp_path / "g.csv", ["prompt", "seed", "image"], [["a star", "1", "gone.png"]])
    with pytest.raises(gu.GenUnlearnError, match=r"gone\.png does not exist"):
        gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", prompts_csv=str(gone))

    Image.new("RGB", (8, 8), (0, 200, 0)).save(tmp_path / "t.png")
    p = _csv(tmp_path / "t.csv", ["prompt", "seed", "image"], [[ROWS[0][0], "3", "t.png"]])
    (row,) = read_attack_csv(p)
    target = loop.target_image(tiny_model, row)
    size = tiny_model.sample(["a star"], n=1).shape[-1]
    assert target.shape == (1, 3, size, size)
    assert torch.allclose(target[0, :, 0, 0], torch.tensor([0.0, 200 / 255, 0.0]), atol=1e-3)
    seen = []
    real = loop.target_image
    forced_judge(unlearndiffatk, pre=False, post=False)
    monkeypatch.setattr(
        loop, "target_image", lambda orig, case: seen.append(case.image) or real(orig, case)
    )
    res = gu.attack(tiny_model, "unlearndiffatk", "star", preset="smoke", prompts_csv=str(p))
    assert seen == [tmp_path / "t.png"] and res.prompts == [ROWS[0][0]]
    assert res.adversarial_prompts[0].endswith(ROWS[0][0])
