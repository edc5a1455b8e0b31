"""Model adapters; the only package that knows model internals."""

from __future__ import annotations

from pathlib import Path

from genunlearn.types import GenUnlearnError

BUILTIN = {"toy-sd": "toy-sd"}


def assets_dir() -> Path:
    """Directory of the committed testbed weights."""
    return Path(__file__).resolve().parent.parent / "assets"


def load_model(name_or_path: str | Path):
    """Load ``"toy-sd"`` (built-in testbed) or a local diffusers SD directory; never downloads.

    Raises:
        GenUnlearnError: an unknown name or a directory that is not an SD pipeline (the message
            names the missing component).
    """
    from genunlearn.models.sd import SDAdapter

    name = str(name_or_path)
    if name in BUILTIN:
        path = assets_dir() / BUILTIN[name]
        if not (path / "model_index.json").is_file():
            raise GenUnlearnError(
                f"the built-in {name} weights are missing from {path}; reinstall genunlearn or "
                "train them with 'genunlearn testbed train'"
            )
        return SDAdapter.from_directory(path, model_id=name)
    p = Path(name).expanduser()
    if not p.exists() and not any(sep in name for sep in ("/", "\\", ".")):
        from genunlearn.registry import unknown_name_message

        raise GenUnlearnError(
            unknown_name_message("model", name, sorted(BUILTIN)) + " (or a local directory path)"
        )
    return SDAdapter.from_directory(p)
