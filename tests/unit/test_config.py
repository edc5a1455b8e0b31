"""Config building: unknown keys, type coercion, layering, overrides and YAML errors."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest

from genunlearn.config import build_config, config_to_dict, load_yaml, parse_overrides
from genunlearn.types import GenUnlearnError


@dataclass(frozen=True)
class Cfg:
    steps: int = 10
    lr: float = 1e-3
    flag: bool = False
    name: str = "x"
    layers: tuple[str, ...] = ("a",)
    ids: tuple[int, ...] = (1,)
    anchor: str | None = None
    limit: int | None = 5


def test_defaults_when_no_layers():
    assert build_config(Cfg) == Cfg()
    assert build_config(Cfg, None, {}) == Cfg()


def test_result_is_the_frozen_dataclass():
    cfg = build_config(Cfg, {"steps": 3})
    assert isinstance(cfg, Cfg)
    with pytest.raises(FrozenInstanceError):
        cfg.steps = 4


def test_unknown_key_names_key_close_match_and_valid_keys():
    with pytest.raises(GenUnlearnError) as e:
        build_config(Cfg, {"stpes": 3}, where="esd config")
    msg = str(e.value)
    assert "esd config" in msg
    assert "'stpes'" in msg
    assert "did you mean 'steps'" in msg
    for key in ("steps", "lr", "flag", "name", "layers", "ids", "anchor", "limit"):
        assert key in msg.split("Valid keys:")[1]


def test_unknown_key_in_a_later_layer_is_also_an_error():
    with pytest.raises(GenUnlearnError, match="zzz"):
        build_config(Cfg, {"steps": 3}, {"zzz": 1})


def test_later_layers_win_and_earlier_keys_survive():
    cfg = build_config(Cfg, {"steps": 1, "name": "first"}, {"steps": 2}, None, {"lr": 0.5})
    assert cfg.steps == 2 and cfg.name == "first" and cfg.lr == 0.5


@pytest.mark.parametrize("bad", ["abc", 3.5, True, [1]])
def test_int_field_rejects_non_integers(bad):
    with pytest.raises(GenUnlearnError, match="steps"):
        build_config(Cfg, {"steps": bad})


def test_int_field_accepts_integral_float():
    cfg = build_config(Cfg, {"steps": 4.0})
    assert cfg.steps == 4 and type(cfg.steps) is int


def test_float_field_accepts_int_and_rejects_text_and_bool():
    cfg = build_config(Cfg, {"lr": 1})
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    for bad in ("abc", True):
        with pytest.raises(GenUnlearnError, match="lr"):
            build_config(Cfg, {"lr": bad})


@pytest.mark.parametrize("bad", ["yes", "true", 1, 0, None])
def test_bool_field_accepts_only_real_bools(bad):
    with pytest.raises(GenUnlearnError, match="flag"):
        build_config(Cfg, {"flag": bad})
    assert build_config(Cfg, {"flag": True}).flag is True


def test_str_field_accepts_numbers_as_text_but_not_bools():
    assert build_config(Cfg, {"name": 7}).name == "7"
    with pytest.raises(GenUnlearnError, match="name"):
        build_config(Cfg, {"name": False})


def test_tuple_field_from_comma_string_and_list():
    assert build_config(Cfg, {"layers": "attn1, attn2,,mid"}).layers == ("attn1", "attn2", "mid")
    cfg = build_config(Cfg, {"layers": ["p", "q"]})
    assert cfg.layers == ("p", "q") and isinstance(cfg.layers, tuple)
    assert build_config(Cfg, {"ids": [3, 4]}).ids == (3, 4)
    with pytest.raises(GenUnlearnError, match="layers"):
        build_config(Cfg, {"layers": 5})
    with pytest.raises(GenUnlearnError, match="ids"):
        build_config(Cfg, {"ids": ["a"]})


def test_int_tuple_field_from_comma_string():
    assert build_config(Cfg, {"ids": "1,2"}).ids == (1, 2)


def test_optional_fields_accept_none_and_check_the_inner_type():
    cfg = build_config(Cfg, {"anchor": None, "limit": None})
    assert cfg.anchor is None and cfg.limit is None
    assert build_config(Cfg, {"anchor": "dog", "limit": 3}) == Cfg(anchor="dog", limit=3)
    with pytest.raises(GenUnlearnError, match="limit"):
        build_config(Cfg, {"limit": "abc"})


def test_config_to_dict_turns_tuples_into_lists():
    d = config_to_dict(Cfg(layers=("a", "b")))
    assert d["layers"] == ["a", "b"] and d["ids"] == [1] and d["steps"] == 10


def test_parse_overrides_types():
    out = parse_overrides(["a=1", "b=x", "d=[1,2]", "e=", " f = true", "g=k=v", "h=0.5"])
    assert out == {"a": 1, "b": "x", "d": [1, 2], "e": "", "f": True, "g": "k=v", "h": 0.5}
    assert type(out["a"]) is int and type(out["h"]) is float
    assert parse_overrides(None) == {} and parse_overrides([]) == {}


def test_parse_overrides_reads_exponent_floats():
    assert parse_overrides(["c=1e-3"]) == {"c": 1e-3}


def test_exponent_float_override_builds_a_float_field():
    assert build_config(Cfg, parse_overrides(["lr=1e-5"])).lr == 1e-5


def test_bad_override_without_equals_raises():
    with pytest.raises(GenUnlearnError, match="key=value") as e:
        parse_overrides(["steps=1", "lr"])
    assert "'lr'" in str(e.value)


def test_load_yaml_reads_a_mapping_and_empty_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("steps: 3\nlayers: [a, b]\n")
    assert load_yaml(p) == {"steps": 3, "layers": ["a", "b"]}
    e = tmp_path / "empty.yaml"
    e.write_text("")
    assert load_yaml(e) == {}


def test_load_yaml_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(GenUnlearnError) as e:
        load_yaml(p)
    assert str(p) in str(e.value)


def test_load_yaml_non_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(GenUnlearnError) as e:
        load_yaml(p)
    assert str(p) in str(e.value) and "mapping" in str(e.value)


def test_load_yaml_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("steps: [1, 2\nlr: 3\n")
    with pytest.raises(GenUnlearnError) as e:
        load_yaml(p)
    assert str(p) in str(e.value) and "not valid YAML" in str(e.value)


def test_load_yaml_on_a_directory(tmp_path):
    with pytest.raises(GenUnlearnError, match="does not exist"):
        load_yaml(tmp_path)
