"""Imports run one way between the rooms of the package (DESIGN.md §3), so no circle comes back.

Every import of a genunlearn module under src/ is read with ``ast``, at module level or inside a
function (a deferred import is still a dependency; deferring one only hides a circle). A room is
a subpackage (``models``) or a top-level module (``api``). The layers, highest first:

    cli                                      one file per subcommand, over everything
    genunlearn (__init__.py)                 the public facade: re-exports api and bench
    bench | report                           report may import bench.results (the reader) only
    api
    methods | attacks | metrics | testbed    testbed is imported by cli and api only
    core | runs                              runs.py writes run directories and hashes weights
                                             with models.base, so it sits above models
    models
    data
    registry | config                        near-match messages and config parsing, used by
                                             data and models
    types                                    the vocabulary; imports nothing of genunlearn

A module may import its own room and any lower layer; rooms side by side ("|") do not import each
other, except as noted. Only src/ is read: tests and experiments/ may import anything. ``registry.load_builtin`` imports the method, attack and metric modules
by name at run time (plugin discovery, not an import statement), so it is not an edge here.
Within a room, modules must not import each other in a circle either. A private name (``_x``) is
never imported from, or reached into, another module: a helper two modules share is public.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = "genunlearn"

LAYERS = [
    ("cli",),
    ("genunlearn",),
    ("bench", "report"),
    ("api",),
    ("methods", "attacks", "metrics", "testbed"),
    ("core", "runs"),
    ("models",),
    ("data",),
    ("registry", "config"),
    ("types",),
]
RANK = {room: len(LAYERS) - i for i, rooms in enumerate(LAYERS) for room in rooms}
# (importing room, imported module prefix) allowed across rooms of one layer
SIDEWAYS = {("report", "genunlearn.bench.results")}
ONLY_FROM = {"testbed": {"cli", "api"}}  # rooms that may import a room, beyond itself


def _modules() -> dict[str, Path]:
    mods = {}
    for f in sorted((SRC / PKG).rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _file(module: str, known) -> str:
    init = module in known and known[module].name == "__init__.py"
    return module.replace(".", "/") + ("/__init__.py" if init else ".py")


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PKG


def _bound(module: str, node, known) -> list[tuple[str, str, str | None]]:
    """``(name bound here, imported module, imported name or None)`` for each genunlearn alias
    of one import statement; ``from pkg import sub`` imports the module ``pkg.sub`` when ``sub``
    is one (in ``known``)."""
    if isinstance(node, ast.Import):
        return [(a.asname or PKG, a.name, None) for a in node.names if a.name.split(".")[0] == PKG]
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        is_pkg = module in known and known[module].name == "__init__.py"
        pkg = module.split(".")[: len(module.split(".")) - (not is_pkg)]
        base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != PKG:
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(
            (a.asname or a.name, sub, None) if sub in known else (a.asname or a.name, base, a.name)
        )
    return out


def imports(module: str, text: str, known) -> list[tuple[int, str, str | None]]:
    """``(line, imported module, imported name or None)`` for every genunlearn import in
    ``text``, at module level or inside functions."""
    return [
        (node.lineno, target, name)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for _, target, name in _bound(module, node, known)
    ]


def layer_violations(module: str, text: str, known) -> list[str]:
    """One message per import of ``module`` that breaks the layer order."""
    src, bad = _room(module), []
    for line, target, _ in imports(module, text, known):
        dst = _room(target)
        if dst == src:
            continue
        where = f"{_file(module, known)}:{line}: {src} -> {dst} ({target})"
        if src not in RANK or dst not in RANK:
            bad.append(f"{where}: place room {src if src not in RANK else dst!r} in LAYERS")
        elif dst in ONLY_FROM and src not in ONLY_FROM[dst]:
            bad.append(f"{where}: only {', '.join(sorted(ONLY_FROM[dst]))} may import {dst}")
        elif RANK[dst] > RANK[src]:
            bad.append(f"{where}: {dst} is a higher layer than {src}")
        elif RANK[dst] == RANK[src] and not any(
            s == src and (target + ".").startswith(p + ".") for s, p in SIDEWAYS
        ):
            bad.append(f"{where}: {src} and {dst} are side by side and must not import each other")
    return bad


def private_imports(module: str, text: str, known) -> list[str]:
    """Private names (``_x``) of other genunlearn modules that ``module`` imports or reaches."""
    bad, alias = [], {}
    where = _file(module, known)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for bound, target, name in _bound(module, node, known):
            if name is not None and name.startswith("_") and target != module:
                bad.append(f"{where}:{node.lineno}: imports {target}.{name}")
            elif name is None:  # ``import genunlearn.x`` binds ``genunlearn``, not ``x``
                alias[bound] = PKG if isinstance(node, ast.Import) and bound == PKG else target
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        chain, v = [], node.value
        while isinstance(v, ast.Attribute):
            chain.append(v.attr)
            v = v.value
        if node.attr.endswith("__") or not isinstance(v, ast.Name) or v.id not in alias:
            continue
        owner = ".".join([alias[v.id], *reversed(chain)])
        if owner in known and owner != module:
            bad.append(f"{where}:{node.lineno}: reaches {owner}.{node.attr}")
    return bad


def cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Module circles (strongly connected components of more than one module), each as the
    ``where: a -> b`` of its edges; ``edges[a][b]`` says where ``a`` imports ``b``."""
    index, low, stack, found = {}, {}, [], []

    def visit(v):  # Tarjan; the import graph is a few hundred edges deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = [stack.pop()]
            while comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                found.append(
                    sorted(
                        f"{edges[a][b]}: {a} -> {b}" for a in comp for b in edges[a] if b in comp
                    )
                )

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _texts():
    known = _modules()
    return known, {m: f.read_text() for m, f in known.items()}


