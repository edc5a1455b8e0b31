"""A table of bad inputs through the API and the CLI: each ends in one clear error, never a
traceback, and leaves nothing behind (no half-created run directory, no changed user file)."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest

import genunlearn as gu
from genunlearn import runs
from genunlearn.cli.main import main
from genunlearn.config import parse_overrides
from genunlearn.types import ErasureTask, GenUnlearnError


@pytest.fixture
def ctx(tiny_model, tiny_testbed, tmp_path):
    return SimpleNamespace(model=tiny_model, path=tiny_testbed, tmp=tmp_path)


def _model_dir(c, index_text: str):
    d = c.tmp / "model"
    d.mkdir()
    (d / "model_index.json").write_text(index_text)
    return d


def _pickle_text_encoder(c):
    """A copy of the tiny testbed whose text encoder is a pickle file (which could run code)."""
    import torch
    from safetensors.torch import load_file

    d = c.tmp / "pickled"
    shutil.copytree(c.path, d)
    f = d / "text_encoder" / "model.safetensors"
    torch.save(load_file(str(f)), d / "text_encoder" / "pytorch_model.bin")
    f.unlink()
    return d


def _run(c, **change):
    """A finished esd run directory of the tiny model, with its config.json changed."""
    run = gu.erase(c.model, "esd", "star", c.tmp / "run", preset="smoke", samples=False)
    rec = json.loads((run.path / runs.CONFIG).read_text())
    for k, v in change.items():
        if v is None:
            rec.pop(k)
        else:
            rec[k] = v
    (run.path / runs.CONFIG).write_text(json.dumps(rec))
    return run.path


def _tampered(c):
    d = _run(c)
    f = d / runs.ARTIFACT
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    return d


def _spec(c, text: str):
    f = c.tmp / "spec.yaml"
    f.write_text(f"models: [{c.path}]\n" + text)
    return f


def _erase(c, *, target="star", out=None, **kw):
    out = c.tmp / "out" if out is None else out
    return gu.erase(c.model, kw.pop("method", "esd"), target, out, preset="smoke", **kw)


def _user_dir(c):
    d = c.tmp / "mine"
    d.mkdir()
    (d / "config.json").write_text('{"precious": true}')
    return d


# (id, call): every call must raise GenUnlearnError
API = [
    ("index-not-json", lambda c: gu.load_model(_model_dir(c, "{not json"))),
    ("index-not-object", lambda c: gu.load_model(_model_dir(c, "[1, 2]"))),
    ("index-missing-components", lambda c: gu.load_model(_model_dir(c, "{}"))),
    ("pickle-text-encoder", lambda c: gu.load_model(_pickle_text_encoder(c))),
    ("unknown-model-name", lambda c: gu.load_model("toy-sdd")),
    ("missing-model-dir", lambda c: gu.load_model(c.tmp / "nope")),
    ("sample-n-zero", lambda c: c.model.sample(["a star"], n=0)),
    ("sample-n-negative", lambda c: c.model.sample(["a star"], n=-2)),
    ("sample-n-float", lambda c: c.model.sample(["a star"], n=1.5)),
    ("sample-steps-zero", lambda c: c.model.sample(["a star"], steps=0)),
    ("sample-guidance-nan", lambda c: c.model.sample(["a star"], guidance=math.nan)),
    ("sample-guidance-inf", lambda c: c.model.sample(["a star"], guidance=math.inf)),
    ("sample-seed-negative", lambda c: c.model.sample(["a star"], seed=-1)),
    ("sample-seed-too-large", lambda c: c.model.sample(["a star"], seed=2**63)),
    ("sample-seed-text", lambda c: c.model.sample(["a star"], seed="abc")),
    ("sample-no-prompts", lambda c: c.model.sample([])),
    ("erase-seed-negative", lambda c: _erase(c, seed=-1)),
    ("erase-seed-too-large", lambda c: _erase(c, seed=2**64)),
    ("erase-seed-bool", lambda c: _erase(c, seed=True)),
    ("erase-steps-zero", lambda c: _erase(c, steps=0)),
    ("erase-steps-negative", lambda c: _erase(c, steps=-5)),
    ("erase-lr-zero", lambda c: _erase(c, lr=0)),
    ("erase-lr-negative", lambda c: _erase(c, lr=-1e-4)),
    ("erase-lr-nan", lambda c: _erase(c, lr=math.nan)),
    ("erase-lr-inf", lambda c: _erase(c, lr=math.inf)),
    ("erase-lr-text", lambda c: _erase(c, lr="fast")),
    ("erase-unknown-method", lambda c: _erase(c, method="esdd")),
    ("erase-unknown-key", lambda c: _erase(c, stepz=3)),
    ("erase-unknown-preset", lambda c: gu.erase(c.model, "esd", "star", preset="huge")),
    ("erase-unknown-concept", lambda c: _erase(c, target="starr")),
    ("erase-target-is-anchor", lambda c: _erase(c, target=ErasureTask("star", anchor="star"))),
    ("erase-target-in-retain", lambda c: _erase(c, target=ErasureTask("star", retain=["star"]))),
    ("erase-over-user-dir", lambda c: _erase(c, out=_user_dir(c), overwrite=True)),
    ("erase-diverges", lambda c: _erase(c, lr=1e9, steps=1)),
    ("task-empty", lambda c: ErasureTask("")),
    ("task-anchor-number", lambda c: ErasureTask("star", anchor=5)),
    ("task-retain-empty-text", lambda c: ErasureTask("star", retain=[" "])),
    ("eval-n-zero", lambda c: gu.evaluate(c.model, "star", n_per_prompt=0)),
    ("eval-unknown-protocol", lambda c: gu.evaluate(c.model, "star", protocol="unlearncanvass")),
    ("eval-unknown-key", lambda c: gu.evaluate(c.model, "star", n_per_promt=2)),
    ("eval-guidance-nan", lambda c: gu.evaluate(c.model, "star", guidance=math.nan)),
    ("eval-seed-negative", lambda c: gu.evaluate(c.model, "star", seed=-1)),
    ("load-run-missing", lambda c: gu.load_run(c.tmp / "nope")),
    ("load-run-config-list", lambda c: gu.load_run(_run(c, task=[1]))),
    ("load-run-config-no-method", lambda c: gu.load_run(_run(c, method=None))),
    ("load-run-junk-memattn", lambda c: gu.load_run(_run(c, method="memattn", inference={"memattn": "junk"}))),
    ("load-run-stray-state", lambda c: gu.load_run(_run(c, inference={"memattn": {"c1": 2.0}}))),
    ("load-run-junk-inference", lambda c: gu.load_run(_run(c, inference={"filter": 1}))),
    ("load-run-tampered", lambda c: gu.load_run(_tampered(c))),
    ("override-yaml-tag", lambda c: parse_overrides(["x=!!python/object/apply:os.system [ls]"])),
    ("override-no-equals", lambda c: parse_overrides(["steps"])),
    ("unknown-attack", lambda c: gu.attack(c.model, "p4dd", "star")),
    ("attack-n-prompts-zero", lambda c: gu.attack(c.model, "random_tokens", "star", n_prompts=0)),
    ("unknown-concept-kind", lambda c: gu.list_concepts(kind="shape")),
]  # fmt: skip


@pytest.mark.parametrize("call", [c for _, c in API], ids=[i for i, _ in API])
def test_api_bad_input_is_one_clear_error(ctx, call):
    with pytest.raises(GenUnlearnError) as e:
        call(ctx)
    msg = str(e.value)
    assert msg and "\n" not in msg.strip() and "Traceback" not in msg
    # nothing half-made: an erase that was refused before it ran leaves no directory
    out = ctx.tmp / "out"
    assert not out.exists() or (out / runs.FAILED).is_file()


def test_api_table_is_large_enough():
    assert len(API) >= 40


def test_a_refused_erase_leaves_the_user_directory_as_it_was(ctx):
    d = _user_dir(ctx)
    with pytest.raises(GenUnlearnError):
        _erase(ctx, out=d, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == ["config.json"]
    assert json.loads((d / "config.json").read_text()) == {"precious": True}


def test_a_diverged_erase_is_never_complete(ctx):
    with pytest.raises(GenUnlearnError, match="NaN or inf"):
        _erase(ctx, lr=1e9, steps=1)
    out = ctx.tmp / "out"
    assert (out / runs.FAILED).is_file() and (out / runs.MARKER).is_file()
    with pytest.raises(GenUnlearnError, match="did not finish"):
        gu.load_run(out)


def _cli(argv, capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    return rc, capsys.readouterr().err


# (id, argv builder): every command must exit 2 with one line on stderr
CLI = [
    ("erase-seed-negative", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--seed", "-1"]),
    ("erase-seed-huge", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--seed", str(2**70)]),
    ("erase-seed-text", lambda c: ["erase", "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--seed", "abc"]),
    ("erase-steps-zero", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--set", "steps=0"]),
    ("erase-lr-nan", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--set", "lr=nan"]),
    ("erase-lr-negative", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--set", "lr=-1e-5"]),
    ("erase-set-yaml-tag", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--set", "lr=!!python/object/apply:os.system [ls]"]),
    ("erase-set-no-equals", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--set", "lr"]),
    ("erase-anchor-is-target", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--anchor", "star", "--out", str(c.tmp / "o")]),
    ("erase-over-user-dir", lambda c: ["erase", "--model", str(c.path), "--method", "esd", "--concept", "star", "--out", str(_user_dir(c)), "--overwrite"]),
    ("erase-bad-index", lambda c: ["erase", "--model", str(_model_dir(c, "{oops")), "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o")]),
    ("generate-n-zero", lambda c: ["generate", "--model", str(c.path), "--prompt", "a star", "--n", "0", "--out", str(c.tmp / "g.png")]),
    ("generate-guidance-nan", lambda c: ["generate", "--model", str(c.path), "--prompt", "a star", "--guidance", "nan", "--out", str(c.tmp / "g.png")]),
    ("generate-seed-negative", lambda c: ["generate", "--model", str(c.path), "--prompt", "a star", "--seed", "-3", "--out", str(c.tmp / "g.png")]),
    ("generate-steps-zero", lambda c: ["generate", "--model", str(c.path), "--prompt", "a star", "--steps", "0", "--out", str(c.tmp / "g.png")]),
    ("eval-malformed-run", lambda c: ["eval", "run", "--run", str(_run(c, task="star"))]),
    ("generate-tampered-run", lambda c: ["generate", "--run", str(_tampered(c)), "--prompt", "a star", "--out", str(c.tmp / "g.png")]),
    ("bench-seeds-text", lambda c: ["bench", str(_spec(c, "methods: [original]\nconcepts: [star]\nseeds: [abc]\n")), "--out", str(c.tmp / "o")]),
    ("bench-methods-string", lambda c: ["bench", str(_spec(c, "methods: uce\nconcepts: [star]\n")), "--out", str(c.tmp / "o")]),
    ("bench-eval-typo", lambda c: ["bench", str(_spec(c, "methods: [original]\nconcepts: [star]\neval: {n_per_promt: 2}\n")), "--out", str(c.tmp / "o")]),
    ("bench-yaml-tag", lambda c: ["bench", str(_spec(c, "methods: !!python/object/apply:os.system [ls]\n")), "--out", str(c.tmp / "o")]),
    ("unknown-command-option", lambda c: ["erase", "--method", "esd", "--concept", "star", "--out", str(c.tmp / "o"), "--bogus"]),
]  # fmt: skip


@pytest.mark.parametrize("argv", [a for _, a in CLI], ids=[i for i, _ in CLI])
def test_cli_bad_input_exits_2_with_one_line(ctx, capsys, argv):
    rc, err = _cli(argv(ctx), capsys)
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    assert not (ctx.tmp / "o").exists() and not (ctx.tmp / "g.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        lambda c, f: ["data", "preview", "--out", str(f)],
        lambda c, f: ["generate", "--model", str(c.path), "--prompt", "a star", "--n", "1", "--out", str(f)],
        lambda c, f: ["eval", "model", "--model", str(c.path), "--concept", "star", "--json", str(f)],
    ],
    ids=["data-preview", "generate", "eval-json"],
)  # fmt: skip
def test_cli_never_replaces_an_existing_output_file_unasked(ctx, capsys, argv):
    f = ctx.tmp / "keep.png"
    f.write_bytes(b"the user's own file")
    rc, err = _cli(argv(ctx, f), capsys)
    assert rc == 2 and "--overwrite" in err
    assert f.read_bytes() == b"the user's own file"


def test_a_testbed_never_trains_into_a_user_directory(ctx, capsys):
    d = ctx.tmp / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"jpg")
    rc, err = _cli(["--quiet", "testbed", "train", "--out", str(d), "--unet-steps", "1"], capsys)
    assert rc == 2 and "recipe.json" in err
    assert sorted(p.name for p in d.iterdir()) == ["holiday.jpg"]


def test_a_memorizing_variant_never_deletes_a_neighbouring_partial_directory(ctx, tmp_path):
    from genunlearn.testbed.memorize import MemorizeRecipe, train_memorizing

    neighbour = tmp_path / "variant.partial"
    neighbour.mkdir()
    (neighbour / "notes.txt").write_text("mine")
    recipe = MemorizeRecipe(steps=1, k=2, batch=4, n_ordinary=8, n_controls=2)
    out = train_memorizing(tmp_path / "variant", base=ctx.model, recipe=recipe, progress=False)
    assert (out / "model_index.json").is_file()
    assert (neighbour / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
