"""Static scan of answer cells for delegation: ``llmcourse`` and forbidden built-ins.

The answer runner already makes both fail at run time; the scan catches them even when
the call sits on a path the tests do not take, and names the reason in the feedback.
It looks at names, attributes, imports and string constants (also strings glued
together with ``+``, ``join``, f-strings or reversed), which covers ``import llmcourse
as x``, ``importlib.import_module("llm" + "course")``, ``__import__(...)`` and
``getattr(F, "scaled_dot_" "product_attention")``.
"""
from __future__ import annotations

import ast
import re

_SQUASH = re.compile(r"[^a-z0-9]")


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

    def flag(text: str) -> None:
        squashed = _squash(text)
        for key, reason in banned.items():
            if key in squashed or key in squashed[::-1]:
                found.setdefault(key, reason)

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
    strings = _strings(tree)
    for text in strings:
        flag(text)
    flag("".join(strings))  # pieces glued together at run time
    return list(found.values())


def _without_magics(source: str) -> str:
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
