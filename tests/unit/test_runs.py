"""Run directories: refusal to clobber, incomplete markers, artifact integrity."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from genunlearn import runs
from genunlearn.types import ErasureResult, ErasureTask, GenUnlearnError

HASH = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4


def test_prepare_dir_creates_and_marks_incomplete(tmp_path):
    d = runs.prepare_dir(tmp_path / "a" / "b")
    assert d.is_dir() and (d / runs.MARKER).is_file()
    with pytest.raises(GenUnlearnError, match="incomplete"):
        runs.read_record(d)


def test_prepare_dir_accepts_an_existing_empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    assert runs.prepare_dir(d) == d and (d / runs.MARKER).is_file()


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_dir_never_touches_a_user_directory(tmp_path, overwrite):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.txt").write_text("precious")
    (d / "sub").mkdir()
    (d / "sub" / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(GenUnlearnError) as e:
        runs.prepare_dir(d, overwrite=overwrite)
    assert str(d) in str(e.value)
    if overwrite:
        assert "not a genunlearn run" in str(e.value)
    assert (d / "thesis.txt").read_text() == "precious"
    assert (d / "sub" / "x.bin").read_bytes() == b"\x00\x01"
    assert not (d / runs.MARKER).exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_dir_refuses_a_path_that_is_a_file(tmp_path, overwrite):
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(GenUnlearnError):
        runs.prepare_dir(f, overwrite=overwrite)
    assert f.read_text() == "keep"


def test_prepare_dir_overwrites_only_a_run_directory_when_asked(tmp_path):
    d = runs.prepare_dir(tmp_path / "run")
    (d / runs.CONFIG).write_text("{}")
    (d / runs.SAMPLES).write_bytes(b"png")
    with pytest.raises(GenUnlearnError, match="overwrite"):
        runs.prepare_dir(d)
    assert (d / runs.SAMPLES).exists()
    runs.prepare_dir(d, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == sorted([runs.MARKER, runs.OWNER])


def test_overwrite_refuses_a_model_directory_that_merely_holds_a_config(tmp_path):
    """The probe's repro: ``erase --out MODEL/unet --overwrite`` deleted a model's UNet."""
    unet = tmp_path / "model" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    (unet / runs.MARKER).write_text("a user file that happens to have this name")
    with pytest.raises(GenUnlearnError, match="not a genunlearn run"):
        runs.prepare_dir(unet, overwrite=True)
    assert (unet / "diffusion_pytorch_model.safetensors").read_bytes() == b"weights"
    assert (unet / "config.json").is_file() and (unet / runs.MARKER).is_file()


def test_overwrite_removes_only_genunlearns_own_files(tmp_path):
    d = runs.prepare_dir(tmp_path / "run")
    for name in (runs.CONFIG, runs.ARTIFACT, runs.SAMPLES, "attack_p4d.png", runs.FAILED):
        (d / name).write_bytes(b"old")
    (d / "notes.txt").write_text("mine")
    (d / "sub").mkdir()
    (d / "sub" / runs.CONFIG).write_text("mine too")
    runs.prepare_dir(d, overwrite=True)
    left = sorted(p.name for p in d.iterdir())
    assert left == sorted([runs.MARKER, runs.OWNER, "notes.txt", "sub"])
    assert (d / "notes.txt").read_text() == "mine"
    assert (d / "sub" / runs.CONFIG).read_text() == "mine too"


def test_a_forged_or_linked_marker_is_not_ownership(tmp_path):
    d = tmp_path / "forged"
    d.mkdir()
    (d / runs.OWNER).write_text("not json")
    (d / "data.bin").write_bytes(b"x")
    with pytest.raises(GenUnlearnError, match="not a genunlearn run"):
        runs.prepare_dir(d, overwrite=True)
    real = runs.prepare_dir(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    (real / runs.SAMPLES).write_bytes(b"x")
    with pytest.raises(GenUnlearnError, match="not a genunlearn run"):
        runs.prepare_dir(link, overwrite=True)
    assert (real / runs.SAMPLES).exists()


def test_prepare_dir_overwrites_an_interrupted_run(tmp_path):
    d = runs.prepare_dir(tmp_path / "run")
    (d / runs.ARTIFACT).write_bytes(b"partial")
    runs.prepare_dir(d, overwrite=True)
    assert not (d / runs.ARTIFACT).exists() and (d / runs.MARKER).is_file()


def test_read_record_errors(tmp_path):
    with pytest.raises(GenUnlearnError, match="does not exist"):
        runs.read_record(tmp_path / "missing")
    d = tmp_path / "noconf"
    d.mkdir()
    with pytest.raises(GenUnlearnError, match=runs.CONFIG):
        runs.read_record(d)
    (d / runs.CONFIG).write_text("{not json")
    with pytest.raises(GenUnlearnError, match="corrupt"):
        runs.read_record(d)


def test_read_record_refuses_incomplete_even_with_config(tmp_path):
    d = runs.prepare_dir(tmp_path / "r")
    rec = {"method": "esd", "config": {}, "task": {"target": "star"}, "seed": 0}
    rec |= {"base_model": "toy-sd", "base_hash": HASH}
    (d / runs.CONFIG).write_text(json.dumps(rec))
    with pytest.raises(GenUnlearnError, match="incomplete"):
        runs.read_record(d)
    runs.finish(d)
    assert runs.read_record(d) == rec


def _artifact(d, tensors, metadata):
    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(d / runs.ARTIFACT), metadata=metadata)
    return d


def test_load_artifact_round_trip(tmp_path):
    t = {"unet.a": torch.arange(6.0).reshape(2, 3), "text_encoder.b": torch.ones(4)}
    d = _artifact(tmp_path / "r", t, {"base_hash": HASH})
    out = runs.load_artifact(d, HASH)
    assert set(out) == set(t)
    for k in t:
        assert torch.equal(out[k], t[k])


def test_load_artifact_hash_mismatch_names_both_hashes(tmp_path):
    d = _artifact(tmp_path / "r", {"w": torch.zeros(2)}, {"base_hash": HASH})
    with pytest.raises(GenUnlearnError) as e:
        runs.load_artifact(d, OTHER)
    msg = str(e.value)
    assert HASH[:12] in msg and OTHER[:12] in msg


def test_load_artifact_without_hash_metadata_is_a_mismatch(tmp_path):
    d = _artifact(tmp_path / "r", {"w": torch.zeros(2)}, None)
    with pytest.raises(GenUnlearnError, match=HASH[:12]):
        runs.load_artifact(d, HASH)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_load_artifact_corrupt_file_is_a_clear_error(tmp_path, damage):
    d = _artifact(tmp_path / "r", {"w": torch.zeros(64)}, {"base_hash": HASH})
    f = d / runs.ARTIFACT
    data = f.read_bytes()
    if damage == "garbage":
        f.write_bytes(b"\xff" * 200)
    elif damage == "truncated":
        f.write_bytes(data[: len(data) - 40])
    else:
        f.write_bytes(b"")
    with pytest.raises(GenUnlearnError) as e:
        runs.load_artifact(d, HASH)
    assert "corrupt" in str(e.value) and str(f) in str(e.value)


def test_load_artifact_missing_file(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(GenUnlearnError, match="missing"):
        runs.load_artifact(tmp_path / "r", HASH)


def test_write_run_then_read_back(tmp_path):
    d = runs.prepare_dir(tmp_path / "run")
    model = SimpleNamespace(base_hash=HASH, model_id="toy-sd")
    changed = {"unet.w": torch.randn(3, 3, dtype=torch.float16)}
    result = ErasureResult(changed=changed, inference={"negative_prompt": "star"})
    task = ErasureTask(["star", "red"])
    rec = runs.write_run(
        d, method="m", preset="toy", config={"steps": 2}, task=task, seed=3, model=model,
        result=result, efficiency={"seconds": 1.0},
    )  # fmt: skip
    runs.finish(d)
    back = runs.read_record(d)
    assert back["method"] == "m" and back["seed"] == 3 and back["base_hash"] == HASH
    assert ErasureTask.from_dict(back["task"]) == task
    assert back["inference"] == {"negative_prompt": "star"}
    assert back["efficiency"]["storage_bytes"] == (d / runs.ARTIFACT).stat().st_size
    assert rec["changed_tensors"] == back["changed_tensors"] == 1
    tensors = runs.load_artifact(d, HASH)
    assert torch.equal(tensors["unet.w"], changed["unet.w"].float())


def _written_run(tmp_path):
    d = runs.prepare_dir(tmp_path / "run")
    model = SimpleNamespace(base_hash=HASH, model_id="toy-sd")
    result = ErasureResult(changed={"unet.w": torch.arange(16.0).reshape(4, 4)})
    rec = runs.write_run(
        d, method="m", preset="toy", config={}, task=ErasureTask("star"), seed=0, model=model,
        result=result, efficiency={},
    )  # fmt: skip
    runs.finish(d)
    return d, rec


def test_a_tampered_artifact_is_refused_naming_the_file(tmp_path):
    d, rec = _written_run(tmp_path)
    f = d / runs.ARTIFACT
    digest = runs.read_record(d)["sha256"][runs.ARTIFACT]
    assert runs.load_artifact(d, HASH, digest)["unet.w"].sum() == 120
    data = bytearray(f.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf: a valid file, other bytes
    f.write_bytes(bytes(data))
    with pytest.raises(GenUnlearnError) as e:
        runs.load_artifact(d, HASH, digest)
    assert str(f) in str(e.value) and "digest" in str(e.value)
    # without the record's digest the digest inside the file still catches the change
    with pytest.raises(GenUnlearnError, match="digest"):
        runs.load_artifact(d, HASH)


def test_check_finite_names_the_broken_tensor():
    runs.check_finite({"a": torch.ones(2)}, "x")
    with pytest.raises(GenUnlearnError, match="unet.b"):
        runs.check_finite({"a": torch.ones(2), "unet.b": torch.tensor([1.0, float("nan")])}, "x")
    with pytest.raises(GenUnlearnError, match="infinite"):
        runs.check_finite({"c": torch.tensor([float("inf")])}, "x")


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '{"method": "m"}', '{"method": 1, "config": {}, "task": {"target": "a"}, '
     '"seed": 0, "base_model": "m", "base_hash": "h"}'],
)  # fmt: skip
def test_read_record_refuses_malformed_records(tmp_path, text):
    d = tmp_path / "r"
    d.mkdir()
    (d / runs.CONFIG).write_text(text)
    with pytest.raises(GenUnlearnError, match="config.json"):
        runs.read_record(d)
