"""Local image classifiers as the judges of evaluator-based protocols (UnlearnCanvas' ViT-L/16).

A *judge* is one classifier per head (UnlearnCanvas ships a style and an object classifier)
described by a JSON spec the user writes once (``judge.json``; the format is in
docs/judges.md). :func:`load_judge` reads it and returns a :class:`Judge`, which has the toy
:class:`~genunlearn.models.evaluator.Evaluator`'s interface: ``predict(images) -> {head:
[label names]}`` and ``features(images)`` (the inputs of the classifier layers, concatenated
over heads), plus ``world``: a :class:`~genunlearn.data.world.World` whose heads are the judge's
prompt labels and whose template writes the protocol's prompts, so that a checkpoint with no
world of its own can be scored.

Formats (per head): ``transformers`` (an image-classification directory, loaded with
``AutoModelForImageClassification``; safetensors, or ``.bin`` read with ``weights_only=True``)
and ``timm`` (a state-dict file, ``.safetensors`` or a ``torch.save`` pickle read with
``weights_only=True``, bare or under ``model_state_dict`` / ``state_dict`` / ``model``; needs
``pip install timm``). Everything loads from local files only.

Preprocessing is torch ops on images in [0, 1]: resize (antialiased) to the model's input,
optional centre crop, normalise. transformers heads read their ``preprocessor_config.json``
(PIL's lanczos / box / hamming filters are approximated by bicubic / bilinear); timm heads
follow UnlearnCanvas' own transform (bilinear resize, no crop; mean / std from the model's
config), not timm's bicubic 0.9-crop default. Spec keys override either.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import NoReturn

import torch
from torch.nn import functional as F

from genunlearn.data.world import World
from genunlearn.registry import unknown_name_message
from genunlearn.types import GenUnlearnError

SPEC = "judge.json"
FORMATS = ("transformers", "timm")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: UnlearnCanvas' sampling prompt (its scripts write underscores in label names as spaces)
UNLEARNCANVAS_TEMPLATE = "A {object} image in {style} style."
TOP_KEYS = ("name", "template", "heads")
HEAD_KEYS = ("format", "labels", "prompt_labels", "prompt_names", "image_size", "mean", "std")
HEAD_KEYS += ("interpolation",)
FORMAT_KEYS = {
    "transformers": ("path",),
    "timm": ("arch", "checkpoint", "model_args", "key", "classifier"),
}
# PIL resample codes in preprocessor configs -> the nearest torch interpolation
PIL_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear"}
PIL_RESAMPLE[5] = "bilinear"


class Preprocess:
    """Images [N, 3, H, W] in [0, 1] -> the classifier's input (resize, crop, normalise).

    Args:
        size: (height, width) to resize to; with ``shortest_edge`` the shorter side only.
        mean, std: per-channel normalisation (None: none).
        interpolation: one of :data:`INTERPOLATIONS`.
        crop: (height, width) of a centre crop after resizing, or None.
        shortest_edge: resize the shorter side to ``size[0]``, keeping the aspect ratio.
    """

    def __init__(
        self, size, mean=None, std=None, interpolation="bilinear", crop=None, shortest_edge=False
    ):
        self.size, self.crop, self.shortest_edge = tuple(size), crop, shortest_edge
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device="cpu")
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device="cpu")
        self.interpolation = interpolation

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        h, w = x.shape[-2:]
        size = self.size
        if self.shortest_edge:
            s = self.size[0]
            size = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
        if (h, w) != tuple(size):
            smooth = self.interpolation != "nearest"
            kw = {"align_corners": False, "antialias": True} if smooth else {}
            x = F.interpolate(x, size=size, mode=self.interpolation, **kw)
            x = x.clamp(0.0, 1.0)  # bicubic overshoots; a PIL pipeline clips to uint8
        if self.crop is not None:
            ch, cw = self.crop
            top, left = (x.shape[-2] - ch) // 2, (x.shape[-1] - cw) // 2
            x = x[..., max(0, top) : max(0, top) + ch, max(0, left) : max(0, left) + cw]
        if self.mean is not None:
            mean, std = self.mean.to(x.device), self.std.to(x.device)
            x = (x - mean[:, None, None]) / std[:, None, None]
        return x


class HeadClassifier:
    """One head of a judge: a classifier module, its labels and its preprocessing."""

    def __init__(self, name, module, labels, prep, classifier, kind):
        self.name, self.module, self.labels, self.prep = name, module, list(labels), prep
        self.classifier, self.kind = classifier, kind  # classifier: the layer features feed

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        dev = next(self.module.parameters()).device
        x = self.prep(images.to(dev))
        out = self.module(pixel_values=x) if self.kind == "transformers" else self.module(x)
        return (out.logits if hasattr(out, "logits") else out).float()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise GenUnlearnError(
                f"judge head {self.name!r} ({type(self.module).__name__}) has no classifier "
                "layer to read features from; evaluate with fid=false"
            )
        seen = []
        hook = self.classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        try:
            self.logits(images)
        finally:
            hook.remove()
        return seen[-1].float().flatten(1)


class Judge:
    """Per-head local classifiers with the toy Evaluator's ``predict`` / ``features`` interface.

    Attributes:
        heads_labels: head -> every label of its classifier, in output order.
        world: the protocol's world: heads -> prompt labels, the spec's caption template.
        prompt_names: head -> label -> how the label is written in prompts.
    """

    def __init__(self, name, heads, template, prompt_labels, prompt_names):
        self.name, self.heads, self.template = name, heads, template
        self.heads_labels = {h: list(c.labels) for h, c in heads.items()}
        self.prompt_names = prompt_names
        self.world = World(name, {h: tuple(v) for h, v in prompt_labels.items()}, template)

    @property
    def device(self) -> torch.device:
        return next(next(iter(self.heads.values())).module.parameters()).device

    def to(self, device) -> Judge:
        for c in self.heads.values():
            c.module.to(device)
        return self

    def caption(self, labels: dict[str, str]) -> str:
        """The prompt of a label set ("A Bears image in Van Gogh style.")."""
        return self.template.format(**{h: self.prompt_names[h][v] for h, v in labels.items()})

    def resolve(self, target: str) -> str:
        """The prompt label a task target names: a label, ``head:label``, or the label written
        as in prompts, case and ``_`` / space insensitive ("van gogh" -> "Van_Gogh")."""
        heads = self.world.heads
        head, sep, rest = target.partition(":")
        if sep and head in heads:
            if rest in heads[head]:
                return rest
            raise GenUnlearnError(unknown_name_message(f"{head} label", rest, list(heads[head])))
        if self.world.kind_of(target) is not None:
            return target

        def norm(s: str) -> str:
            return " ".join(s.replace("_", " ").split()).casefold()

        found = {
            v
            for h, vs in heads.items()
            for v in vs
            if norm(target) in (norm(v), norm(self.prompt_names[h][v]))
        }
        if len(found) == 1:
            return found.pop()
        valid = [v for vs in heads.values() for v in vs]
        if found:
            raise GenUnlearnError(
                f"target {target!r} matches several judge labels ({', '.join(sorted(found))}); "
                "name one exactly or as head:label"
            )
        raise GenUnlearnError(unknown_name_message(f"{self.name} judge label", target, valid))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw logits per head for images [N, 3, H, W] in [0, 1]."""
        return {h: c.logits(images) for h, c in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 64) -> dict[str, list[str]]:
        """Label names per head for images [N, 3, H, W] in [0, 1] (argmax of each classifier).

        Raises:
            GenUnlearnError: the images hold NaN or infinity (never labelled, as in Evaluator).
        """
        if not torch.isfinite(images).all():
            raise GenUnlearnError(
                "the judge was given NaN or infinite images; they come from a broken model "
                "and cannot be labelled"
            )
        out: dict[str, list[str]] = {h: [] for h in self.heads}
        for i in range(0, len(images), batch_size):
            for h, z in self.logits(images[i : i + batch_size]).items():
                out[h] += [self.heads_labels[h][j] for j in z.argmax(1).tolist()]
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Classifier-layer inputs [N, D], concatenated over heads (feature FID / KID)."""
        parts = [
            torch.cat(
                [c.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
            )
            for c in self.heads.values()
        ]
        return torch.cat(parts, 1)


# ------------------------------------------------------------------------------ spec reading
def _fail(where: str, what: str) -> NoReturn:
    raise GenUnlearnError(f"{where}: {what}")


def _spec_path(path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / SPEC).is_file():
            _fail(f"judge {p}", f"the folder has no {SPEC}; give a judge spec file or its folder")
        p = p / SPEC
    elif not p.is_file():
        _fail(f"judge {p}", f"no such file; give a judge spec JSON ({SPEC}) or its folder")
    return p.resolve()


def _read_json(p: Path, where: str):
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        msg = getattr(e, "msg", str(e).splitlines()[0])
        at = f" at line {e.lineno}, column {e.colno}" if hasattr(e, "lineno") else ""
        _fail(where, f"{p.name} is not valid JSON ({msg}{at})")


def _local(root: Path, value, where: str, what: str, kind: str = "file") -> Path:
    """A path the spec names: absolute as written, or relative to the spec's folder and
    staying inside it (no ``..`` out of it; links the user placed inside are followed)."""
    if not isinstance(value, str) or not value.strip():
        _fail(where, f"{what} must be a path (text), got {value!r}")
    p = Path(value).expanduser()
    if not p.is_absolute():
        inside = Path(os.path.normpath(root / p))
        if inside != root and root not in inside.parents:
            _fail(
                where,
                f"{what} {value!r} leads out of the spec's folder {root}; give a path "
                "inside it or an absolute path",
            )
        p = inside
    if not (p.is_dir() if kind == "folder" else p.is_file()):
        _fail(where, f"{what} {p} does not exist or is not a {kind}")
    return p


def _labels(root, value, where) -> list[str]:
    if isinstance(value, str):
        f = _local(root, value, where, "labels file")
        if f.suffix == ".txt":
            value = [s.strip() for s in f.read_text().splitlines() if s.strip()]
        else:
            value = _read_json(f, where)
            if isinstance(value, dict):  # {"0": "name", ...}, as transformers' id2label
                if sorted(value) != sorted(str(i) for i in range(len(value))):
                    _fail(where, f"labels file {f.name}: keys must be the class indices 0..n-1")
                value = [value[str(i)] for i in range(len(value))]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        _fail(
            where,
            "labels must be a non-empty list of names, a .json list / {index: name} "
            "file, or a .txt file with one name a line",
        )
    dup = sorted({v for v in value if value.count(v) > 1})
    if dup:
        _fail(where, f"labels repeat {', '.join(dup)}; each output needs its own name")
    return value


def _size(value, where):
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    ok = isinstance(value, list) and len(value) == 2
    if ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return tuple(value)
    _fail(where, f"image_size must be a positive integer or [height, width], got {value!r}")


def _triple(value, where, key):
    ok = isinstance(value, list) and len(value) == 3
    if ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        if key != "std" or all(v > 0 for v in value):
            return tuple(float(v) for v in value)
    _fail(where, f"{key} must be a list of 3 numbers (per RGB channel; std > 0), got {value!r}")


def _preprocess(head: dict, where: str, default: dict) -> Preprocess:
    """The head's preprocessing: spec keys over the model's own ``default`` settings."""
    cfg = dict(default)
    if "image_size" in head:
        cfg.update(size=_size(head["image_size"], where), crop=None, shortest_edge=False)
    for key in ("mean", "std"):
        if key in head:
            cfg[key] = _triple(head[key], where, key)
    if "interpolation" in head:
        cfg["interpolation"] = head["interpolation"]
    if cfg["interpolation"] not in INTERPOLATIONS:
        _fail(
            where,
            f"interpolation {cfg['interpolation']!r} is not one of {', '.join(INTERPOLATIONS)}",
        )
    if cfg["size"] is None:
        _fail(where, "the model's config gives no image size; set image_size in the spec")
    if (cfg["mean"] is None) != (cfg["std"] is None):
        _fail(where, "give both mean and std, or neither")
    return Preprocess(**cfg)


def _hf_preprocess(d: Path, config, where: str) -> dict:
    """Preprocessing defaults of a transformers directory (its preprocessor config if any)."""
    side = getattr(config, "image_size", None)
    out = {"size": _size(side, where) if side else None, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    out.update(interpolation="bilinear", crop=None, shortest_edge=False)
    pc_file = d / "preprocessor_config.json"
    if pc_file.is_file():
        pc = _read_json(pc_file, where)
        out["interpolation"] = PIL_RESAMPLE.get(pc.get("resample", 2), "bilinear")
        size = pc.get("size") if pc.get("do_resize", True) else None
        if isinstance(size, int):
            out["size"] = (size, size)
        elif isinstance(size, dict) and "height" in size and "width" in size:
            out["size"] = (size["height"], size["width"])
        elif isinstance(size, dict) and "shortest_edge" in size:
            s, pct = size["shortest_edge"], pc.get("crop_pct")
            if pct and s < 384:  # ConvNext's rule: resize to s / crop_pct, then crop s
                out.update(size=(int(s / pct),) * 2, shortest_edge=True, crop=(s, s))
            else:
                out.update(size=(s, s), shortest_edge=True)
        crop = pc.get("crop_size") if pc.get("do_center_crop") else None
        if isinstance(crop, dict) and "height" in crop:
            out["crop"] = (crop["height"], crop["width"])
        elif isinstance(crop, int):
            out["crop"] = (crop, crop)
        if not pc.get("do_normalize", True):
            out["mean"] = out["std"] = None
        elif pc.get("image_mean") is not None:
            out["mean"] = _triple(list(pc["image_mean"]), where, "mean")
            out["std"] = _triple(list(pc["image_std"]), where, "std")
    return out


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_count(n_out: int, labels, where: str):
    if labels is not None and len(labels) != n_out:
        _fail(
            where,
            f"the classifier has {n_out} outputs but {len(labels)} labels are given; "
            "give one label per output, in output order",
        )


def _load_transformers(name, head, root, where) -> HeadClassifier:
    from transformers import AutoConfig, AutoModelForImageClassification

    d = _local(root, head.get("path"), where, "path", kind="folder")
    if not (d / "config.json").is_file():
        _fail(
            where,
            f"{d} has no config.json; give a transformers image-classification folder "
            "(save_pretrained)",
        )
    try:
        config = AutoConfig.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        _fail(where, f"could not read {d / 'config.json'}: {_first_line(e)}")
    given = head.get("labels")
    labels = _labels(root, given, where) if given is not None else None
    _check_count(config.num_labels, labels, where)
    if labels is None:
        labels = [config.id2label[i] for i in range(config.num_labels)]
    safe = any(d.glob("*.safetensors"))
    if not safe and not any(d.glob("pytorch_model*.bin")):
        _fail(where, f"{d} holds no model.safetensors or pytorch_model.bin weights")
    try:
        module = AutoModelForImageClassification.from_pretrained(
            d, local_files_only=True, use_safetensors=safe, weights_only=True
        )
    except Exception as e:  # noqa: BLE001 - any failure of a user's folder is one clear line
        hint = "" if safe else " (.bin files are read with weights_only=True: no pickled code)"
        _fail(where, f"could not load {d} as an image classifier: {_first_line(e)}{hint}")
    prep = _preprocess(head, where, _hf_preprocess(d, config, where))
    clf = getattr(module, "classifier", None)
    return HeadClassifier(name, module, labels, prep, clf, "transformers")


def _state_dict(f: Path, key, where) -> dict[str, torch.Tensor]:
    if f.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(f))
        except Exception as e:  # noqa: BLE001
            _fail(where, f"could not read {f.name} as safetensors: {_first_line(e)}")
    try:
        obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        _fail(
            where,
            f"{f.name} could not be read with weights_only=True (only tensors and plain "
            f"containers; a pickle that could run code is refused): {_first_line(e)}",
        )
    if not isinstance(obj, dict):
        _fail(where, f"{f.name} holds a {type(obj).__name__}, not a state dict")
    if key is None and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in ("model_state_dict", "state_dict", "model") if k in obj), None)
        if key is None:
            _fail(
                where,
                f"{f.name} is no state dict and has none of model_state_dict / "
                f"state_dict / model (keys: {', '.join(map(str, list(obj)[:8]))}); set key",
            )
    sd = obj if key is None else obj.get(key)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        _fail(where, f"{f.name}: {key!r} is not a dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _load_timm(name, head, root, where) -> HeadClassifier:
    arch = head.get("arch")
    if not isinstance(arch, str) or not arch:
        _fail(where, "a timm head needs arch, the timm model name (vit_large_patch16_224)")
    f = _local(root, head.get("checkpoint"), where, "checkpoint")
    key = head.get("key")
    sd = _state_dict(f, key, where)
    model_args = head.get("model_args", {})
    if not isinstance(model_args, dict):
        _fail(
            where,
            f"model_args must be a mapping of timm.create_model arguments, got {model_args!r}",
        )
    clf_key = head.get("classifier")
    mats = [k for k, v in sd.items() if k.endswith(".weight") and v.ndim == 2]
    clf_key = f"{clf_key}.weight" if clf_key else (mats[-1] if mats else None)
    if clf_key not in sd:
        _fail(
            where,
            f"{f.name} has no classifier weight {clf_key!r}; set classifier to the "
            "classifier layer's name (e.g. head)",
        )
    if "labels" not in head:
        _fail(where, "a timm head needs labels (a checkpoint file carries no label names)")
    labels = _labels(root, head["labels"], where)
    _check_count(sd[clf_key].shape[0], labels, where)
    try:
        import timm
    except ImportError:
        _fail(
            where,
            "timm checkpoints need the timm package (not installed): pip install timm (or genunlearn[judges])",
        )
    try:
        module = timm.create_model(arch, pretrained=False, num_classes=len(labels), **model_args)
    except Exception as e:  # noqa: BLE001 - unknown arch names, bad model_args
        _fail(where, f"timm could not build {arch!r}: {_first_line(e)}")
    missing, unexpected = module.state_dict().keys() - sd.keys(), sd.keys() - module.state_dict()
    if missing or unexpected:
        few = ", ".join(sorted(missing)[:3] + sorted(unexpected)[:3])
        _fail(
            where,
            f"{f.name} does not fit timm {arch!r} ({len(missing)} keys missing, "
            f"{len(unexpected)} unexpected: {few}); check arch and model_args",
        )
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        _fail(where, f"{f.name} does not fit timm {arch!r}: {_first_line(e)}")
    cfg = getattr(module, "pretrained_cfg", None) or {}
    size = getattr(getattr(module, "patch_embed", None), "img_size", None)
    size = tuple(size) if size else tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    default = {"size": size, "mean": tuple(cfg.get("mean", (0.5,) * 3))}
    default.update(std=tuple(cfg.get("std", (0.5,) * 3)), interpolation="bilinear", crop=None)
    default["shortest_edge"] = False
    prep = _preprocess(head, where, default)
    return HeadClassifier(name, module, labels, prep, module.get_classifier(), "timm")


def _template(spec, heads, where) -> str:
    template = spec.get("template")
    if template is None:
        if set(heads) != {"style", "object"}:
            _fail(
                where,
                f"template is needed for heads {', '.join(heads)}: a caption with one "
                '{head} field per head, e.g. "a {object} in {style} style"',
            )
        return UNLEARNCANVAS_TEMPLATE
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except (ValueError, TypeError):
        fields = None
    if fields is None or sorted(fields) != sorted(heads):
        _fail(
            where,
            f"template {template!r} must name each head once as a field: "
            f"{', '.join('{' + h + '}' for h in heads)}",
        )
    return template


def _prompt_sets(name, head, labels, where):
    chosen = head.get("prompt_labels", labels)
    if not isinstance(chosen, list) or not chosen or any(c not in labels for c in chosen):
        bad = [c for c in chosen if c not in labels] if isinstance(chosen, list) else chosen
        _fail(
            where,
            f"prompt_labels must be a non-empty list of the head's labels; not labels: {bad!r}",
        )
    names = head.get("prompt_names", {})
    if not isinstance(names, dict) or any(
        k not in labels or not isinstance(v, str) for k, v in names.items()
    ):
        _fail(where, "prompt_names must map labels of the head to their text in prompts")
    return chosen, {v: names.get(v, v.replace("_", " ")) for v in labels}


def load_judge(path: str | os.PathLike, device=None) -> Judge:
    """Load the judge a spec describes (``judge.json``, or the folder holding it).

    Args:
        path: the spec file or its folder; paths inside the spec are relative to its folder.
        device: where the classifiers run (None: the CPU).

    Raises:
        GenUnlearnError: a missing or malformed spec, file or label list, labels that do not
            match the classifier's outputs, a pickle that would run code, timm not installed.
    """
    p = _spec_path(path)
    where = f"judge spec {p}"
    spec = _read_json(p, where)
    if not isinstance(spec, dict) or not isinstance(spec.get("heads"), dict) or not spec["heads"]:
        _fail(where, 'expected an object with "heads": {head name: {"format": ...}, ...}')
    extra = sorted(set(spec) - set(TOP_KEYS))
    if extra:
        _fail(where, f"unknown keys {', '.join(extra)}; valid: {', '.join(TOP_KEYS)}")
    name = spec.get("name", "judge")
    if not isinstance(name, str) or not name:
        _fail(where, f"name must be text, got {name!r}")
    template = _template(spec, list(spec["heads"]), where)
    heads, prompt_labels, prompt_names = {}, {}, {}
    for h, head in spec["heads"].items():
        at = f"{where}: head {h!r}"
        if not isinstance(head, dict) or head.get("format") not in FORMATS:
            got = head.get("format") if isinstance(head, dict) else head
            _fail(at, f"format must be one of {', '.join(FORMATS)}, got {got!r}")
        valid = HEAD_KEYS + FORMAT_KEYS[head["format"]]
        extra = sorted(set(head) - set(valid))
        if extra:
            _fail(
                at,
                f"unknown keys {', '.join(extra)}; valid for {head['format']}: {', '.join(valid)}",
            )
        load = _load_transformers if head["format"] == "transformers" else _load_timm
        clf = load(h, head, p.parent, at)
        clf.module.eval().requires_grad_(False).to(device or "cpu")
        heads[h] = clf
        prompt_labels[h], prompt_names[h] = _prompt_sets(h, head, clf.labels, at)
    every = [v for vs in prompt_labels.values() for v in vs]
    shared = sorted({v for v in every if every.count(v) > 1})
    if shared:
        _fail(
            where,
            f"labels {', '.join(shared)} are in several heads' prompts; the protocol "
            "tells concepts apart by label, so leave them out of prompt_labels of all but one",
        )
    return Judge(name, heads, template, prompt_labels, prompt_names)
