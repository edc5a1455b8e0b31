"""`genunlearn testbed train --data DIR` end to end on a tiny folder made here."""

from __future__ import annotations

import numpy as np
from PIL import Image

import genunlearn as gu
from genunlearn.cli.main import main


def _folder(root):
    rng = np.random.default_rng(0)
    for name, colour in (("apples", (220, 30, 30)), ("leaves", (30, 200, 40))):
        d = root / name
        d.mkdir(parents=True)
        for i in range(6):
            arr = np.full((40, 40, 3), 235, np.uint8)
            y, x = rng.integers(4, 20, size=2)
            arr[y : y + 16, x : x + 16] = colour
            Image.fromarray(arr).save(d / f"{i}.png")
    (root / "captions.csv").write_text("file,caption\napples/0.png,a shiny apple\n")
    return root


def test_train_on_folder_end_to_end_and_resume(tmp_path, capsys):
    data = _folder(tmp_path / "data")
    out = tmp_path / "tb"
    argv = ["--quiet", "testbed", "train", "--out", str(out), "--data", str(data),
            "--evaluator-steps", "4", "--vae-steps", "2", "--unet-steps", "2"]  # fmt: skip
    assert main(argv) == 0
    pipe = out / "toy-sd"
    world = (pipe / "world.json").read_text()
    assert '"class"' in world and "apples" in world and "leaves" in world
    model = gu.load_model(pipe)
    assert model.world.heads == {"class": ("apples", "leaves")}
    assert model.world.grid() == [{"class": "apples"}, {"class": "leaves"}]
    imgs = model.sample(["a apples"], n=2, steps=2, seed=0)
    assert imgs.shape == (2, 3, 32, 32)
    res = gu.evaluate(model, protocol="fidelity", n_per_prompt=1, steps=2)
    assert set(res) >= {"class_acc", "n_images"} and 0 <= res["class_acc"] <= 1
    # the captions file was used for the image it names
    z = np.load(out / "work" / "data.npz")
    assert "a shiny apple" in [str(c) for c in z["captions"]]
    # a second run resumes: nothing is retrained, the exported weights stay byte-identical
    unet = pipe / "unet" / "diffusion_pytorch_model.safetensors"
    before = unet.read_bytes()
    assert main(argv) == 0
    assert unet.read_bytes() == before


def test_folder_errors(tmp_path, capsys):
    code = main(
        ["testbed", "train", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nope")]
    )
    assert code == 2 or code is None
