"""Export: an erased run as a plain diffusers pipeline directory or one component's weights.

The exported pipeline must give genunlearn's images under diffusers' own sampler (same starting
latents), load without genunlearn at all, and refuse to drop inference-time parts silently.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import genunlearn as gu
from genunlearn.cli.main import main
from genunlearn.models import addons
from genunlearn.models.export import MARKER, NOTE, NOTE_KEY, export_pipeline, inference_parts
from genunlearn.types import AddOn

STAR = "a red star in striped style"


@pytest.fixture(scope="module")
def uce_run(tiny_model, tmp_path_factory):
    """A weight-changing run (UCE edits the UNet's cross-attention K/V) saved to disk."""
    d = tmp_path_factory.mktemp("export") / "uce"
    return gu.erase(tiny_model, "uce", "star", d, preset="smoke", samples=False)


@pytest.fixture(scope="module")
def exported(uce_run, tmp_path_factory):
    return uce_run.export(tmp_path_factory.mktemp("export") / "pipe")


@pytest.fixture(scope="module")
def neg_run(tiny_model, tmp_path_factory):
    """An inference-time run: no weight changes, a negative prompt."""
    d = tmp_path_factory.mktemp("export") / "neg"
    return gu.erase(tiny_model, "negative_prompt", "star", d, preset="smoke", samples=False)


def diffusers_pipe(path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("prompt", "n", "seed", "steps", "guidance"),
    [(STAR, 1, 3, 4, 3.0), ("a blue circle in dotted style", 2, 11, 3, 7.5)],
)
def test_plain_diffusers_gives_genunlearns_images(
    uce_run, exported, tiny_model, prompt, n, seed, steps, guidance
):
    pipe = diffusers_pipe(exported)
    want = uce_run.model.sample([prompt], n=n, seed=seed, steps=steps, guidance=guidance)
    latents = uce_run.model.initial_noise(n, seed)  # both samplers scale by init_noise_sigma
    with torch.no_grad():
        got = pipe(
            prompt, num_images_per_prompt=n, latents=latents, num_inference_steps=steps,
            guidance_scale=guidance, output_type="pt",
        ).images  # fmt: skip
    assert got.shape == want.shape
    assert (got.float().cpu() - want).abs().max() < 1e-3
    if prompt == STAR:  # the erased weights were exported, not the base model's
        base = tiny_model.sample([prompt], n=n, seed=seed, steps=steps, guidance=guidance)
        assert (base - want).abs().max() > 1e-2


def test_pipeline_directory_is_plain_diffusers(uce_run, exported, tiny_testbed):
    names = {p.name for p in exported.iterdir()}
    assert {"model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= names
    assert not {"world.json", "evaluator", NOTE} & names  # genunlearn's world stays behind
    index = json.loads((exported / "model_index.json").read_text())
    libs = {v[0] for v in index.values() if isinstance(v, list) and v[0] is not None}
    assert libs == {"diffusers", "transformers"}
    sched = json.loads((exported / "scheduler" / "scheduler_config.json").read_text())
    own = json.loads(json.dumps(dict(uce_run.model.pipe.scheduler.config)))
    assert sched["_class_name"] == type(uce_run.model.pipe.scheduler).__name__
    assert {k: v for k, v in sched.items() if not k.startswith("_")} == {
        k: v for k, v in own.items() if not k.startswith("_")
    }  # the scheduler genunlearn's sampler steps with, unchanged
    marker = json.loads((exported / MARKER).read_text())
    assert marker["complete"] and marker["dtype"] == "float32" and marker["part"] == "pipeline"
    assert "unet/diffusion_pytorch_model.safetensors" in marker["files"]
    assert marker["source"]["method"] == "uce"


def test_pipeline_directory_loads_with_load_model(uce_run, exported):
    model = gu.load_model(exported)
    assert model.world is None  # a plain checkpoint now
    got = model.sample([STAR, "a blue heart in flat style"], n=2, seed=5, steps=3, guidance=3.0)
    want = uce_run.model.sample(
        [STAR, "a blue heart in flat style"], n=2, seed=5, steps=3, guidance=3.0
    )
    assert (got - want).abs().max() < 1e-5


def test_loads_and_samples_without_genunlearn(uce_run, exported, tmp_path):
    """A fresh interpreter in which importing genunlearn fails loads and samples the export."""
    torch.save(uce_run.model.initial_noise(1, 3), tmp_path / "latents.pt")
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "genunlearn":
                    raise ImportError("genunlearn is not installed here")
        sys.meta_path.insert(0, Block())
        import torch
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])
        pipe.set_progress_bar_config(disable=True)
        lat = torch.load(sys.argv[2] + "/latents.pt")
        img = pipe(sys.argv[3], latents=lat, num_inference_steps=4, guidance_scale=3.0,
                   output_type="pt").images
        assert not [m for m in sys.modules if m.split(".")[0] == "genunlearn"]
        torch.save(img, sys.argv[2] + "/img.pt")
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(exported), str(tmp_path), STAR],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.load(tmp_path / "img.pt")
    want = uce_run.model.sample([STAR], n=1, seed=3, steps=4, guidance=3.0)
    assert (got.float() - want).abs().max() < 1e-3