def test_imports_follow_the_layer_order():
    known, texts = _texts()
    bad = [v for m, t in texts.items() for v in layer_violations(m, t, known)]
    assert not bad, "imports against the layer order (tests/unit/test_layers.py):\n" + "\n".join(
        bad
    )


def test_no_private_name_crosses_modules():
    known, texts = _texts()
    bad = [v for m, t in texts.items() for v in private_imports(m, t, known)]
    assert not bad, "private names used across modules (make them public):\n" + "\n".join(bad)


def test_no_import_circle_between_modules():
    known, texts = _texts()
    edges: dict[str, dict[str, str]] = {}
    for m, t in texts.items():
        for line, target, _ in imports(m, t, known):
            if target != m and target in known:
                edges.setdefault(m, {}).setdefault(target, f"{_file(m, known)}:{line}")
    found = cycles(edges)
    assert not found, "import circles:\n" + "\n\n".join("\n".join(c) for c in found)


def test_the_checks_see_what_they_must_refuse():
    known = dict.fromkeys(
        ["genunlearn", "genunlearn.api", "genunlearn.bench", "genunlearn.bench.runner",
         "genunlearn.bench.results", "genunlearn.report", "genunlearn.report.html",
         "genunlearn.models", "genunlearn.core", "genunlearn.testbed", "genunlearn.methods"],
        Path("m.py"),
    )  # fmt: skip
    for pkg in ("genunlearn", "genunlearn.bench", "genunlearn.report", "genunlearn.models"):
        known[pkg] = Path("__init__.py")
    api = "import torch\ndef f():\n    from genunlearn.bench.runner import run\n"
    assert layer_violations("genunlearn.api", api, known) == [
        "genunlearn/api.py:3: api -> bench (genunlearn.bench.runner): bench is a higher "
        "layer than api"
    ]
    runner = "from genunlearn import api\nfrom genunlearn.report import html\n"
    assert [
        v.split(":")[1] for v in layer_violations("genunlearn.bench.runner", runner, known)
    ] == ["2"]
    report = "from genunlearn.bench.results import read_rows\nfrom ..bench import runner\n"
    assert len(layer_violations("genunlearn.report.html", report, known)) == 1
    assert (
        "only api, cli may import testbed"
        in layer_violations("genunlearn.methods", "from genunlearn.testbed import x\n", known)[0]
    )
    private = "from genunlearn.models import _aug\nfrom genunlearn import api\napi._world(1)\n"
    assert [v.split(": ")[1] for v in private_imports("genunlearn.core", private, known)] == [
        "imports genunlearn.models._aug",
        "reaches genunlearn.api._world",
    ]
    circle = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}, "d": {"a": "d:1"}}
    assert cycles(circle) == [["a.py:1: a -> b", "b.py:2: b -> c", "c.py:3: c -> a"]]


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Importing any module before any other genunlearn module works (a circle hidden by import
    order breaks here). One interpreter, with every genunlearn module dropped before each
    import: what a fresh interpreter does, minus re-importing torch each time."""
    names = sorted(_modules())
    script = (
        "import importlib, sys\n"
        f"bad = []\nfor name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'genunlearn' or m.startswith('genunlearn.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except Exception as e:\n        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    # and literally, the command the issue names
    cmd = [sys.executable, "-c", "import genunlearn.bench.runner"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
