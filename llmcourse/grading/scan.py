"""Static scan of answer cells for delegation: ``llmcourse`` and forbidden built-ins.

The answer runner already makes both fail at run time; the scan catches them even when
the call sits on a path the tests do not take, and names the reason in the feedback.
It looks for the banned names as whole names: attributes (``F.gelu``), imported modules
and names (``import llmcourse as x``), and string constants that look like a name or a
dotted path (``getattr(F, "scaled_dot_" "product_attention")``, ``"uleg"[::-1]``), plus a
banned name spread over several such strings (``__import__("llm" + "course")``).
Ordinary text is left alone: ``print("my gelu output:", y)``, ``cfg.layer_norm_eps`` or a
key ``"gelu_out"`` is not delegation and costs no points.
"""
from __future__ import annotations

import ast
import re

_SQUASH = re.compile(r"[^a-z0-9]")
_NAME_LIKE = re.compile(r"[A-Za-z0-9_.]+")  # a string that could be a name or a dotted path


def _squash(text: str) -> str:
    return _SQUASH.sub("", text.lower())


def _strings(tree: ast.AST) -> list[str]:
    """String constants outside docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def defined_functions(source: str) -> set[str]:
    """Names of the top-level functions a cell defines (or assigns)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def scan_cell(source: str, forbidden: tuple[str, ...]) -> list[str]:
    """Reasons this answer cell delegates the work (empty when none is found)."""
    try:
        tree = ast.parse(_without_magics(source))
    except SyntaxError:
        return []  # the runner reports the syntax error itself
    banned = {"llmcourse": "uses llmcourse (the reference solution)"}
    for dotted in forbidden:
        name = dotted.rsplit(".", 1)[1]
        banned[_squash(name)] = f"uses {name}, which is not allowed in this exercise: write it by hand"
    found: dict[str, str] = {}

    def flag(name: str) -> None:
        """``name``: one identifier or a dotted path; any part equal to a banned name counts."""
        for part in name.split("."):
            for squashed in (_squash(part), _squash(part)[::-1]):
                if squashed in banned:
                    found.setdefault(squashed, banned[squashed])

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            flag(node.attr)
        elif isinstance(node, ast.Name) and _squash(node.id) == "llmcourse":
            flag(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                flag(alias.name)
            if isinstance(node, ast.ImportFrom) and node.module:
                flag(node.module)
    names = [text.strip() for text in _strings(tree) if _NAME_LIKE.fullmatch(text.strip())]
    for text in names:
        flag(text)
    glued = _squash("".join(names))  # pieces glued together at run time
    for key, reason in banned.items():
        if (key in glued or key in glued[::-1]) and not any(key in _squash(t) or key in _squash(t)[::-1]
                                                             for t in names):
            found.setdefault(key, reason)
    return list(found.values())


def _without_magics(source: str) -> str:
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
