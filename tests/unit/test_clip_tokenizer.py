"""CLIP's real tokenizer ships offline and gives CLIP's published token ids."""

import gzip
import json

import pytest

from genunlearn.models import assets_dir
from genunlearn.models.clip import clip_tokenizer
from genunlearn.testbed.tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer


def test_ids_are_clips():
    tok = clip_tokenizer()
    assert len(tok) == CLIP_VOCAB_SIZE == 49408
    # ids as printed by openai/clip-vit-large-patch14's tokenizer (HF CLIP docs examples)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("hello world").input_ids == [49406, 3306, 1002, 49407]
    assert tok.pad_token_id == 49407 and clip_tokenizer("!").pad_token_id == 0
    assert tok.model_max_length == 77


def test_builder_reproduces_the_committed_files(tmp_path):
    committed = assets_dir() / "clip-tokenizer"
    merges = (committed / "merges.txt").read_text().splitlines()[1:]
    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as fh:  # the published file's layout
        fh.write("\n".join(['"bpe_simple_vocab_16e6.txt#version: 0.2', *merges, "x y", ""]))
    build_clip_tokenizer(bpe, tmp_path / "out")
    got = json.loads((tmp_path / "out" / "vocab.json").read_text())
    assert got == json.loads((committed / "vocab.json").read_text())
    with gzip.open(tmp_path / "short.gz", "wt") as fh:
        fh.write("header\na b\n")
    with pytest.raises(ValueError, match="not CLIP's BPE"):
        build_clip_tokenizer(tmp_path / "short.gz", tmp_path / "bad")
