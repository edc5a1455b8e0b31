"""The CLI in-process: every subcommand's help, listing, preview, erase/eval/attack/generate, errors."""

from __future__ import annotations

import pytest
from PIL import Image

from genunlearn.cli.main import COMMANDS, main


def run_cli(capsys, *argv):
    code = main([*argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: genunlearn " + cmd in text and len(text.splitlines()) > 3


def test_ls_concepts_by_kind_with_counts(capsys):
    code, out, _ = run_cli(capsys, "ls", "concepts")
    assert code == 0
    assert "object (10):" in out and "style (8):" in out and "colour (5):" in out
    code, out, _ = run_cli(capsys, "ls", "concepts", "--kind", "style")
    assert out.startswith("style (8): flat, striped")
    code, _, err = run_cli(capsys, "ls", "concepts", "--kind", "styel")
    assert code == 2 and "Did you mean 'style'" in err


def test_ls_methods_lists_registered_names(capsys):
    code, out, _ = run_cli(capsys, "ls", "methods")
    names = [line.split()[0] for line in out.splitlines()]
    assert code == 0 and {"original", "negative_prompt"} <= set(names)


def test_data_preview_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, _, _ = run_cli(capsys, "data", "preview", "--out", str(out), "--scale", "1")
    im = Image.open(out)
    assert code == 0 and im.size == (8 * 33 + 1, 10 * 33 + 1)  # 8 styles x 10 objects, 1px pads


def test_generate_erase_eval_attack(tiny_testbed, tmp_path, capsys):
    m = str(tiny_testbed)
    grid = tmp_path / "g.png"
    code, _, err = run_cli(
        capsys, "--quiet", "generate", "--model", m, "--prompt", "a red star in flat style",
        "--n", "3", "--out", str(grid),
    )  # fmt: skip
    assert code == 0, err
    assert Image.open(grid).size == (4 * (3 * 33 + 1), 4 * (33 + 1))  # PNG grids are 4x upscaled
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "erase", "--model", m, "--method", "negative_prompt", "--concept", "star",
        "--out", str(run),
    )  # fmt: skip
    assert code == 0, err
    assert (run / "config.json").is_file() and (run / "artifact.safetensors").is_file()
    assert (run / "samples.png").is_file() and not (run / "INCOMPLETE").exists()
    # the same out again is refused and leaves the run intact
    before = (run / "config.json").read_bytes()
    code, _, err = run_cli(
        capsys,
        "erase",
        "--model",
        m,
        "--method",
        "original",
        "--concept",
        "star",
        "--out",
        str(run),
    )
    assert code == 2 and "already exists" in err and (run / "config.json").read_bytes() == before
    code, out, err = run_cli(
        capsys, "eval", "run", "--run", str(run), "--set", "n_per_prompt=1", "fid=false"
    )
    assert code == 0, err
    assert "ua" in out and "ira" in out and "cra" in out
    code, out, err = run_cli(
        capsys, "attack", "--attack", "no_attack", "--run", str(run), "--set", "n_prompts=2"
    )
    assert code == 0, err
    assert "pre-ASR" in out and "ASR" in out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "generate", "--model", str(tmp_path), "--prompt", "x", "--out", "y.png"
    )
    assert code == 2 and "model_index.json" in err
    code, _, err = run_cli(
        capsys, "erase", "--method", "esdd", "--concept", "star", "--out", str(tmp_path / "r")
    )
    assert code == 2 and "unknown method 'esdd'" in err
    code, _, err = run_cli(
        capsys, "generate", "--model", "toy-sdd", "--prompt", "x", "--out", "y.png"
    )
    assert code == 2 and "Did you mean 'toy-sd'" in err
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "INCOMPLETE").write_text("started")
    code, _, err = run_cli(capsys, "eval", "run", "--run", str(inc))
    assert code == 2 and "incomplete" in err


def test_corrupt_artifact_and_foreign_base_are_errors(tiny_testbed, tiny_model, tmp_path):
    import genunlearn as gu

    run = tmp_path / "run"
    gu.erase(tiny_model, "original", "star", run)
    art = run / "artifact.safetensors"
    good = art.read_bytes()
    art.write_bytes(b"not a safetensors file")
    with pytest.raises(gu.GenUnlearnError, match="corrupt"):
        gu.load_run(run, model=tiny_model)
    art.write_bytes(good)
    other = tiny_model.copy()
    other._hash = "f" * 64
    with pytest.raises(gu.GenUnlearnError, match="hash"):
        gu.load_run(run, model=other)
