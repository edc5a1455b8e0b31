"""Shared fixtures of the efficacy tier (slow): toy-sd loaded once, the original's scores, and the
two testbed variants built once per session through the CLI into temporary directories.

Only the public API (``import genunlearn as gu``) and the ``genunlearn`` command are used, with
one exception isolated in :func:`memorized`: the memorizing variant's memorized prompts and
training images are read from the files ``genunlearn testbed memorize`` writes into its output
directory (``memorize.json``, ``memorized.npz``), since no public function returns them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import genunlearn as gu

#: the UnlearnCanvas evaluation of every single-concept claim: 2 images per grid prompt, as the
#: protocols of docs/results.md were measured (so the documented cells are directly comparable),
#: which puts UA on 20 (style) / 16 (object) images and IRA / CRA on 140 / 144 images
EVAL = {"protocol": "unlearncanvas", "n_per_prompt": 2, "seed": 0, "fid": False}


@pytest.fixture(scope="session")
def eval_opts() -> dict:
    """:data:`EVAL`, for the tests (this directory is not a package, so they cannot import it)."""
    return dict(EVAL)


@pytest.fixture(scope="session")
def toy():
    """toy-sd, loaded once for the whole tier (methods erase a copy; it is never changed)."""
    return gu.load_model("toy-sd")


@pytest.fixture(scope="session")
def original_scores(toy):
    """``score(concept)``: the unmodified toy-sd's UA / IRA / CRA on a concept, computed once."""
    cache: dict[str, dict[str, float]] = {}

    def score(concept: str) -> dict[str, float]:
        if concept not in cache:
            cache[concept] = gu.evaluate(toy, concept, **EVAL)
        return cache[concept]

    return score


def _testbed(tmp_path_factory, action: str) -> Path:
    """Build a toy-sd variant with ``genunlearn testbed ACTION --out DIR`` (default recipe)."""
    exe = shutil.which("genunlearn", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "genunlearn.cli.main"]
    out = tmp_path_factory.mktemp(action) / "variant"
    proc = subprocess.run(
        [*cmd, "--quiet", "testbed", action, "--out", str(out)],
        capture_output=True, text=True, env=os.environ.copy(), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("pipeline:")]
    return Path(lines[-1].split()[1]) if lines else out


@pytest.fixture(scope="session")
def memorizing_variant(tmp_path_factory) -> Path:
    """Directory of the memorizing variant (``genunlearn testbed memorize``, default recipe)."""
    return _testbed(tmp_path_factory, "memorize")


@pytest.fixture(scope="session")
def watermark_variant(tmp_path_factory) -> Path:
    """Directory of the watermark variant (``genunlearn testbed watermark``, default recipe)."""
    return _testbed(tmp_path_factory, "watermark")


@pytest.fixture(scope="session")
def memorized(memorizing_variant) -> tuple[list[str], torch.Tensor]:
    """The variant's memorized prompts and their training images (float [K, 3, H, W] in [0, 1]).

    The one place this tier reads a library file format instead of calling the public API: the
    variant's ``memorize.json`` ("memorized": [{"prompt": ...}, ...]) and ``memorized.npz``
    ("images": uint8 [K, H, W, 3]) as documented by ``genunlearn testbed memorize``.
    """
    rec = json.loads((memorizing_variant / "memorize.json").read_text())
    with np.load(memorizing_variant / "memorized.npz") as z:
        images = torch.from_numpy(z["images"]).permute(0, 3, 1, 2).float() / 255.0
    prompts = [m["prompt"] for m in rec["memorized"]]
    assert len(prompts) == len(images) > 0
    return prompts, images
