"""The package's layers: every module imports only from modules below it, so there is no
import cycle and no module depends on one that builds on it.

Imports are read from the source with ``ast``, so an import inside a function (the
usual way to hide a cycle) counts as much as one at the top of a file.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llmcourse"

# From the bottom up: a module may import only the modules listed before it. Names are
# relative to llmcourse; "finetune" is the package's __init__ (its modules come just
# before it), "" is llmcourse/__init__.py, and "grading" stands for every module of
# llmcourse/grading/.
LAYERS = [
    "config", "files",
    "tokenizer", "data",
    "attention",
    "model",
    "generate",
    "weights",
    "checkpoints",
    "train",
    "course",
    "finetune.shared", "finetune.spam", "finetune.baselines", "finetune.classifier", "finetune.instruct", "finetune.rouge",
    "finetune.judge", "finetune",
    "lora",
    "",
    "grading",
    "cli",
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(name: str) -> int:
    return LAYERS.index("grading" if name.split(".")[0] == "grading" else name)


def imported_modules(name: str) -> set[str]:
    """The llmcourse modules that module ``name`` imports, relative to llmcourse."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
                module = f"llmcourse.{module}" if module else "llmcourse"
            else:
                module = node.module
            # "from llmcourse import attention" imports the module llmcourse.attention.
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}".removeprefix("llmcourse.")
                       in MODULES else module for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "llmcourse" or target.startswith("llmcourse."):
                found.add(target.removeprefix("llmcourse").removeprefix("."))
    return found


def test_every_module_has_a_layer():
    missing = sorted(name for name in MODULES if name.split(".")[0] != "grading" and name not in LAYERS)
    assert not missing, f"modules without a place in LAYERS: {missing}"
    assert not set(LAYERS) - set(MODULES) - {"grading"}, "LAYERS names modules that do not exist"


def test_modules_import_only_from_layers_below():
    wrong = []
    for name in sorted(MODULES):
        for target in sorted(imported_modules(name)):
            # Inside the grading package the order is not a list but must have no cycle
            # (the next test); here only its imports of the library are checked.
            if name.split(".")[0] == target.split(".")[0] == "grading":
                continue
            if layer(target) >= layer(name):
                wrong.append(f"llmcourse.{name or '__init__'} imports llmcourse.{target or '__init__'}, "
                             f"which is not below it in LAYERS")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_anywhere():
    """Every module, the grading package's own included: following imports never leads
    back to where it started (e.g. the check framework never imports a chapter's checks)."""
    graph = {name: imported_modules(name) & set(MODULES) for name in MODULES}
    done, path = set(), []

    def visit(name):
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        path.append(name)
        for target in sorted(graph[name]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        assert not cycle, "import cycle: " + " -> ".join(f"llmcourse.{m}" for m in cycle)


def test_the_import_reader_sees_every_kind_of_import():
    """The checker itself, on forms the package uses: relative, absolute, lazy, submodule."""
    assert {"config", "attention"} <= imported_modules("model")
    assert "finetune.shared" in imported_modules("finetune.spam")  # from .shared import ...
    assert "files" in imported_modules("finetune.spam")  # from ..files import ...
    assert "attention" in imported_modules("grading.checks_ch3")  # from .. import attention as ref
    assert "train" in imported_modules("cli")  # inside a function
