"""Static scan of answer cells: why a function delegates the work, named even on a path the tests do not take.

The answer runner refuses delegation at run time (``answer_runner.py``: an allowlist of
builtins, modules and names, and a guard on the concept's kernels), but only on the paths
the test inputs take. The scan reads the answer cells and names, per cell:

* ``llmcourse`` (the reference solution), as a module, a name or a string;
* the built-ins that compute the exercise's concepts (``policy.Concept.entry_points``:
  ``F.gelu``, ``.softmax``, ``nn.MultiheadAttention``) as attributes and imported names, and
  in string constants that look like a name or a dotted path (``getattr(F, "scaled_dot_"
  "product_attention")``, ``"uleg"[::-1]``), also spread over several such strings;
* what the runner's rules refuse: names and attributes starting with ``_`` (its own
  ``refused_syntax``), builtins graded code lacks (``eval``, ``vars``, ``open``) and
  imports outside the allowlist (``transformers``, ``importlib``, ``sys``).

Ordinary text is left alone: ``print("my gelu output:", y)``, ``cfg.layer_norm_eps`` or a
key ``"gelu_out"`` is not delegation. ``delegation_reasons`` charges a cell's findings to
every function and class the cell defines, wherever in the cell (inside ``if`` or ``try``
too), and to every function that calls one of them, in any cell.
"""
from __future__ import annotations

import ast
import builtins
import re

from .answer_runner import (
    FRAMES,
    INTROSPECTION,
    PRIVATE,
    SAFE_BUILTINS,
    defined_names,
    refused_syntax,
    strip_magics,
)

_SQUASH = re.compile(r"[^a-z0-9]")
_NAME_LIKE = re.compile(r"[A-Za-z0-9_.]+")  # a string that could be a name or a dotted path
_LLMCOURSE = "uses llmcourse (the reference solution)"
# The builtins graded code has (private names are refused_syntax's): as in the runner.
_AVAILABLE = {*SAFE_BUILTINS, "getattr", "setattr", "delattr", "hasattr"} | {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)}


def _squash(text: str) -> str:
    return _SQUASH.sub("", text.lower())


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(strip_magics(source))
    except SyntaxError:
        return None  # the runner reports the syntax error itself


def _strings(tree: ast.AST) -> list[str]:
    """String constants outside docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def _banned_names(policy: dict) -> dict[str, tuple[str, str | None]]:
    """Squashed name -> (a built-in's name, the concept it computes), for every concept's
    built-ins (``None`` for ``llmcourse``): ``F.layer_norm`` and ``nn.LayerNorm`` squash alike."""
    banned: dict[str, tuple[str, str | None]] = {"llmcourse": ("llmcourse", None)}
    for concept, spec in policy["concepts"].items():
        for dotted in spec["entry_points"]:
            name = dotted.rsplit(".", 1)[1]
            banned.setdefault(_squash(name), (name, concept))
    return banned


def _banned_reason(written: str, concept: str | None) -> str:
    """Why ``written`` (the name as the cell spells it) is refused."""
    if concept is None:
        return _LLMCOURSE
    return (f"uses {written}, which is not allowed in this exercise: it asks you to write {concept} "
            f"with tensor operations")


def _name_findings(tree: ast.Module, banned: dict[str, tuple[str, str | None]]) -> list[str]:
    """Reasons for every banned name used as an attribute, a module or imported name, or in
    strings, each naming what the cell wrote."""
    found: dict[str, str] = {}

    def flag(name: str, written: str | None = None, line: int | None = None) -> None:
        """``name``: one identifier or a dotted path; any part equal to a banned name counts.
        ``written``: how the cell spells it (``F.layer_norm``), ``line`` where."""
        for part in name.split("."):
            for squashed in (_squash(part), _squash(part)[::-1]):
                if squashed in banned:
                    said = (written or part)[:80] + (f" (line {line})" if line else "")
                    found.setdefault(squashed, _banned_reason(said, banned[squashed][1]))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            flag(node.attr, ast.unparse(node), node.lineno)
        elif isinstance(node, ast.Name) and _squash(node.id) == "llmcourse":
            flag(node.id, line=node.lineno)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                flag(alias.name, line=node.lineno)
            if isinstance(node, ast.ImportFrom) and node.module:
                flag(node.module, line=node.lineno)
    names = [text.strip() for text in _strings(tree) if _NAME_LIKE.fullmatch(text.strip())]
    for text in names:
        flag(text, repr(text))
    glued = _squash("".join(names))  # pieces glued together at run time
    for key, (name, concept) in banned.items():
        if (key in glued or key in glued[::-1]) and not any(key in _squash(t) or key in _squash(t)[::-1]
                                                             for t in names):
            found.setdefault(key, _banned_reason(" + ".join(repr(t) for t in names)[:80] + f" ({name})", concept))
    return list(found.values())


def _rule_findings(tree: ast.Module, modules: dict, bound: set[str]) -> list[str]:
    """Reasons for what the runner's allowlist refuses: private names, missing builtins, imports."""
    found = [f"uses {what} (line {line}), which is not allowed in this exercise: "
             f"{FRAMES if what.lstrip('.') in INTROSPECTION else PRIVATE}" for line, what in refused_syntax(tree)]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound
                and node.id not in _AVAILABLE and not node.id.startswith("_") and hasattr(builtins, node.id)):
            found.append(f"uses {node.id} (line {node.lineno}), which is not allowed in this exercise: "
                         f"graded code computes with tensors and plain Python, without {node.id}")
    offer = ", ".join(sorted({m.partition(".")[0] for m in modules if not m.startswith("_")}))
    for module in _imported_modules(tree, modules):
        if module.partition(".")[0] != "llmcourse":  # reported as llmcourse
            found.append(f"imports {module}, which is not available in this exercise (graded code may "
                         f"import {offer})")
    return list(dict.fromkeys(found))


