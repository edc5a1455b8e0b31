"""Typed, frozen dataclass configs built from presets, YAML files and ``key=value`` overrides.

Unknown keys are errors that list the valid keys; values given as text (CLI) are parsed as YAML
scalars/lists and checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from genunlearn.types import GenUnlearnError


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["steps=50", "lr=1e-5"]`` -> ``{"steps": 50, "lr": 1e-05}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise GenUnlearnError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = _scalar(v.strip()) if v.strip() else ""
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping is a clear error."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise GenUnlearnError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise GenUnlearnError(f"{p} is not valid YAML: {_yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GenUnlearnError(
            f"{p} must hold a mapping of keys to values, got {type(data).__name__}"
        )
    return data


#: the largest seed genunlearn accepts (torch generators take 64-bit seeds; signed keeps it safe)
MAX_SEED = 2**63 - 1


def is_seed(value: Any, room: int = 0) -> bool:
    """True for an int (not a bool) in 0 .. MAX_SEED - ``room`` (``room``: how many seeds follow
    it, e.g. image i of a call uses ``seed + i``)."""
    ok_type = isinstance(value, int) and not isinstance(value, bool)
    return ok_type and 0 <= value <= MAX_SEED - room


def _yaml_problem(e) -> str:
    """A YAML error as one line: the problem and where it is (line, column)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    tags = " (plain YAML only: tags such as !!python/... are refused)" if "tag" in problem else ""
    return f"{problem}{where}{tags}"


def _number(text: str, default: Any) -> Any:
    """``"1e-3"`` -> 0.001, ``"3"`` -> 3 (YAML 1.1 reads "1e-3" as text); else ``default``."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return default


def _scalar(text: str) -> Any:
    """One item of a comma-separated list, parsed like a YAML scalar (numbers as numbers)."""
    import yaml

    num = _number(text, None)
    if num is not None:
        return num
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise GenUnlearnError(
            f"value {text!r} is not a plain YAML scalar or list ({_yaml_problem(e)}); give a "
            "number, true/false, text or a [list]"
        ) from None


def _coerce(name: str, value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errs = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a, where)
            except GenUnlearnError as e:
                errs.append(str(e))
        raise GenUnlearnError(errs[0] if errs else f"{where}: bad value for {name}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [_scalar(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise GenUnlearnError(f"{where}: {name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        vals = [_coerce(name, v, inner, where) for v in value]
        return tuple(vals) if origin is tuple else vals
    if tp is Any or tp is object:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise GenUnlearnError(f"{where}: {name} must be true or false, got {value!r}")
    if tp in (int, float) and isinstance(value, str):
        value = _number(value, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise GenUnlearnError(f"{where}: {name} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise GenUnlearnError(f"{where}: {name} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise GenUnlearnError(f"{where}: {name} must be text, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise GenUnlearnError(f"{where}: {name} has an unsupported value {value!r}")


def build_config(cls: type, *layers: dict[str, Any] | None, where: str = "config"):
    """Instantiate dataclass ``cls`` from its defaults overlaid with ``layers`` (later wins).

    Raises:
        GenUnlearnError: a key that is not a field of ``cls`` (the message lists the valid keys and
            the closest match), or a value of the wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if k not in fields:
                close = difflib.get_close_matches(k, sorted(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise GenUnlearnError(
                    f"{where}: unknown key {k!r}{hint}. Valid keys: {', '.join(sorted(fields))}"
                )
            merged[k] = _check_range(k, _coerce(k, v, hints[k], where), where)
    return cls(**merged)


def _check_range(name: str, value: Any, where: str) -> Any:
    """Ranges that hold for every config: numbers are finite; step counts and learning rates are
    positive (a zero or negative one would train nothing, or backwards, and report success)."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise GenUnlearnError(f"{where}: {name} must be a finite number, got {value!r}")
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if (name == "steps" or name.endswith("_steps")) and is_int and value < 1:
        raise GenUnlearnError(f"{where}: {name} must be an integer >= 1, got {value!r}")
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (name == "lr" or name.endswith("_lr")) and is_num and value <= 0:
        raise GenUnlearnError(f"{where}: {name} must be a finite number > 0, got {value!r}")
    if (name == "seed" or name.endswith("_seed")) and is_int and not is_seed(value):
        raise GenUnlearnError(f"{where}: {name} must be an integer in 0 .. 2**63-1, got {value!r}")
    if name in ("n_per_prompt", "n_prompts", "n_images") and is_int and value < 1:
        raise GenUnlearnError(f"{where}: {name} must be an integer >= 1, got {value!r}")
    return value


def config_to_dict(cfg) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
