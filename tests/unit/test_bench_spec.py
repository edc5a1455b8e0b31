"""Benchmark specs: cell ids are safe file names, and every spec mistake is refused before work."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from genunlearn.bench import runner
from genunlearn.bench.spec import Cell, MethodSpec, parse_spec
from genunlearn.types import GenUnlearnError

ROOT = Path(__file__).resolve().parents[2]
SAFE = re.compile(r"^[A-Za-z0-9._+-]+$")
HOSTILE = [
    "a star /../../../../elsewhere",
    "../../../etc",
    "..",
    "/abs/path",
    "star\x00nul",
    "back\\slash",
    "new\nline",
    "ünïcödé",
    "x" * 400,
    "",
]


def _cells(text: str) -> list[Cell]:
    """One cell with ``text`` in each free-text place: model, method label, concept, sequence."""
    m = MethodSpec("esd")
    return [
        Cell(text, m, "star", 0),
        Cell("toy-sd", MethodSpec("esd", label=text), "star", 0),
        Cell("toy-sd", m, text, 0),
        Cell("toy-sd", m, "x", 0, (text, "star")),
    ]


@pytest.mark.parametrize("text", HOSTILE)
def test_cell_ids_are_single_safe_file_names(text, tmp_path):
    root = tmp_path / "runs"
    for cell in _cells(text):
        cid = cell.id
        assert SAFE.match(cid), cid
        assert len(cid.encode()) <= 255
        assert (root / cid).resolve().parent == root.resolve()
        assert runner.run_dir(tmp_path, cell).parent == root


def test_distinct_texts_keep_distinct_ids():
    texts = HOSTILE + ["a?b", "a*b", "a_b", "x" * 401, "x" * 399 + "y"]
    for place in range(4):
        ids = [_cells(t)[place].id for t in texts]
        assert len(set(ids)) == len(ids), place


def test_ordinary_cell_ids_stay_what_they_were():
    """Existing results.jsonl files key rows by these ids: they must not change."""
    esd = MethodSpec("esd")
    assert Cell("toy-sd", esd, "star", 0).id == "toy-sd__esd__star__s0"
    assert Cell("toy-sd", MethodSpec("esd", label="esd-short"), "striped", 3).id == (
        "toy-sd__esd-short__striped__s3"
    )
    assert Cell("CompVis/stable-diffusion-v1-4", esd, "van gogh", 1).id == (
        "CompVis_stable-diffusion-v1-4__esd__van_gogh__s1"
    )
    assert Cell("toy-sd", esd, "star+dotted", 0, ("star", "dotted")).id == (
        "toy-sd__esd__seq-star+dotted__s0"
    )
    # a cell whose id had to change still finds the rows an older version wrote for it
    long = Cell("/data/models/" + "m" * 60, esd, "a/b", 0)
    assert long.id != long.legacy_id
    assert runner._done_key(long, {long.legacy_id: "fp"}) == long.legacy_id


def test_run_dir_refuses_paths_that_leave_runs(tmp_path, monkeypatch):
    cell = Cell("toy-sd", MethodSpec("esd"), "star", 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "runs" / cell.id).symlink_to(elsewhere)  # planted: points outside
    with pytest.raises(GenUnlearnError, match="outside"):
        runner.run_dir(tmp_path / "out", cell)
    monkeypatch.setattr(Cell, "id", property(lambda self: "../../x"))
    with pytest.raises(GenUnlearnError, match="outside"):
        runner.run_dir(tmp_path / "out2", cell)


def _spec(**kw):
    return {"methods": ["original"], "concepts": ["star"], **kw}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (_spec(methods="uce"), r"'methods' must be a list \(e\.g\. methods: \[uce\]\)"),
        (_spec(attacks="no_attack"), r"'attacks' must be a list"),
        (_spec(seeds=["abc"]), r"'seeds' must be integers in 0 \.\. 2\*\*63-1.*'abc'"),
        (_spec(seeds=[-1]), r"'seeds' must be integers in 0 \.\. 2\*\*63-1"),
        (_spec(seeds=[2**63]), r"'seeds' must be integers"),
        (_spec(seeds=[1.5]), r"'seeds' must be integers"),
        (_spec(seeds=[True]), r"'seeds' must be integers"),
        (_spec(seeds=[0, 0]), r"'seeds' repeat"),
        (_spec(models=[3]), r"'models' must be model names"),
        (_spec(concepts=[""]), r"concept entry ''"),
        (_spec(concepts=[{"kind": "style", "n": "abc"}]), r"N a positive integer"),
        (_spec(methods=["original", "original"]), r"listed twice"),
        (_spec(methods=[{"name": "esd", "overrides": [1]}]), r"'overrides' must be a mapping"),
        (_spec(eval={"protocol": "unlearncanvas", "n_per_promt": 1}),
         r"eval \(unlearncanvas\): unknown key 'n_per_promt' \(did you mean 'n_per_prompt'\?\)"),
        (_spec(eval={"protocol": "unlearncanvas", "n_per_prompt": "many"}),
         r"n_per_prompt must be an integer"),
        (_spec(eval={"protocol": "clip_score", "limit": 2}, concepts=None,
               sequential=["star"]), r"unknown key 'limit'"),
        (_spec(eval=[1]), r"'eval' must be a mapping"),
        (_spec(attack_config="n_prompts=2"), r"'attack_config' must be a mapping"),
    ],
)  # fmt: skip
def test_spec_mistakes_are_refused_when_parsed(spec, match):
    with pytest.raises(GenUnlearnError, match=match):
        parse_spec(spec)


def test_single_values_that_mean_one_item_are_accepted():
    s = parse_spec(_spec(models="toy-sd", concepts="star", seeds=3))
    assert s.models == ["toy-sd"] and s.concepts == ["star"] and s.seeds == [3]
    s = parse_spec(_spec(methods="all", attacks="all", seeds=[0, 2**63 - 1]))
    assert len(s.methods) > 3 and "no_attack" in s.attacks and s.seeds == [0, 2**63 - 1]


def _toy(name):
    """A stand-in model with a world: resolution picks the "toy" preset, as on toy-sd."""
    return SimpleNamespace(world=object(), model_id=name)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"methods": [{"name": "esd", "overrides": {"stpes": 3}, "label": "esd-typo"}]},
         r"method 'esd-typo': esd config: unknown key 'stpes' \(did you mean 'steps'\?\)"),
        ({"methods": [{"name": "esd", "overrides": {"steps": "many"}}]},
         r"steps must be an integer"),
        ({"methods": [{"name": "esd", "preset": "toyy"}]}, r"esd has no preset 'toyy'"),
        ({"attacks": ["no_attack"], "attack_config": {"n_promts": 2}},
         r"attack_config key 'n_promts'.*did you mean 'n_prompts'"),
        ({"attacks": ["no_attack"], "attack_config": {"seed_serch": {"n_seeds": 2}}},
         r"attack_config key 'seed_serch'.*did you mean 'seed_search'"),
        ({"attacks": ["seed_search"], "attack_config": {"seed_search": {"n_sedes": 2}}},
         r"attack_config for 'seed_search': .*unknown key 'n_sedes'"),
        # a section of an attack outside the grid is still checked
        ({"attack_config": {"seed_search": {"n_sedes": 2}}}, r"unknown key 'n_sedes'"),
        # a shared key goes to every attack of the grid: no_attack has no n_seeds
        ({"attacks": ["no_attack", "seed_search"], "attack_config": {"n_seeds": 2}},
         r"attack_config for 'no_attack': .*unknown key 'n_seeds'"),
        ({"attacks": ["seed_search"], "attack_config": {"seed_search": 3}},
         r"section 'seed_search' must be a mapping"),
    ],
)  # fmt: skip
def test_method_and_attack_typos_are_refused_before_any_cell(extra, match):
    s = parse_spec(_spec(**extra))
    with pytest.raises(GenUnlearnError, match=match):
        runner.validate(s, load=_toy)


def test_valid_settings_pass_validation():
    # keys named like erase's own arguments reach the method's config (concept_prune has a
    # ``seed``; esd has ``progress``)
    s = parse_spec(
        _spec(
            methods=[
                {"name": "concept_prune", "overrides": {"seed": 3}},
                {"name": "esd", "preset": "smoke", "overrides": {"progress": False}},
            ],
            attacks=["no_attack", "seed_search"],
            attack_config={"n_prompts": 4, "seed_search": {"n_seeds": 2}},
        )
    )
    runner.validate(s, load=_toy)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "bench").glob("*.yaml")), ids=str)
def test_shipped_benchmark_configs_validate(path):
    runner.validate(parse_spec(path), load=_toy)
