"""Fixtures for attack tests: force the judge's answers to reach the code paths under test."""

from __future__ import annotations

import pytest

from genunlearn.core import attack_loop


@pytest.fixture
def forced_judge(monkeypatch):
    """``force(module, pre, post)``: unmodified prompts are judged ``pre``, attacked ones ``post``.

    Returns the list of image counts the attack module's own judge was called with.
    """

    def force(module, pre: bool = False, post: bool = False) -> list[int]:
        calls: list[int] = []
        monkeypatch.setattr(
            attack_loop, "judge", lambda model, images, targets: [pre] * len(images)
        )

        def judge(model, images, targets):
            calls.append(len(images))
            return [post] * len(images)

        monkeypatch.setattr(module, "judge", judge)
        return calls

    return force
