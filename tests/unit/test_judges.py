"""Local image classifiers as protocol judges (models/judge.py, ``evaluate(evaluator=PATH)``).

Tiny random transformers ViTs (and timm ViTs where timm is installed) stand in for UnlearnCanvas'
ViT-L classifiers: the judge must say exactly what the model's argmax says, and the protocol's
UA / IRA / CRA must follow from the judge's answers (judges made deterministic by their bias).
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import genunlearn as gu
from genunlearn.data.world import World
from genunlearn.models.judge import UNLEARNCANVAS_TEMPLATE, Judge, load_judge

TOY = World.toycanvas()
TOY_TEMPLATE = "a {colour} {object} in {style} style"
TINY_TIMM = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


def save_vit(d: Path, labels, *, seed=0, force=None, never=None, id2label=True):
    """A tiny random ViTForImageClassification saved (safetensors) in ``d``; ``force``: the
    label it always predicts, ``never``: a label it never predicts."""
    from transformers import ViTConfig, ViTForImageClassification

    kw = {"id2label": dict(enumerate(labels)), "label2id": {v: i for i, v in enumerate(labels)}}
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        **(kw if id2label else {}),
    )
    torch.manual_seed(seed)
    m = ViTForImageClassification(cfg).eval()
    with torch.no_grad():
        if force is not None:
            m.classifier.weight.zero_()
            m.classifier.bias.fill_(-10.0)
            m.classifier.bias[labels.index(force)] = 10.0
        if never is not None:
            m.classifier.bias[labels.index(never)] = -1e4
    m.save_pretrained(d)
    return m


def write_spec(d: Path, heads: dict, **top) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "judge.json").write_text(json.dumps({**top, "heads": heads}))
    return d / "judge.json"


def toy_judge(d: Path, object_kw=None, style_kw=None, colour_kw=None) -> Path:
    """A judge over ToyCanvas' labels, one tiny ViT per head."""
    heads = {}
    for i, (h, kw) in enumerate(
        [("object", object_kw), ("style", style_kw), ("colour", colour_kw)]
    ):
        save_vit(d / h, list(TOY.heads[h]), seed=i, **(kw or {}))
        heads[h] = {"format": "transformers", "path": h}
    return write_spec(d, heads, name="toyjudge", template=TOY_TEMPLATE)