def _imported_modules(tree: ast.Module, modules: dict) -> list[str]:
    """The modules (or names of modules) a cell imports that ``modules`` does not allow."""
    refused = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            refused += [alias.name for alias in node.names if alias.name not in modules]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if module not in modules:
                refused.append(module)
                continue
            names = modules[module]
            refused += [f"{module}.{alias.name}" for alias in node.names if alias.name != "*"
                        and f"{module}.{alias.name}" not in modules and names is not None and alias.name not in names]
    return refused


def cell_findings(source: str, policy: dict, bound: frozenset[str] = frozenset()) -> list[str]:
    """Why this answer cell delegates the work or breaks the allowlist (empty when it does
    neither). ``policy``: ``policy.runner_policy``'s; ``bound``: names the notebook's cells
    define, which are the student's own even where a builtin has the same name."""
    tree = _parse(source)
    if tree is None:
        return []
    return _name_findings(tree, _banned_names(policy)) + _rule_findings(tree, policy["modules"],
                                                                         bound | _bound_names(tree))


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name a cell binds: definitions, assignments, parameters, imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
    return names


def _references(tree: ast.Module) -> dict[str, set[str]]:
    """Name -> the names its definition uses: for each function and class anywhere in the
    cell, what its body reads (less its own parameters and locals); for each name the
    cell's module-level code assigns, what the assigned value reads."""
    refs: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = ast.Module(node.body + getattr(node, "decorator_list", []) + getattr(node, "bases", []), [])
            read = {n.id for n in ast.walk(body) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            own = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)} | {
                n.id for n in ast.walk(body) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            refs.setdefault(node.name, set()).update(read - own)
    for statement in tree.body:
        if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and statement.value is not None:
            read = {n.id for n in ast.walk(statement.value) if isinstance(n, ast.Name)}
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                    refs.setdefault(name, set()).update(read)
    return refs


def references(cells: list[dict]) -> dict[str, set[str]]:
    """Name -> the names its definitions read, over all ``cells`` (``{"source", ...}``):
    which of the notebook's functions each function calls."""
    refs: dict[str, set[str]] = {}
    for tree in filter(None, (_parse(cell["source"]) for cell in cells)):
        for name, used in _references(tree).items():
            refs.setdefault(name, set()).update(used)
    return refs


def delegation_reasons(cells: list[dict], policy: dict) -> dict[str, list[str]]:
    """Function name -> why it delegates the work ("*": every function, for a cell that
    defines none). ``cells``: the runner's (``{"id", "source", "solution"}``, answer and
    given cells); ``policy``: what the runner was sent (``policy.runner_policy``).

    A finding in an answer cell counts against every function and class defined anywhere
    in it, and against every function that calls one of those, directly or not, in any cell.
    """
    trees = [(cell, _parse(cell["source"])) for cell in cells]
    bound = frozenset().union(*(_bound_names(tree) for _, tree in trees if tree))
    reasons: dict[str, list[str]] = {}
    refs = references(cells)
    for cell, tree in trees:
        if tree is None:
            continue
        found = cell_findings(cell["source"], policy, bound) if cell["solution"] else []
        for name in (defined_names(tree) or {"*"}) if found else ():
            reasons.setdefault(name, []).extend(f"answer cell {cell['id']!r} {r}" for r in found)
    changed = True
    while changed:  # callers of charged functions, until nothing changes
        changed = False
        for name, used in refs.items():
            callee = next((c for c in sorted(used) if c in reasons and c != name), None)
            if callee and name not in reasons:
                reasons[name] = [f"{name} calls {callee}: {reasons[callee][0]}"]
                changed = True
    return reasons
