"""Offline CLIP tokenizer: CLIP's vocabulary layout, one token per world word, byte fallback."""

from __future__ import annotations

import pytest

from genunlearn.data import toycanvas as tc
from genunlearn.testbed.tokenizer import BOS, EOS, build_tokenizer, bytes_to_unicode

WORLD_WORDS = sorted({w for t in tc.all_triples() for w in tc.caption(*t).split()})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return build_tokenizer(WORLD_WORDS, out, max_length=40), out


def test_is_a_real_clip_tokenizer_of_useful_size(built):
    from transformers import CLIPTokenizer

    tok, _ = built
    assert isinstance(tok, CLIPTokenizer)
    # Not the 2-token stub of the transformers-5 pitfall: bytes, bytes+</w>, merges, specials.
    assert len(tok) > 512 + 2


def test_every_world_word_is_one_token(built):
    tok, _ = built
    for w in WORLD_WORDS:
        assert tok.tokenize(w) == [w + "</w>"], w
        assert tok.tokenize(w.upper()) == [w + "</w>"], w  # CLIP lower-cases


def test_special_tokens_are_the_last_two_ids(built):
    tok, _ = built
    n = len(tok)
    assert tok.convert_tokens_to_ids(BOS) == tok.bos_token_id == n - 2
    assert tok.convert_tokens_to_ids(EOS) == tok.eos_token_id == n - 1
    ids = tok("a red star in striped style").input_ids
    assert ids[0] == n - 2 and ids[-1] == n - 1 and len(ids) == 2 + 6


def test_model_max_length_and_padding(built):
    tok, _ = built
    assert tok.model_max_length == 40
    ids = tok("a red star", padding="max_length", truncation=True).input_ids
    assert len(ids) == 40
    long = tok(" ".join(["star"] * 100), truncation=True).input_ids
    assert len(long) == 40 and long[-1] == tok.eos_token_id


def test_first_512_ids_are_clip_byte_symbols(built):
    tok, _ = built
    alphabet = list(bytes_to_unicode().values())
    assert len(set(alphabet)) == 256
    assert tok.convert_tokens_to_ids(alphabet) == list(range(256))
    assert tok.convert_tokens_to_ids([c + "</w>" for c in alphabet]) == list(range(256, 512))


@pytest.mark.parametrize("text", ["qzxv blorp", "héllo wörld 😀", "zebra!?"])
def test_unknown_text_falls_back_to_bytes(built, text):
    tok, _ = built
    ids = tok(text).input_ids
    inner = ids[1:-1]
    assert inner and tok.unk_token_id not in inner and tok.eos_token_id not in inner
    # CLIP pre-tokenisation splits punctuation into words, so compare without whitespace.
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded.replace(" ", "") == text.lower().replace(" ", "")


def test_saved_directory_reloads_identically(built):
    from transformers import CLIPTokenizer

    tok, out = built
    again = CLIPTokenizer.from_pretrained(str(out))
    assert len(again) == len(tok) and again.model_max_length == 40
    text = "a purple moon in wavy style, photo of a dog"
    assert again(text).input_ids == tok(text).input_ids
