"""CLIP models behind one small wrapper: the built-in toy-clip, or a user's local CLIP directory.

**toy-clip** is a ``transformers.CLIPModel`` at tiny size (ViT image tower on 32x32 ToyCanvas
images; a small text transformer on toy-sd's CLIP tokenizer), committed under
``assets/toy-clip`` (fp16, with the ``recipe.json`` that made it; the recipe is
:mod:`genunlearn.testbed.toy_clip`). It is saved exactly like a real CLIP checkpoint
(``config.json``, ``model.safetensors``, tokenizer files, ``preprocessor_config.json``), so
:func:`load_clip` reads toy-clip and, say, a local copy of ``openai/clip-vit-base-patch32`` with
the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F

from genunlearn.types import GenUnlearnError

NAME = "toy-clip"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FILES = ("config.json", "preprocessor_config.json")


def _size(value, key: str) -> int:
    """``224`` or ``{"shortest_edge": 224}`` / ``{"height": 224, "width": 224}`` -> 224."""
    if isinstance(value, dict):
        return int(value.get(key) or value.get("height") or value.get("shortest_edge"))
    return int(value)


class Clip:
    """A CLIP image/text model with tensor preprocessing read from its processor config.

    Args:
        model: a ``transformers.CLIPModel`` (eval mode).
        tokenizer: its ``CLIPTokenizer``.
        preprocess: the ``preprocessor_config.json`` mapping (resize, crop, mean, std).
        name: where it came from ("toy-clip" or the directory).
    """

    def __init__(self, model, tokenizer, preprocess: dict, name: str):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.resize = _size(preprocess.get("size", 224), "shortest_edge")
        self.crop = _size(preprocess.get("crop_size", self.resize), "height")
        mean, std = (
            preprocess.get("image_mean", OPENAI_MEAN),
            preprocess.get("image_std", OPENAI_STD),
        )
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        """Where the CLIP weights are: images and tokens are moved there."""
        return next(self.model.parameters()).device

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] -> CLIP input: shortest side resized, centre crop, norm."""
        x = images.to(self.device).float()
        h, w = x.shape[-2:]
        if min(h, w) != self.resize:
            s = self.resize / min(h, w)
            size = (max(self.resize, round(h * s)), max(self.resize, round(w * s)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1)
        h, w = x.shape[-2:]
        top, left = (h - self.crop) // 2, (w - self.crop) // 2
        x = x[..., top : top + self.crop, left : left + self.crop]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @staticmethod
    def pooled(out) -> torch.Tensor:
        """The projected embeddings of ``get_image_features`` / ``get_text_features``."""
        # transformers 4 returns the projected embeddings, transformers 5 an output object
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        out = tok(list(texts), padding=True, truncation=True, max_length=tok.model_max_length,
                  return_tensors="pt")  # fmt: skip
        return {k: v.to(self.device) for k, v in out.items()}

    def encode_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Unit-norm image embeddings [N, D] of images in [0, 1]."""
        outs = [
            self.pooled(self.model.get_image_features(pixel_values=self.pixels(images[i : i + batch_size])))
            for i in range(0, len(images), batch_size)
        ]  # fmt: skip
        return F.normalize(torch.cat(outs), dim=-1)

    def encode_texts(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """Unit-norm text embeddings [N, D]."""
        outs = [
            self.pooled(self.model.get_text_features(**self.tokens(texts[i : i + batch_size])))
            for i in range(0, len(texts), batch_size)
        ]
        return F.normalize(torch.cat(outs), dim=-1)

    @torch.no_grad()
    def cosine(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Cosine similarity of each image with its own text: [N] (``len(texts) == N``)."""
        if len(texts) != len(images):
            raise GenUnlearnError(f"{len(images)} images but {len(texts)} texts; pass one each")
        uniq = list(dict.fromkeys(texts))
        t = self.encode_texts(uniq)[[uniq.index(s) for s in texts]]
        return (self.encode_images(images) * t).sum(-1)


def toy_clip_dir() -> Path:
    """Directory of the committed toy-clip weights."""
    from genunlearn.models import assets_dir

    return assets_dir() / NAME


def load_clip(name_or_path: str | Path = NAME) -> Clip:
    """Load ``"toy-clip"`` or a local CLIP directory (``CLIPModel.save_pretrained`` layout).

    Raises:
        GenUnlearnError: the directory or one of its files is missing (the message names the path
            and what it must hold); nothing is downloaded.
    """
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()  # no "Loading weights" bar for every filter / metric load
    builtin = str(name_or_path) == NAME
    d = toy_clip_dir() if builtin else Path(name_or_path).expanduser()
    hint = (
        "reinstall genunlearn or retrain it with 'python experiments/toy_clip.py --train'"
        if builtin
        else "give the path of a local CLIP directory saved with CLIPModel.save_pretrained, e.g. "
        "a download of openai/clip-vit-base-patch32"
    )
    if not d.is_dir():
        raise GenUnlearnError(f"CLIP weights: no directory {d}; {hint}")
    missing = [f for f in FILES if not (d / f).is_file()]
    if not any((d / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")):
        missing.append("model.safetensors")
    if missing:
        raise GenUnlearnError(f"CLIP weights in {d} are incomplete: missing {missing}; {hint}")
    try:
        model = CLIPModel.from_pretrained(d, dtype=torch.float32, local_files_only=True)
        tok = CLIPTokenizer.from_pretrained(d, local_files_only=True)
    except (OSError, ValueError) as e:
        raise GenUnlearnError(f"could not load CLIP from {d}: {e}; {hint}") from None
    if len(tok) < 10:  # transformers 5 can silently build a 2-token stub tokenizer
        raise GenUnlearnError(f"the tokenizer in {d} has only {len(tok)} tokens; {hint}")
    preprocess = json.loads((d / "preprocessor_config.json").read_text())
    return Clip(model, tok, preprocess, NAME if builtin else str(d))


#: directory (under the package assets) of CLIP's real 49408-token BPE tokenizer
CLIP_TOKENIZER = "clip-tokenizer"


def clip_tokenizer(pad_token: str | None = None):
    """CLIP's own tokenizer (``openai/clip-vit-large-patch14``'s ids: SD-1.x's), offline.

    Built by :func:`genunlearn.testbed.tokenizer.build_clip_tokenizer` from the BPE file CLIP
    published and committed under ``assets/clip-tokenizer``. ``pad_token``: SD-1.x pads with
    ``<|endoftext|>`` (the default); SD-2.x's OpenCLIP tokenizer pads with ``"!"`` (id 0).
    """
    from transformers import CLIPTokenizer

    from genunlearn.models import assets_dir

    d = assets_dir() / CLIP_TOKENIZER
    if not (d / "vocab.json").is_file() or not (d / "merges.txt").is_file():
        raise GenUnlearnError(f"CLIP's tokenizer files are missing from {d}; reinstall genunlearn")
    extra = {"pad_token": pad_token} if pad_token else {}
    tok = CLIPTokenizer.from_pretrained(d, local_files_only=True, **extra)
    if len(tok) != 49408:
        raise GenUnlearnError(f"the tokenizer in {d} has {len(tok)} tokens, not CLIP's 49408")
    return tok
