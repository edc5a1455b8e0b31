"""Model adapters and loaders; the only package that knows model internals.

Adapters (``sd``), the loaders of the committed testbed models (``evaluator``, ``clip``,
``watermark_detector``) and :func:`load_model`. Nothing here trains weights: the recipes that
made the built-in models live in :mod:`genunlearn.testbed`.
"""

from __future__ import annotations

from pathlib import Path

from genunlearn.types import GenUnlearnError

BUILTIN = {"toy-sd": "toy-sd"}


def assets_dir() -> Path:
    """Directory of the committed testbed weights."""
    return Path(__file__).resolve().parent.parent / "assets"


def load_model(name_or_path: str | Path, *, device=None, dtype=None, unet=None, text_encoder=None):
    """Load ``"toy-sd"`` (built-in testbed) or a local diffusers SD directory; never downloads.

    ``device`` (cpu / cuda / cuda:N / mps; None: the first GPU, else the CPU) and ``dtype``
    (float32 / float16 / bfloat16 for the frozen weights) go to ``SDAdapter.from_directory``.
    ``unet`` / ``text_encoder`` (published erased weights applied to the base) are not
    supported yet: an error says so.

    Raises:
        GenUnlearnError: an unknown name or a directory that is not an SD pipeline (the message
            names the missing component).
    """
    from genunlearn.models.sd import SDAdapter

    if unet is not None or text_encoder is not None:
        raise GenUnlearnError(
            "loading published UNet / text-encoder weights onto a base (unet=, text_encoder=) is "
            "not implemented yet; export them into a diffusers directory and load that"
        )
    name = str(name_or_path)
    if name in BUILTIN:
        path = assets_dir() / BUILTIN[name]
        if not (path / "model_index.json").is_file():
            raise GenUnlearnError(
                f"the built-in {name} weights are missing from {path}; reinstall genunlearn or "
                "train them with 'genunlearn testbed train'"
            )
        return SDAdapter.from_directory(path, model_id=name, device=device, dtype=dtype)
    p = Path(name).expanduser()
    if not p.exists() and not any(sep in name for sep in ("/", "\\", ".")):
        from genunlearn.registry import unknown_name_message

        raise GenUnlearnError(
            unknown_name_message("model", name, sorted(BUILTIN)) + " (or a local directory path)"
        )
    return SDAdapter.from_directory(p, device=device, dtype=dtype)