def one_line_error(fn, match: str):
    with pytest.raises(gu.GenUnlearnError, match=match) as e:
        fn()
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------- transformers heads
def test_transformers_judge_says_what_the_models_argmax_says(tmp_path):
    labels = ["cat", "dog", "fox", "owl"]
    m = save_vit(tmp_path / "vit", labels)
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]  # not the default 0.5: must be read
    pc = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "resample": 3,
        "do_normalize": True,
        "image_mean": mean,
        "image_std": std,
    }
    (tmp_path / "vit" / "preprocessor_config.json").write_text(json.dumps(pc))
    judge = load_judge(
        write_spec(
            tmp_path,
            {"animal": {"format": "transformers", "path": "vit"}},
            template="a photo of a {animal}",
        )
    )
    assert isinstance(judge, Judge) and judge.heads_labels == {"animal": labels}  # id2label
    m_ = torch.tensor(mean)[:, None, None]
    s_ = torch.tensor(std)[:, None, None]
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = m(pixel_values=(x - m_) / s_).logits
        assert torch.allclose(judge.logits(x)["animal"], want, atol=1e-5)
        assert judge.predict(x, batch_size=5)["animal"] == [labels[i] for i in want.argmax(1)]
        # larger images are resized to the model's 32x32 with the config's bicubic filter
        big = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
        small = F.interpolate(big, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
        want_big = m(pixel_values=(small - m_) / s_).logits
        assert torch.allclose(judge.logits(big)["animal"], want_big, atol=1e-5)
        # features: what the classifier layer reads (ViT: the final CLS token)
        cls = m.vit(pixel_values=(x - m_) / s_).last_hidden_state[:, 0]
        assert torch.allclose(judge.features(x), cls, atol=1e-5)


def test_a_given_label_map_replaces_id2label_in_output_order(tmp_path):
    save_vit(tmp_path / "vit", ["LABEL_0", "LABEL_1", "LABEL_2"], force="LABEL_2")
    (tmp_path / "names.json").write_text(json.dumps({"0": "Bears", "1": "Cats", "2": "Dogs"}))
    spec = write_spec(
        tmp_path,
        {"object": {"format": "transformers", "path": "vit", "labels": "names.json"}},
        template="a {object}",
    )
    judge = load_judge(spec)
    assert judge.heads_labels["object"] == ["Bears", "Cats", "Dogs"]
    assert judge.predict(torch.rand(3, 3, 32, 32))["object"] == ["Dogs"] * 3


def test_unlearncanvas_template_and_label_names_in_prompts(tmp_path):
    save_vit(tmp_path / "s", ["Van_Gogh", "Monet", "Seed_Images"])
    save_vit(tmp_path / "o", ["Bears", "Cats"])
    spec = write_spec(
        tmp_path,
        {
            "style": {
                "format": "transformers",
                "path": "s",
                "prompt_labels": ["Van_Gogh", "Monet"],
            },
            "object": {"format": "transformers", "path": "o", "prompt_names": {"Cats": "cat"}},
        },
    )
    judge = load_judge(spec)
    assert judge.template == UNLEARNCANVAS_TEMPLATE
    assert judge.caption({"style": "Van_Gogh", "object": "Bears"}) == (
        "A Bears image in Van Gogh style."
    )
    assert judge.caption({"style": "Monet", "object": "Cats"}) == "A cat image in Monet style."
    assert judge.world.heads == {"style": ("Van_Gogh", "Monet"), "object": ("Bears", "Cats")}
    assert judge.heads_labels["style"] == ["Van_Gogh", "Monet", "Seed_Images"]  # all outputs
    assert len(judge.world.grid()) == 4
    for t in ("Van_Gogh", "style:Van_Gogh", "van gogh", "VAN_GOGH"):
        assert judge.resolve(t) == "Van_Gogh"
    assert judge.resolve("cat") == "Cats"  # as written in prompts
    one_line_error(lambda: judge.resolve("Van_Gohg"), "Did you mean 'Van_Gogh'")
    one_line_error(lambda: judge.resolve("Seed_Images"), "unknown")  # not prompted


# ----------------------------------------------------------------------- the protocol
def _grid_counts(target):
    has, without = TOY.split([target])
    return has, without


def test_protocol_with_a_judge_always_naming_the_target_gives_ua_0(tiny_model, tmp_path):
    spec = toy_judge(tmp_path, {"force": "star"}, {"force": "dotted"}, {"force": "red"})
    prompts = []
    real_sample = tiny_model.sample

    def sample(p, *a, **kw):
        prompts.extend(p)
        return real_sample(p, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiny_model, "sample", sample)
        uc = gu.evaluate(
            tiny_model,
            "star",
            protocol="unlearncanvas",
            evaluator=str(spec),
            n_per_prompt=1,
            fid=False,
        )
    has, without = _grid_counts("star")
    assert prompts == [TOY.caption(lab) for lab in has + without]  # the judge's template
    assert uc["ua"] == 0.0 and uc["ira"] == 0.0  # every image judged a star
    assert uc["ua_n"] == len(has) == 8 and uc["ira_n"] == len(without) == 72
    n = len(without)
    assert uc["cra_style"] == sum(lab["style"] == "dotted" for lab in without) / n
    assert uc["cra_colour"] == sum(lab["colour"] == "red" for lab in without) / n
    assert uc["cra"] == pytest.approx((uc["cra_style"] + uc["cra_colour"]) / 2)
    assert 0 < uc["cra_style"] < 1 and 0 < uc["cra_colour"] < 1
    assert "fid" not in uc


@pytest.fixture
def judge_answers(monkeypatch):
    """Every answer a Judge gives during the test, in call order (the protocol labels the
    target split first, then the retain split)."""
    answers = []
    real_predict = Judge.predict

    def predict(self, images, batch_size=64):
        out = real_predict(self, images, batch_size)
        answers.append(out)
        return out

    monkeypatch.setattr(Judge, "predict", predict)
    return answers


def test_protocol_with_a_judge_never_naming_the_target_gives_ua_1(
    tiny_model, tmp_path, judge_answers
):
    kw = {"protocol": "unlearncanvas", "n_per_prompt": 1, "fid": False}
    spec = toy_judge(tmp_path / "never", {"never": "star"})
    uc = gu.evaluate(tiny_model, "star", evaluator=spec, **kw)  # a Path works too
    assert uc["ua"] == 1.0
    assert len(judge_answers) == 2 and "star" not in judge_answers[0]["object"]
    spec2 = toy_judge(tmp_path / "circle", {"force": "circle"})
    uc2 = gu.evaluate(tiny_model, "star", evaluator=spec2, **kw)
    _, without = _grid_counts("star")
    assert uc2["ua"] == 1.0
    assert uc2["ira"] == sum(lab["object"] == "circle" for lab in without) / len(without)
    assert judge_answers[3]["object"] == ["circle"] * len(without)


def test_protocol_scores_follow_a_random_judges_predictions(tiny_model, tmp_path, judge_answers):
    """UA / IRA / CRA recomputed from what the judge answered, image by image."""
    spec = toy_judge(tmp_path)
    uc = gu.evaluate(tiny_model, "dotted", protocol="unlearncanvas", evaluator=spec, n_per_prompt=1)
    has, without = _grid_counts("dotted")
    p_t, p_r = judge_answers
    assert len(p_t["style"]) == len(has) and len(p_r["style"]) == len(without)
    assert uc["ua"] == sum(p != "dotted" for p in p_t["style"]) / len(has)
    hits = sum(p == lab["style"] for p, lab in zip(p_r["style"], without, strict=True))
    assert uc["ira"] == hits / len(without)
    for h in ("object", "colour"):
        acc = sum(p == lab[h] for p, lab in zip(p_r[h], without, strict=True)) / len(without)
        assert uc[f"cra_{h}"] == acc
    # ToyCanvas renders real images of the judge's labels: FID on the judge's features
    assert uc["fid"] >= 0.0 and uc["kid"] == uc["kid"]


def test_fidelity_protocol_takes_a_judge(tiny_model, tmp_path, judge_answers):
    spec = toy_judge(tmp_path, {"force": "star"})
    fid = gu.evaluate(tiny_model, protocol="fidelity", evaluator=spec, n_per_prompt=1)
    assert fid["n_images"] == 80 and judge_answers[0]["object"] == ["star"] * 80
    assert fid["object_acc"] == sum(lab["object"] == "star" for lab in TOY.grid()) / 80
    grid = TOY.grid()
    for h in ("style", "colour"):
        hits = sum(p == lab[h] for p, lab in zip(judge_answers[0][h], grid, strict=True))
        assert fid[f"{h}_acc"] == hits / 80


class _Elsewhere(torch.overrides.TorchFunctionMode):
    """As tests/contract/test_devices.py: tensors genunlearn's code makes without a device land
    on ``meta``, so code that would leave one on the CPU beside a GPU model fails here too."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func
            in (
                torch.tensor,
                torch.zeros,
                torch.ones,
                torch.empty,
                torch.arange,
                torch.rand,
                torch.randn,
                torch.full,
                torch.as_tensor,
            )
            and kwargs.get("device") is None
        ):
            f = sys._getframe(1)
            while f is not None and "/torch/" in f.f_code.co_filename:
                f = f.f_back
            if f is not None and "/src/genunlearn/" in f.f_code.co_filename.replace("\\", "/"):
                kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def test_a_judge_runs_beside_a_model_elsewhere(tiny_model, tmp_path):
    spec = toy_judge(tmp_path, {"force": "star"})
    with _Elsewhere():
        judge = load_judge(spec, device=tiny_model.device)
        assert judge.predict(torch.rand(2, 3, 32, 32, device="cpu"))["object"] == ["star"] * 2
        uc = gu.evaluate(
            tiny_model, "star", protocol="unlearncanvas", evaluator=spec, n_per_prompt=1
        )
    assert uc["ua"] == 0.0 and uc["fid"] >= 0.0


@pytest.fixture
def worldless_model(tiny_testbed, tmp_path):
    """The tiny pipeline without its world and evaluator: a plain checkpoint, as a real SD."""
    d = tmp_path / "plain"
    shutil.copytree(tiny_testbed, d)
    (d / "world.json").unlink()
    shutil.rmtree(d / "evaluator")
    model = gu.load_model(d)
    assert model.world is None
    return model


def test_protocol_runs_on_a_model_without_a_world(worldless_model, tmp_path):
    save_vit(tmp_path / "s", ["Van_Gogh", "Monet", "Seed_Images"], force="Van_Gogh")
    save_vit(tmp_path / "o", ["Bears", "Cats"], force="Cats")
    spec = write_spec(
        tmp_path,
        {
            "style": {"format": "transformers", "path": str(tmp_path / "s")},  # absolute path
            "object": {"format": "transformers", "path": "o"},
        },
    )
    kw = {"protocol": "unlearncanvas", "evaluator": spec, "n_per_prompt": 1, "steps": 2}
    with warnings.catch_warnings():  # "van gogh" is free text the tiny tokenizer never saw
        warnings.simplefilter("ignore")
        uc = gu.evaluate(worldless_model, "Van_Gogh", **kw)
        uc2 = gu.evaluate(worldless_model, "van gogh", **kw)
    assert uc == uc2
    assert uc["ua"] == 0.0 and uc["ira"] == 0.0  # every image judged Van Gogh
    assert uc["cra"] == uc["cra_object"] == 0.5  # retain prompts: Monet, Seed_Images x 2 objects
    assert uc["n_target_images"] == 2 and uc["n_retain_images"] == 4
    assert "fid" not in uc  # no real images of these labels
    one_line_error(lambda: gu.evaluate(worldless_model, "Van_Gohg", **kw), "Did you mean")
    one_line_error(lambda: gu.evaluate(worldless_model, "star", protocol="fidelity"), "no labe")


# ----------------------------------------------------------------------- timm heads
def _timm_model(n, **over):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=n, **{**TINY_TIMM, **over}
    ).eval()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_judge_in_unlearncanvas_form_says_what_the_model_says(tmp_path, suffix):
    labels = ["Abstractionism", "Byzantine", "Cartoon"]
    m = _timm_model(len(labels))
    f = tmp_path / f"style{suffix}"
    if suffix == ".pth":  # UnlearnCanvas' container
        torch.save({"model_state_dict": m.state_dict(), "epoch": 9}, f)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(f))
    head = {
        "format": "timm",
        "arch": "vit_tiny_patch16_224",
        "model_args": TINY_TIMM,
        "checkpoint": f.name,
        "labels": labels,
    }
    judge = load_judge(write_spec(tmp_path, {"style": head}, template="art in {style} style"))
    x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # UnlearnCanvas' transform: bilinear resize, mean / std 0.5
        small = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True).clamp(0, 1)
        want = m((small - 0.5) / 0.5)
    assert torch.allclose(judge.logits(x)["style"], want, atol=1e-5)
    assert judge.predict(x)["style"] == [labels[i] for i in want.argmax(1)]


def test_timm_checkpoint_of_another_architecture_is_refused(tmp_path):
    m = _timm_model(2, depth=2)
    torch.save({"model_state_dict": m.state_dict()}, tmp_path / "s.pth")
    head = {
        "format": "timm",
        "arch": "vit_tiny_patch16_224",
        "model_args": TINY_TIMM,
        "checkpoint": "s.pth",
        "labels": ["a", "b"],
    }
    spec = write_spec(tmp_path, {"style": head}, template="{style}")
    one_line_error(lambda: load_judge(spec), "does not fit timm 'vit_tiny_patch16_224'")


def test_timm_heads_without_timm_name_the_install(tmp_path, monkeypatch):
    torch.save({"model_state_dict": {"head.weight": torch.zeros(2, 8)}}, tmp_path / "s.pth")
    head = {
        "format": "timm",
        "arch": "vit_large_patch16_224",
        "checkpoint": "s.pth",
        "labels": ["a", "b"],
    }
    spec = write_spec(tmp_path, {"style": head}, template="{style}")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    one_line_error(lambda: load_judge(spec), r"pip install timm")


# ----------------------------------------------------------------------- bad input
class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran.txt"
    sd = {"head.weight": torch.zeros(2, 8)}
    torch.save({"model_state_dict": sd, "extra": _RunsCode(str(marker))}, tmp_path / "s.pth")
    head = {
        "format": "timm",
        "arch": "vit_large_patch16_224",
        "checkpoint": "s.pth",
        "labels": ["a", "b"],
    }
    spec = write_spec(tmp_path, {"style": head}, template="{style}")
    one_line_error(lambda: load_judge(spec), "weights_only=True")
    assert not marker.exists()


def _vit_spec(tmp_path, head_extra=None, **top):
    if not (tmp_path / "vit").is_dir():
        save_vit(tmp_path / "vit", ["a", "b", "c"])
    head = {"format": "transformers", "path": "vit", **(head_extra or {})}
    return write_spec(tmp_path, {"x": head}, **{"template": "a {x}", **top})


BAD = {
    "missing-file": (lambda t: t / "nope.json", "no such file"),
    "folder-without-spec": (lambda t: t, "has no judge.json"),
    "bad-json": (lambda t: _text(t, "{heads: "), "not valid JSON"),
    "not-an-object": (lambda t: _text(t, "[1, 2]"), '"heads"'),
    "unknown-top-key": (lambda t: _vit_spec(t, templat="x"), "unknown keys templat"),
    "unknown-format": (lambda t: _vit_spec(t, {"format": "onnx"}), "format must be one of"),
    "unknown-head-key": (lambda t: _vit_spec(t, {"lables": ["a"]}), "unknown keys lables"),
    "labels-count": (lambda t: _vit_spec(t, {"labels": ["a", "b"]}), "3 outputs but 2 labels"),
    "labels-repeat": (lambda t: _vit_spec(t, {"labels": ["a", "a", "b"]}), "labels repeat a"),
    "missing-path": (lambda t: _vit_spec(t, {"path": "gone"}), "does not exist"),
    "path-escapes": (lambda t: _vit_spec(t, {"path": "../vit"}), "leads out of the spec"),
    "template-fields": (lambda t: _vit_spec(t, template="a {y}"), "must name each head"),
    "no-template": (lambda t: _vit_spec(t, template=None), "template is needed"),
    "prompt-labels": (lambda t: _vit_spec(t, {"prompt_labels": ["z"]}), "not labels"),
    "bad-mean": (lambda t: _vit_spec(t, {"mean": [0.5]}), "mean must be a list of 3"),
    "bad-interp": (lambda t: _vit_spec(t, {"interpolation": "lanczos"}), "interpolation"),
    "timm-labels-count": (lambda t: _timm_spec(t, ["a", "b"]), "3 outputs but 2 labels"),
    "timm-no-labels": (lambda t: _timm_spec(t, None), "needs labels"),
    "timm-not-state-dict": (lambda t: _timm_spec(t, ["a"], obj=[1, 2]), "not a state dict"),
}


def _text(t: Path, text: str) -> Path:
    (t / "judge.json").write_text(text)
    return t / "judge.json"


def _timm_spec(t: Path, labels, obj=None):
    torch.save(
        obj if obj is not None else {"model_state_dict": {"head.weight": torch.zeros(3, 4)}},
        t / "s.pth",
    )
    head = {"format": "timm", "arch": "vit_large_patch16_224", "checkpoint": "s.pth"}
    if labels is not None:
        head["labels"] = labels
    return write_spec(t, {"style": head}, template="{style}")


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_judge_specs_are_one_line_errors(tmp_path, case):
    make, match = BAD[case]
    spec = make(tmp_path)
    if case == "path-escapes":  # the model sits one level up, beside the spec's folder
        inner = tmp_path / "inner"
        inner.mkdir()
        spec = spec.rename(inner / "judge.json")
    one_line_error(lambda: load_judge(spec), match)


def test_labels_shared_by_two_heads_are_refused(tmp_path):
    save_vit(tmp_path / "a", ["x", "y"])
    save_vit(tmp_path / "b", ["y", "z"])
    spec = write_spec(
        tmp_path,
        {
            "style": {"format": "transformers", "path": "a"},
            "object": {"format": "transformers", "path": "b"},
        },
    )
    one_line_error(lambda: load_judge(spec), "labels y are in several heads")
