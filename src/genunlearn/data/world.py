"""A model's *world*: its labelled concepts, caption template and evaluation prompt sets.

ToyCanvas is the built-in world (heads object / style / colour). A pipeline trained on a user's
image folder carries a one-head world (``class``). The world drives ``list_concepts``, task
resolution (is "star" a concept? of which kind?) and the UnlearnCanvas-style prompt splits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path

from genunlearn.registry import unknown_name_message
from genunlearn.types import Concept, GenUnlearnError

# the generic concept of a kind, where ToyCanvas has one: the untextured style
TOYCANVAS_NEUTRAL = {"style": "flat"}
# the acceptable text an output filter compares a concept of each kind with (Espresso's pairs:
# a concept -> its category, a style -> "standard style")
TOYCANVAS_ACCEPTABLE = {
    "object": "a shape",
    "colour": "a shape",
    "style": "a shape in standard style",
}
# the partial-caption forms toy-sd was trained on (models/toy.py) that name one attribute
TOYCANVAS_PHRASES = {
    "object": "a {object}",
    "style": "a shape in {style} style",
    "colour": "a {colour} shape",
}


@dataclass(frozen=True)
class World:
    """Labelled concepts and the caption template of a world.

    Attributes:
        name: "toycanvas" or the user's data folder name.
        heads: kind -> ordered concept names (the evaluator's heads, same order).
        template: caption format with one ``{kind}`` field per head.
        phrases: kind -> the shortest prompt the model was trained on that names a concept of
            that kind alone (ToyCanvas: "a star", "a shape in striped style", "a red shape").
            Methods that condition on the concept by itself (ESD, ...) use it: a tiny text
            encoder trained from scratch does not generalise to prompt forms it never saw
            (the bare words "striped style" move toy-sd's prediction ~20x less than
            "a shape in striped style").
        neutral: kind -> the plain, generic concept of that kind where the world has one
            (ToyCanvas: the untextured "flat" style; objects and colours have none). Methods whose
            paper maps a concept onto a generic surrogate rather than a sibling (Selective
            Amnesia's "a middle aged man" for a celebrity) relabel to it.
        acceptable: kind -> the generic text a concept of that kind is told apart from (a filter's
            acceptable concept; ToyCanvas: "a shape", "a shape in standard style").
        clip: name or directory of the world's own CLIP (ToyCanvas: the committed "toy-clip").
    """

    name: str
    heads: dict[str, tuple[str, ...]]
    template: str
    phrases: dict[str, str] | None = None
    neutral: dict[str, str] | None = None
    acceptable: dict[str, str] | None = None
    clip: str | None = None

    @classmethod
    def toycanvas(cls) -> World:
        from genunlearn.data import toycanvas

        return cls(
            "toycanvas",
            dict(toycanvas.KINDS),
            "a {colour} {object} in {style} style",
            dict(TOYCANVAS_PHRASES),
            dict(TOYCANVAS_NEUTRAL),
            dict(TOYCANVAS_ACCEPTABLE),
            "toy-clip",
        )

    @classmethod
    def load(cls, path: str | Path) -> World:
        d = json.loads(Path(path).read_text())
        toy = d["name"] == "toycanvas"
        phrases = d.get("phrases") or (TOYCANVAS_PHRASES if toy else None)
        neutral = d.get("neutral") or (TOYCANVAS_NEUTRAL if toy else None)
        acceptable = d.get("acceptable") or (TOYCANVAS_ACCEPTABLE if toy else None)
        return cls(
            d["name"],
            {k: tuple(v) for k, v in d["heads"].items()},
            d["template"],
            dict(phrases) if phrases else None,
            dict(neutral) if neutral else None,
            dict(acceptable) if acceptable else None,
            d.get("clip") or ("toy-clip" if toy else None),
        )

    def concepts(self, kind: str | None = None) -> list[Concept]:
        """All concepts, or those of one kind; an unknown kind lists the valid kinds."""
        if kind is not None and kind not in self.heads:
            raise GenUnlearnError(unknown_name_message("concept kind", kind, list(self.heads)))
        return [Concept(n, k) for k, v in self.heads.items() if kind in (None, k) for n in v]

    def kind_of(self, name: str) -> str | None:
        for k, v in self.heads.items():
            if name in v:
                return k
        return None

    def concept(self, name: str) -> Concept:
        """The concept called ``name``; unknown names raise an error with the closest names."""
        kind = self.kind_of(name)
        if kind is None:
            valid = [c.name for c in self.concepts()]
            raise GenUnlearnError(unknown_name_message(f"{self.name} concept", name, valid))
        return Concept(name, kind)

    def text(self, name: str) -> str:
        """How a concept is said in a prompt: styles as "striped style", the rest by name."""
        return f"{name} style" if self.kind_of(name) == "style" else name

    def prompt(self, name: str) -> str:
        """The in-distribution prompt naming concept ``name`` alone ("a shape in striped style").

        Uses the world's phrase for the concept's kind; a one-head world fills its caption
        template; otherwise :meth:`text`.
        """
        kind = self.concept(name).kind
        if self.phrases and kind in self.phrases:
            return self.phrases[kind].format(**{kind: name})
        if len(self.heads) == 1:
            return self.template.format(**{kind: name})
        return self.text(name)

    def caption(self, labels: dict[str, str]) -> str:
        return self.template.format(**labels)

    def generic_noun(self, kind: str) -> str | None:
        """The word the world's prompts use in place of a concept of ``kind`` when they leave it
        out ("shape" in ToyCanvas' "a shape in striped style"), read off the world's phrases: a
        word of every other kind's phrase that is in neither the template nor ``kind``'s phrase."""
        phrases = self.phrases or {}
        if kind not in phrases or len(phrases) < 2:
            return None
        words = set(self.template.split()) | set(phrases[kind].split())
        extra = [set(p.split()) - words for k, p in phrases.items() if k != kind]
        common = set.intersection(*extra) if extra else set()
        return sorted(common)[0] if len(common) == 1 else None

    def caption_without(self, labels: dict[str, str], kinds: list[str]) -> str:
        """The caption of ``labels`` with its concepts of ``kinds`` left out ("a red star in
        striped style" without the style: "a red star"; ConceptPrune's base prompts).

        A field goes with the words the template attaches to it: a connective after an earlier
        field ("in") and a suffix after the last field ("style"). Where the world's phrases name
        a generic noun for a missing concept of that kind (an object), it takes the field's
        place. A caption left with no concept at all is the empty prompt.
        """

        def is_field(w: str) -> bool:
            return w.startswith("{") and w.endswith("}")

        words = self.template.split()
        # right to left, so that a generic noun put in is never taken for a later field's words
        for kind in sorted(kinds, key=lambda k: -words.index("{" + k + "}")):
            i = words.index("{" + kind + "}")
            lo, hi = i, i + 1
            while lo > 0 and not is_field(words[lo - 1]):
                lo -= 1
            while hi < len(words) and not is_field(words[hi]):
                hi += 1
            start = lo if lo > 0 else i  # words before the first field (an article) stay
            end = hi if hi == len(words) else i + 1  # words before a later field belong to it
            noun = self.generic_noun(kind)
            words = words[:start] + ([noun] if noun else []) + words[end:]
        if not any(is_field(w) for w in words):
            return ""
        return " ".join(words).format(**{k: v for k, v in labels.items() if k not in kinds})

    def combinations(self) -> list[dict[str, str]]:
        """Every label set the world can caption (all combinations of its heads, the first
        head outermost; ToyCanvas: 10 objects x 8 styles x 5 colours = 400)."""
        return [dict(zip(self.heads, c, strict=True)) for c in product(*self.heads.values())]

    def render(self, labels: dict[str, str], seed: int, index: int):
        """An image of ``labels`` and its concept region, for a world that renders its own
        images (ToyCanvas): (uint8 [H, W, 3], float32 mask [H, W] in [0, 1]); None otherwise."""
        if self.name != "toycanvas":
            return None
        from genunlearn.data import toycanvas

        return toycanvas.sample_labelled_with_mask(
            labels["object"], labels["style"], labels["colour"], seed, index
        )

    def grid(self) -> list[dict[str, str]]:
        """One label set per prompt of the evaluation grid.

        For a multi-head world every pair of the first two heads appears once and the remaining
        heads cycle (ToyCanvas: 10 objects x 8 styles = 80 prompts, colours cycling so that each
        colour appears equally often). A one-head world has one prompt per class.
        """
        kinds = list(self.heads)
        main = [k for k in kinds if k != "colour"][:2] if len(kinds) > 1 else kinds
        rest = [k for k in kinds if k not in main]
        out = []
        for combo in product(*(self.heads[k] for k in main)):
            labels = dict(zip(main, combo, strict=True))
            pos = sum(self.heads[k].index(v) for k, v in labels.items())
            for k in rest:
                labels[k] = self.heads[k][pos % len(self.heads[k])]
            out.append(labels)
        return out

    def words(self) -> set[str]:
        """Every word the world's prompts use: its grid captions and its concept prompts (the
        whole vocabulary a testbed's text encoder was trained on), lower-case."""
        texts = [self.caption(lab) for lab in self.grid()]
        texts += [self.prompt(c.name) for c in self.concepts()]
        return {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}

    def split(self, targets: list[str]) -> tuple[list[dict], list[dict]]:
        """Grid prompts containing any target, and those containing none (retain prompts)."""
        for t in targets:
            self.concept(t)
        has, without = [], []
        for labels in self.grid():
            (has if any(v in targets for v in labels.values()) else without).append(labels)
        return has, without
