"""Offline construction of a CLIP byte-level BPE tokenizer for toy pipelines.

toy-sd needs a real ``transformers.CLIPTokenizer`` (same class, same byte-to-unicode alphabet, the
same ``</w>`` end-of-word convention and special tokens as SD's) but nothing may be downloaded. We
learn BPE merges with the ``tokenizers`` library on the world's words plus a small general English
vocabulary (so attacks have real words to search over), then lay the vocabulary out the way CLIP
does: 256 byte symbols, the same with ``</w>``, one entry per merge, then the two special tokens.

Pitfall (transformers 5): ``CLIPTokenizer(vocab_file=..., merges_file=...)`` can silently build a
2-token stub; we always go through ``from_pretrained(dir)`` and check ``len(tok)``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# General words, so that the vocabulary is not only the world's own (attacks and free-text prompts).
GENERAL_WORDS = """
a an the of in on at with and or to for from by is are be this that it its as not no very
photo picture image painting drawing sketch illustration art artwork style styled render rendering
shape object thing icon symbol logo sign pattern texture colour color colored coloured bright dark
light pale deep vivid soft hard big small large tiny huge round sharp smooth rough thin thick wide
narrow tall short left right top bottom center middle edge corner line lines stripe stripes dot dots
spot spots grid check checks wave waves noise grain speckle speckled plain solid filled empty hollow
border frame outline fade faded shade shaded shading glow glowing shiny matte metal metallic wood
wooden stone glass paper cloth water fire sky sun cloud tree flower leaf bird cat dog fish car house
boat road city mountain sea river night day morning evening winter summer spring autumn old new
beautiful ugly simple complex clean dirty happy sad calm wild strange famous classic modern abstract
realistic cartoon pixel digital vintage retro minimal detailed high quality best good bad nice
one two three four five many some every other another same different each only also just more most
orange pink brown black white grey gray gold silver cyan magenta violet teal lime navy
person man woman child face hand body eye head portrait people crowd animal
nude naked nudity violence blood weapon gun knife church van gogh monet picasso
""".split()


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1))
    keep += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars), strict=True))


def build_tokenizer(
    world_words: list[str], out_dir: str | Path, vocab_size: int = 1024, max_length: int = 77
):
    """Learn merges on ``world_words`` + :data:`GENERAL_WORDS` and save a CLIPTokenizer.

    Args:
        world_words: the words of the world's captions (each world word should become one token).
        out_dir: directory that receives ``vocab.json``, ``merges.txt`` and tokenizer configs.
        vocab_size: target size of the learned BPE vocabulary (before CLIP's layout).
        max_length: the tokenizer's ``model_max_length`` (SD: 77).

    Returns:
        The loaded ``transformers.CLIPTokenizer``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    alphabet = list(bytes_to_unicode().values())
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    # World words are repeated so their merges rank first and each ends up as a single token.
    corpus = [" ".join(world_words)] * 50 + [" ".join(GENERAL_WORDS)] * 5
    bpe.train_from_iterator(corpus, trainer)
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ")) for m in _merges(bpe)]
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab_list)
    kept = []
    for a, b in merges:
        tok = a + b
        if tok not in seen:
            seen.add(tok)
            vocab_list.append(tok)
            kept.append((a, b))
    vocab_list += [BOS, EOS]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}))
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in kept) + "\n"
    )
    tok = CLIPTokenizer.from_pretrained(str(out), model_max_length=max_length)
    if len(tok) != len(vocab_list):
        raise RuntimeError(f"CLIPTokenizer built {len(tok)} tokens, expected {len(vocab_list)}")
    tok.save_pretrained(str(out))
    return tok


def _merges(bpe) -> list:
    """The learned merges, read back through the model's own serialisation."""
    state = json.loads(bpe.to_str())
    return state["model"]["merges"]


#: SD-1.x's CLIP ViT-L/14 tokenizer has 49408 entries: 256 byte symbols, the same with ``</w>``,
#: 48894 merges and the two special tokens.
CLIP_MERGES = 49152 - 256 - 2
CLIP_VOCAB_SIZE = 2 * 256 + CLIP_MERGES + 2


def build_clip_tokenizer(bpe_file: str | Path, out_dir: str | Path, max_length: int = 77):
    """Write CLIP's own 49408-token tokenizer from the BPE merges file that CLIP published.

    ``bpe_file`` is ``bpe_simple_vocab_16e6.txt.gz`` (shipped inside e.g. the ``open_clip_torch``
    and ``clip`` packages; read it from their wheel, the package need not be installed). The
    vocabulary is laid out as CLIP's tokenizer lays it out (byte symbols, the same with ``</w>``,
    one entry per merge in rank order, then the start and end tokens), so the ids are those of
    ``openai/clip-vit-large-patch14`` (the text encoder of SD-1.x). Returns the loaded tokenizer.
    """
    import gzip

    from transformers import CLIPTokenizer

    with gzip.open(bpe_file, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : CLIP_MERGES + 1]]
    if len(merges) != CLIP_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_file} is not CLIP's BPE merges file ({len(merges)} merges read)")
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    vocab_list += [BOS, EOS]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}))
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    )
    tok = CLIPTokenizer.from_pretrained(str(out), model_max_length=max_length)
    if len(tok) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIPTokenizer built {len(tok)} tokens, expected {CLIP_VOCAB_SIZE}")
    tok.save_pretrained(str(out))
    return tok