def test_unet_file_reproduces_the_erased_unet(uce_run, tiny_model, tmp_path):
    f = uce_run.export(tmp_path / "unet.safetensors", part="unet")
    unet = copy.deepcopy(tiny_model.pipe.unet)  # the base UNet
    state = load_file(f)
    unet.load_state_dict(state)  # strict: the full state dict, diffusers key names
    erased = uce_run.model.pipe.unet.state_dict()
    assert set(state) == set(erased)
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in erased.items())
    base = tiny_model.pipe.unet.state_dict()
    changed = [k for k in erased if not torch.equal(erased[k], base[k])]
    assert changed and all("attn2" in k for k in changed)
    with safe_open(str(f), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["component"] == "unet" and meta["key_scheme"] == "diffusers"
    assert meta["partial"] == "false" and meta["dtype"] == "float32"
    assert json.loads(meta["genunlearn_export"])["source"]["method"] == "uce"


def test_text_encoder_file_round_trips(tiny_model, tmp_path):
    """A run that changed the text encoder exports it as a flat state dict."""
    m = tiny_model.copy()
    name, p = next((n, p) for n, p in m.text_encoder.named_parameters() if p.dim() == 2)
    p.data = p.data + 0.5
    run = gu.Run(m, "hand_made", gu.ErasureTask("star"), {}, gu.ErasureResult(
        changed={f"text_encoder.{name}": p.detach().clone()}), {})  # fmt: skip
    f = run.export(tmp_path / "te.safetensors", part="text_encoder")
    te = copy.deepcopy(tiny_model.text_encoder)
    te.load_state_dict(load_file(f))
    assert torch.equal(dict(te.named_parameters())[name], p)
    with pytest.raises(gu.GenUnlearnError, match=r"changed only text_encoder.*--text-encoder-only"):
        run.export(tmp_path / "unet.safetensors", part="unet")
    assert not (tmp_path / "unet.safetensors").exists()


def test_inference_run_is_refused_naming_what_cannot_be_baked(neg_run, tiny_model, tmp_path):
    out = tmp_path / "neg"
    with pytest.raises(gu.GenUnlearnError) as e:
        neg_run.export(out)
    msg = str(e.value)
    assert "\n" not in msg and "negative prompt 'star'" in msg
    assert "negative_prompt='star'" in msg and "allow_inference=True" in msg
    assert not out.exists()  # refused before anything was written
    path = neg_run.export(out, allow_inference=True)
    note = json.loads((path / NOTE).read_text())
    assert note["inference"] == {"negative_prompt": "star"}
    assert len(note["left_out"]) == 1 and "negative prompt 'star'" in note["left_out"][0]
    # the weights alone: the base model's images, without the negative prompt
    model = gu.load_model(path)
    got = model.sample([STAR], seed=1, steps=2, guidance=3.0)
    assert (got - tiny_model.sample([STAR], seed=1, steps=2, guidance=3.0)).abs().max() < 1e-5
    assert (got - neg_run.model.sample([STAR], seed=1, steps=2, guidance=3.0)).abs().max() > 1e-3


class Dim:
    """An output filter that scales images (blocks none)."""

    def __call__(self, images):
        return images * 0.5, torch.zeros(len(images), dtype=torch.bool)


class ToyProcessor:
    """An attention processor that is no diffusers class."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor

        self.inner = AttnProcessor()

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def test_every_kind_of_inference_part_is_named(tiny_model, tmp_path):
    """Found from the model itself (state, wrappers, filters, add-ons, processors), whatever
    method put them there."""
    import contextlib

    m = tiny_model.copy()
    assert inference_parts(m) == []
    m.apply_inference({"negative_prompt": "", "knob": {"c": 1.5}})  # "" is the default: no part
    m.sampling_wrappers["swap"] = lambda model, prompts: contextlib.nullcontext()
    m.output_filters.append(Dim())
    mods = dict(list(addons.transformer_modules(m.denoiser).items())[:2])
    addon = AddOn("toy_adapter", addons.init_low_rank(mods, 1), {"prompts": ["star"], "rank": 1})
    addons.attach(m, addon)
    layer = next(iter(m.cross_attention_layers().values()))
    layer.set_processor(ToyProcessor())
    parts = inference_parts(m)
    assert len(parts) == 5
    with pytest.raises(gu.GenUnlearnError) as e:
        export_pipeline(m, tmp_path / "x")
    msg = str(e.value)
    for word in ("'knob'", "sampling wrapper 'swap'", "output filter Dim", "'toy_adapter'"):
        assert word in msg
    assert "2 UNet modules" in msg and "ToyProcessor" in msg and "\n" not in msg
    assert not (tmp_path / "x").exists()
    with pytest.raises(gu.GenUnlearnError, match="output filter Dim"):
        export_pipeline(m, tmp_path / "u.safetensors", part="unet")
    f = export_pipeline(m, tmp_path / "u.safetensors", part="unet", allow_inference=True)
    with safe_open(str(f), framework="pt") as fh:
        note = json.loads(fh.metadata()[NOTE_KEY])
    assert note["left_out"] == parts and note["addons"][0]["kind"] == "toy_adapter"
    # the add-on is no weight: the file holds the base UNet's tensors
    base = tiny_model.pipe.unet.state_dict()
    assert all(torch.equal(v, base[k]) for k, v in load_file(f).items())


def test_overwrite_never_touches_user_files(uce_run, neg_run, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(gu.GenUnlearnError, match="overwrite=True"):
        uce_run.export(user)
    with pytest.raises(gu.GenUnlearnError, match="not a genunlearn export directory"):
        uce_run.export(user, overwrite=True)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]

    d = tmp_path / "exp"
    neg_run.export(d, allow_inference=True)  # writes a note
    assert (d / NOTE).is_file()
    (d / "README.md").write_text("user's")
    (d / "unet" / "extra.txt").write_text("user's too")
    with pytest.raises(gu.GenUnlearnError, match="already exists"):
        uce_run.export(d)
    uce_run.export(d, overwrite=True)
    assert not (d / NOTE).exists()  # the earlier export's own file is gone
    assert (d / "README.md").read_text() == "user's"
    assert (d / "unet" / "extra.txt").read_text() == "user's too"
    erased = uce_run.model.pipe.unet.state_dict()
    got = load_file(d / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(got[k], v) for k, v in erased.items())
    assert sorted(json.loads((d / MARKER).read_text())["files"]) == sorted(
        str(p.relative_to(d)) for p in d.rglob("*")
        if p.is_file() and p.name not in {MARKER, "README.md", "extra.txt"}
    )  # fmt: skip

    # a user file where the new export would write is never replaced
    (d / NOTE).write_text("the user's own note")
    with pytest.raises(gu.GenUnlearnError, match="was not written by genunlearn"):
        neg_run.export(d, overwrite=True, allow_inference=True)
    assert (d / NOTE).read_text() == "the user's own note"

    # a marker that claims files outside the directory makes it no export of ours
    marker = json.loads((d / MARKER).read_text())
    (d / MARKER).write_text(
        json.dumps({**marker, "files": [*marker["files"], "../mine/notes.txt"]})
    )
    with pytest.raises(gu.GenUnlearnError, match="not a genunlearn export directory"):
        uce_run.export(d, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep me"


def test_component_file_overwrite_and_path_checks(uce_run, tmp_path):
    f = tmp_path / "unet.safetensors"
    f.write_text("user's bytes")
    with pytest.raises(gu.GenUnlearnError, match="already exists"):
        uce_run.export(f, part="unet")
    assert f.read_text() == "user's bytes"
    uce_run.export(f, part="unet", overwrite=True)
    assert "conv_in.weight" in load_file(f)
    with pytest.raises(gu.GenUnlearnError, match=r"ending in \.safetensors"):
        uce_run.export(tmp_path / "unet.bin", part="unet")
    with pytest.raises(gu.GenUnlearnError, match="part must be one of pipeline, unet"):
        uce_run.export(tmp_path / "v", part="vae")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.safetensors"]  # no temp files


def test_half_precision_model_exports_one_dtype(tiny_model, tmp_path):
    """A float32 tensor a method trained on a bfloat16 model is written in bfloat16."""
    from genunlearn.models.sd import SDAdapter

    m = tiny_model.copy()
    m.pipe.unet.to(torch.bfloat16)
    m.pipe.text_encoder.to(torch.bfloat16)
    m.pipe.vae = copy.deepcopy(m.pipe.vae).to(torch.bfloat16)
    half = SDAdapter(m.pipe, m.model_id, m.base_hash)
    next(half.pipe.unet.parameters()).data = next(tiny_model.pipe.unet.parameters()).data.float()
    d = export_pipeline(half, tmp_path / "half")
    for f in d.rglob("*.safetensors"):
        assert {t.dtype for t in load_file(f).values() if t.is_floating_point()} == {torch.bfloat16}
    assert json.loads((d / MARKER).read_text())["dtype"] == "bfloat16"


def test_cli_export(uce_run, tmp_path, capsys):
    out = tmp_path / "cli_pipe"
    code = main(["export", "--run", str(uce_run.path), "--out", str(out)])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert f"wrote {out}" in cap.out and (out / "model_index.json").is_file()
    f = tmp_path / "u.safetensors"
    assert main(["export", "--run", str(uce_run.path), "--out", str(f), "--unet-only"]) == 0
    erased = uce_run.model.pipe.unet.state_dict()
    assert all(torch.equal(load_file(f)[k], v) for k, v in erased.items())


def test_cli_export_bad_input_is_one_line(neg_run, tmp_path, capsys):
    code = main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not exist" in err and "Traceback" not in err
    code = main(["export", "--run", str(neg_run.path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--allow-inference" in err
    with pytest.raises(SystemExit) as e:
        main(["export", "--run", "r", "--out", "o", "--unet-only", "--text-encoder-only"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    code = main(
        ["export", "--run", str(neg_run.path), "--out", str(tmp_path / "o"), "--allow-inference"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "left out: its inference state sets a negative prompt 'star'" in out
