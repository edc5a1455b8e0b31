"""An import-free check of the source: no unsafe loaders, no shells (issue 20)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _calls():
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call):
                yield f, node


def _name(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _kw(node, name):
    return next((k.value for k in node.keywords if k.arg == name), None)


def test_no_unsafe_loader_or_shell_in_src():
    bad = []
    for f, node in _calls():
        name = _name(node.func)
        where = f"{f.relative_to(SRC)}:{node.lineno} {name}"
        if name == "torch.load":
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                bad.append(where + " without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "pickle.load", "pickle.loads"):
            bad.append(where)
        shell = _kw(node, "shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            bad.append(where + " with shell=")
        if name == "os.system" or (isinstance(node.func, ast.Name) and name in ("eval", "exec")):
            bad.append(where)
    assert not bad, bad


def test_the_check_sees_what_it_must_refuse(tmp_path):
    text = "import torch, yaml\ntorch.load(f)\nyaml.load(s)\nsubprocess.run(c, shell=True)\n"
    calls = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call)]
    assert [_name(c.func) for c in calls] == ["torch.load", "yaml.load", "subprocess.run"]
    assert _kw(calls[0], "weights_only") is None and _kw(calls[2], "shell").value is True
