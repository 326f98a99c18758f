"""The answer runner: runs a student's answer code in a fresh process and calls its functions.

Run by path in the sandbox, ``python -I answer_runner.py``, in a scratch folder, started
before the grader knows what it will run: it imports torch, then waits for its spec on
stdin (``wire.encode_spec``), so that its start overlaps the grader's own. It imports
nothing from ``llmcourse`` and makes ``llmcourse`` unimportable before any student code
runs (``scan.py`` imports this module for its syntax rule, so that the static scan reports
exactly what this refuses). Steps:

1. read the spec, block ``llmcourse``, then set up the policy of ``spec["policy"]``
   (``policy.runner_policy``);
2. execute the answer and given cells of the spec, in order, in one namespace, each with a
   time limit (SIGALRM), keeping going after errors as a notebook would;
3. create the ``ready`` file and only then read the inputs from stdin: a JSON header
   (which function to call with which arguments) and a safetensors blob;
4. call the functions and write ``outputs.json`` + ``outputs.safetensors``.

What graded code may use is an allowlist, enforced here at run time in three layers:

1. **builtins and imports**: cells run with a builtins dict of plain builtins only
   (``eval``, ``exec``, ``open``, ``vars``, ``globals``... refuse), ``getattr`` and its
   kin refuse private names, and ``import`` gives only the policy's modules, each as a
   ``ModuleView`` that shows its allowed public names (modules among them are views too);
2. **names**: a cell's syntax tree is checked before it runs (``refused_syntax``): no name
   or attribute starting with ``_`` (but the operator methods a class may define), no
   frame or traceback attribute. What lies below torch's public API (``torch._C``,
   ``f.__globals__``, ``type(x).__mro__``) and every way to undo these layers is out of reach;
3. **the concept**: a ``TorchDispatchMode`` (``ConceptGuard``) sees every aten kernel that
   runs while student code runs and refuses those that compute what the exercise asks for,
   whatever name led there (``F.softmin``, ``nn.MultiheadAttention``, ``getattr`` with a
   built string). The few public functions that compute it from ordinary kernels are
   replaced by refusals (``refuse_composites``).

A refusal is recorded by the guard before it is raised, so a student's ``except`` cannot
hide it: a refused call reports ``{"error": reason, "refused": reason}``, a refused cell
``{"id", "error": reason, "refused": reason}``, and a call of a function defined in a
refused cell is refused with that cell's reason. Nothing here decides a score; student
code can break this process, but then only its own outputs are missing.
"""
import ast
import builtins
import gc
import importlib
import json
import os
import signal
import struct
import sys
import traceback
import types

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch.utils._python_dispatch import TorchDispatchMode

_open, _exec, _compile, _dumps = builtins.open, builtins.exec, builtins.compile, json.dumps
_Tensor, _isinstance, _str, _exit = torch.Tensor, builtins.isinstance, builtins.str, os._exit
_TRACEBACK = BaseException.__traceback__  # the descriptor: an exception class cannot replace it


class CellTimeout(BaseException):
    """Raised in student code when a cell or call runs past its time limit."""


class Refused(BaseException):
    """Raised where graded code uses what the policy refuses (a BaseException, so that an
    ``except Exception`` does not swallow it; the guard has recorded it in any case)."""


class _BlockLlmcourse:
    """Meta-path finder that refuses ``llmcourse`` (all but the stub of ``llmcourse.grading``)."""

    def find_spec(self, name, path=None, target=None):
        if name == "llmcourse" or name.startswith("llmcourse."):
            raise ImportError("llmcourse is not available to graded code: write the answer yourself")
        return None


def block_llmcourse():
    sys.meta_path[:] = [f for f in sys.meta_path if "llmcourse" not in repr(f) and
                        "llmcourse" not in getattr(type(f), "__module__", "")]
    sys.meta_path.insert(0, _BlockLlmcourse())
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "llmcourse"))]
    for name in [m for m in sys.modules if m == "llmcourse" or m.startswith("llmcourse.")]:
        del sys.modules[name]
    # The notebook's given cell imports ``check`` for the visible tests; here it does nothing.
    package = types.ModuleType("llmcourse")
    package.__path__ = []
    grading = types.ModuleType("llmcourse.grading")
    grading.check = lambda *args, **kwargs: None
    package.grading = grading
    sys.modules["llmcourse"], sys.modules["llmcourse.grading"] = package, grading


# ---------------------------------------------------------------- layer 2: the names a cell may use

# Special methods a class in an answer may define, and read on any object: construction,
# calling, printing, containers, comparisons, arithmetic. Not the ones that reach an
# object's insides (__class__, __dict__, __globals__, __subclasses__), change attribute
# lookup (__getattr__), run at odd times (__del__, __init_subclass__, __set_name__),
# receive exceptions (__exit__) or hook into torch (__torch_function__).
SPECIAL_METHODS = frozenset("""
    __init__ __call__ __repr__ __str__ __len__ __getitem__ __setitem__ __delitem__ __iter__
    __next__ __contains__ __bool__ __hash__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __neg__
    __pos__ __abs__ __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__
    __truediv__ __rtruediv__ __itruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__
    __rpow__ __matmul__ __rmatmul__ __imatmul__ __float__ __int__ __index__
""".split()) | {"__name__", "__qualname__", "__doc__", "__version__"}  # plain strings
# Frames, code and tracebacks: from these, a function's globals (this runner's included).
INTROSPECTION = frozenset("""
    f_back f_builtins f_code f_globals f_locals f_trace f_lasti f_lineno gi_frame gi_code
    gi_yieldfrom cr_frame cr_code cr_await cr_origin ag_frame ag_code ag_await tb_frame tb_next
""".split())
PRIVATE = ("names starting with _ are not available to graded code (a class may define __init__, "
           "__call__ and the operator methods)")
FRAMES = "frame, code and traceback attributes are not available to graded code"


def attribute_allowed(name: str) -> bool:
    """An attribute graded code may read or write: public, or a plain special method."""
    return name in SPECIAL_METHODS or not (name.startswith("_") or name in INTROSPECTION)


def _name_allowed(name: str) -> bool:
    """A variable, function or class name: ``_helper`` is the student's own, ``__builtins__`` is not."""
    return name in SPECIAL_METHODS or not (name.startswith("__") and name.endswith("__"))


def refused_syntax(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, what)`` for every name in a cell's syntax tree that graded code may not use."""
    found = []
    for node in ast.walk(tree):
        attributes, names = [], []
        if isinstance(node, ast.Attribute):
            attributes = [node.attr]
        elif isinstance(node, ast.MatchClass):
            # `case C(__class__=c)` reads c.__class__; `case C(c)` reads the names C's
            # __match_args__ lists, which a class made with type() can set to "__globals__"
            attributes = node.kwd_attrs + ["__match_args__"] * bool(node.patterns)
        elif isinstance(node, ast.alias):
            attributes, names = node.name.split("."), [node.asname or ""]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.MatchAs,
                               ast.MatchStar, ast.ExceptHandler)):
            names = [node.name or ""]
        elif isinstance(node, ast.MatchMapping):
            names = [node.rest or ""]
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names = node.names
        elif isinstance(node, ast.arg):
            names = [node.arg]
        for name in attributes:
            if not attribute_allowed(name):
                found.append((getattr(node, "lineno", 0), f".{name}" if isinstance(node, ast.Attribute) else name))
        for name in names:
            if not _name_allowed(name):
                found.append((getattr(node, "lineno", 0), name))
    return sorted(found)


def defined_names(tree: ast.AST) -> set[str]:
    """The functions and classes a cell defines anywhere (inside ``if``, ``try`` or another
    function too) and the names its module-level code assigns."""
    names = set()

    def visit(node, top_level):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(child.name)
                visit(child, False)
                continue
            if top_level and isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
                names.add(child.id)
            visit(child, top_level and not isinstance(child, ast.Lambda))

    visit(tree, True)
    return names


class _ScrubCaughtExceptions(ast.NodeTransformer):
    """``except ... as e:`` starts with ``__scrub__(e)``: an ``AttributeError`` raised inside
    torch carries the object it failed on (``e.obj``), which may be a real module."""

    def visit_ExceptHandler(self, node):
        self.generic_visit(node)
        if node.name:
            scrub = ast.Expr(ast.Call(ast.Name("__scrub__", ast.Load()), [ast.Name(node.name, ast.Load())], []))
            node.body.insert(0, ast.copy_location(scrub, node))
        return node


def scrub(exception):
    """Drop what a caught exception could carry out of torch: the objects it names."""
    if _isinstance(exception, AttributeError):
        exception.obj = None
    if _isinstance(exception, BaseExceptionGroup):
        for inner in exception.exceptions:
            scrub(inner)
    exception.args = tuple(None if _isinstance(a, types.ModuleType) else a for a in exception.args)


# ---------------------------------------------------------------- layer 3: the concept, whatever the path

class ConceptGuard(TorchDispatchMode):
    """Refuses, while graded code runs, the aten kernels that compute an exercise's concept.

    Every public alias of a built-in (``torch.softmax``, ``x.softmax``, ``F.softmin``,
    ``nn.Softmax()``, ``torch.special.softmax``, ``getattr(F, "soft" + "max")``) ends in
    one of a few kernels (``aten._softmax``); this mode sees each kernel call, below every
    name. It also keeps who is running (a cell or a function), what that may not use, and
    the first refusal there, which ``refuse`` records before the exception is raised.
    """

    @classmethod
    def _should_skip_dynamo(cls):
        # Else torch wraps __torch_dispatch__ to keep torch.compile out of it, which imports
        # dynamo (2 s) at the first kernel; graded code cannot reach torch.compile anyway.
        return False

    def __init__(self, cells: list[dict], concepts: dict):
        super().__init__()
        self.sources = {f"<cell {c['id']}>": (c, c["source"].splitlines()) for c in cells}
        self.kernels = {}  # aten overload packet -> the concept it computes
        for concept, spec in concepts.items():
            for kernel in spec["kernels"]:
                if hasattr(torch.ops.aten, kernel):
                    self.kernels[getattr(torch.ops.aten, kernel)] = concept
        self.everything = frozenset(concepts)
        self.runner()

    def start(self, who: str, concepts) -> None:
        """From now on ``who`` runs and may not use ``concepts``; no refusal yet."""
        self.who, self.active, self.refusal = who, frozenset(concepts), None

    def runner(self) -> None:
        """From now on this runner's own code runs (it reads the inputs, writes the outputs).
        It may call methods graded code replaced (``torch.Tensor.view = ...``): those run
        refused every concept."""
        self.start("the runner", self.everything)

    def refuse(self, what: str, why: str, where: str | None = None) -> Refused:
        """Record that ``what`` was used (the first refusal of a call or cell is the one
        reported) and return the exception to raise."""
        reason = f"{self.who} used {what}{self.where() if where is None else where}, which is not allowed " \
                 f"in this exercise: {why}"
        if self.refusal is None:
            self.refusal = reason
        return Refused(reason)

    def where(self) -> str:
        """`` (line 3 of cell 'sdpa': `...`)``: the innermost line of student code running."""
        frame = sys._getframe(1)
        while frame is not None:
            found = self.line_of(frame.f_code.co_filename, frame.f_lineno)
            if found:
                return found
            frame = frame.f_back
        return ""

    def raised_where(self, error: BaseException) -> str:
        """The same for an exception: the innermost line of student code its traceback
        went through (read through the real descriptor and types, whatever the class says)."""
        tb, found = _TRACEBACK.__get__(error), ""
        for _ in range(1000):
            if not _isinstance(tb, types.TracebackType):
                break
            found = self.line_of(tb.tb_frame.f_code.co_filename, tb.tb_lineno) or found
            tb = tb.tb_next
        return found

    def line_of(self, filename, lineno) -> str:
        found = self.sources.get(filename) if _isinstance(filename, _str) else None
        if not found or not _isinstance(lineno, int):
            return ""
        cell, lines = found
        text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        return f" (line {lineno} of cell {cell['id']!r}: `{text[:120]}`)"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if types:  # its handler would run graded code with this mode off
            raise self.refuse(f"a tensor subclass with its own __torch_dispatch__ ({types[0].__name__})",
                              "graded code computes with plain tensors")
        concept = self.kernels.get(func.overloadpacket)
        if concept in self.active:
            raise self.refuse(f"torch.ops.aten.{func.overloadpacket.__name__}",
                              f"it asks you to write {concept} with tensor operations")
        return func(*args, **(kwargs or {}))


def refuse_composites(concepts: dict, guard: ConceptGuard) -> None:
    """Replace each public function that computes a concept out of ordinary kernels (which
    the guard cannot tell from honest code) by one that refuses while that concept is."""
    for concept, spec in concepts.items():
        for dotted in spec["composites"]:
            owner_name, _, attr = dotted.rpartition(".")
            owner = importlib.import_module(owner_name)
            if hasattr(owner, attr):
                setattr(owner, attr, _composite(getattr(owner, attr), dotted, concept, guard))


def _composite(original, dotted: str, concept: str, guard: ConceptGuard):
    def composite(*args, **kwargs):
        if concept in guard.active:
            raise guard.refuse(dotted, f"it asks you to write {concept} with tensor operations")
        return original(*args, **kwargs)
    return composite


def close_raw_access(guard: ConceptGuard) -> None:
    """Public torch and numpy methods that turn graded code's data into an import or raw
    memory, past the layers above: a storage's ``.type("pkg.name")`` imports any module
    (and its errors carry it), a numpy array's ``.ctypes`` reads and writes any address."""
    import numpy._core._internal as numpy_internal
    import safetensors
    import torch.storage

    to_type, to_ctypes = torch.storage._type, numpy_internal._ctypes
    safetensors_code = os.path.dirname(safetensors.__file__)

    def storage_type(self, dtype=None, non_blocking=False, **kwargs):
        if _isinstance(dtype, _str):
            raise guard.refuse(f"storage.type({dtype!r})", "it imports a module by name")
        return to_type(self, dtype, non_blocking, **kwargs)

    def array_ctypes(*args, **kwargs):
        # Only safetensors, writing the outputs, may (graded code cannot call it).
        if not sys._getframe(1).f_code.co_filename.startswith(safetensors_code):
            raise guard.refuse("ndarray.ctypes", "it reads and writes raw memory")
        return to_ctypes(*args, **kwargs)

    torch.storage._type, numpy_internal._ctypes = storage_type, array_ctypes


# ---------------------------------------------------------------- layer 1: builtins and imports

# Everything else in ``builtins`` refuses when called: eval, exec, compile, open, input,
# globals, locals, vars, breakpoint, help, memoryview, exit.
SAFE_BUILTINS = """
    abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict dir divmod
    enumerate filter float format frozenset hash hex id int isinstance issubclass iter len list map
    max min next object oct ord pow print property range repr reversed round set slice sorted
    staticmethod str sum super tuple type zip aiter anext True False None Ellipsis NotImplemented
    __build_class__ __debug__
""".split()


class ModuleView(types.ModuleType):
    """What graded code sees of a module: the public names the policy allows (``names``,
    None for all), modules among them as views too; an assignment (``torch.allclose = f``)
    changes the view only. Private names raise ``AttributeError`` (Python's own lookups
    ask for some, such as ``__loader__``); graded code cannot even ask for them (layer 2)."""

    def __init__(self, module: types.ModuleType, names, importer):
        super().__init__(module.__name__, module.__doc__)
        self._module, self._names, self._importer = module, None if names is None else frozenset(names), importer

    def __dir__(self):
        return sorted(n for n in dir(self._module) if self._shows(n))

    def _shows(self, name: str) -> bool:
        submodule = f"{self._module.__name__}.{name}" in self._importer.modules
        return not name.startswith("_") and (self._names is None or name in self._names or submodule)

    def __getattr__(self, name):
        module = self._module
        if name == "__all__":  # `from torch import *`
            return [n for n in self.__dir__() if not _isinstance(getattr(module, n, None), types.ModuleType)]
        if name == "__version__" and _isinstance(getattr(module, name, None), _str):
            return _str(module.__version__)
        if name.startswith("_"):
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        if not self._shows(name):
            raise self._importer.guard.refuse(
                f"{module.__name__}.{name}", f"graded code sees {module.__name__}'s tensor operations, not {name}")
        try:
            value = getattr(module, name)
        except AttributeError:
            value = sys.modules.get(f"{module.__name__}.{name}")  # where `from a import b` would look
            if value is None:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None
        if _isinstance(value, types.ModuleType):
            value = self._importer.view(value.__name__)
        setattr(self, name, value)
        return value


class Importer:
    """Graded code's ``__import__``: the policy's modules only, as ``ModuleView``s."""

    def __init__(self, modules: dict, guard: ConceptGuard):
        self.modules = {**modules, "llmcourse.grading": ["check"]}  # the stub the given cell imports
        self.guard, self.views = guard, {}
        tops = sorted({m.partition(".")[0] for m in modules if not m.startswith("_")})
        self.offer = f"graded code may import {', '.join(tops)}"

    def view(self, name: str) -> ModuleView:
        if name not in self.modules:
            raise self.guard.refuse(f"the module {name}", self.offer)
        if name not in self.views:
            self.views[name] = ModuleView(importlib.import_module(name), self.modules[name], self)
        return self.views[name]

    def __call__(self, name, globals_=None, locals_=None, fromlist=(), level=0):
        if type(fromlist) is list and not fromlist:
            # C code importing for itself (PyImport_Import, while graded code's frame is the
            # current one): it takes the module from sys.modules, graded code never sees it.
            return importlib.import_module(name)
        if level:
            raise self.guard.refuse("a relative import", self.offer)
        module = self.view(name)
        if not fromlist:
            return self.view(name.partition(".")[0])  # `import torch.nn` binds torch
        for item in fromlist:
            if item == "*":
                continue
            if item.startswith("_"):
                raise self.guard.refuse(f"{name}.{item}", PRIVATE)
            if f"{name}.{item}" in self.modules:
                self.view(f"{name}.{item}")
            elif not hasattr(module, item):
                # Said here: were `from` to find no attribute, Python would look in sys.modules.
                raise ImportError(f"cannot import name {item!r} from {name!r}")
        return module


def _checked(function, guard: ConceptGuard):
    """``getattr`` and its kin, refusing the names graded code may not write (layer 2)."""
    def checked(obj, name, *rest):
        if _isinstance(name, _str) and not attribute_allowed(name):
            raise guard.refuse(f"{function.__name__}(..., {name!r})", PRIVATE)
        return function(obj, name, *rest)
    checked.__name__ = checked.__qualname__ = function.__name__
    return checked


def _unavailable(name: str, guard: ConceptGuard):
    def unavailable(*args, **kwargs):
        raise guard.refuse(f"{name}()", "graded code computes with tensors and plain Python, "
                                        f"without {name}")
    unavailable.__name__ = unavailable.__qualname__ = name
    return unavailable


def safe_builtins(importer: Importer, guard: ConceptGuard) -> dict:
    """The ``__builtins__`` of graded code (see ``SAFE_BUILTINS``)."""
    allowed = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    allowed.update((name, value) for name, value in vars(builtins).items()
                   if _isinstance(value, type) and issubclass(value, BaseException))
    allowed.update((name, _unavailable(name, guard)) for name in vars(builtins)
                   if name not in allowed and not name.startswith("_"))
    allowed.update({"__import__": importer, "__scrub__": scrub, "__name__": "builtins"},
                   **{f.__name__: _checked(f, guard) for f in (getattr, setattr, delattr, hasattr)})
    return allowed


# ---------------------------------------------------------------- running the cells and the calls

def _alarm(signum, frame):
    raise CellTimeout()


def run_limited(fn, seconds):
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def strip_magics(source):
    """IPython lines (``%matplotlib``, ``!pip``) are not Python: each becomes ``pass`` at its
    own indentation, so line numbers and the blocks around it stay as they were."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        code = line.lstrip()
        if code.startswith(("%", "!")):
            lines[i] = line[:len(line) - len(code)] + "pass  # " + code
    return "\n".join(lines)


def compile_cell(tree: ast.Module, cell: dict, guard: ConceptGuard):
    """The code of a cell, once its names pass layer 2 (``Refused`` otherwise)."""
    problems = refused_syntax(tree)
    if problems:
        line, what = problems[0]
        lines = cell["source"].splitlines()
        text = lines[line - 1].strip()[:120] if 0 < line <= len(lines) else ""
        why = FRAMES if what.lstrip(".") in INTROSPECTION else PRIVATE
        raise guard.refuse(what, why, where=f" (line {line}: `{text}`)")
    tree = ast.fix_missing_locations(_ScrubCaughtExceptions().visit(tree))
    return _compile(tree, f"<cell {cell['id']}>", "exec")


def execute_cells(cells, namespace, guard: ConceptGuard, seconds):
    """Run every cell; returns the report and, for each name a refused cell defines, why."""
    report, refused = [], {}
    for cell in cells:
        guard.start(f"{'answer' if cell.get('solution', True) else 'given'} cell {cell['id']!r}", guard.everything)
        tree, error = None, None
        try:
            tree = ast.parse(strip_magics(cell["source"]), f"<cell {cell['id']}>")
            code = compile_cell(tree, cell, guard)
            run_limited(lambda: _exec(code, namespace), seconds)
        except CellTimeout:
            error = f"cell time limit ({seconds:g} s)"
        except BaseException as e:  # noqa: BLE001 -- SystemExit included: a cell cannot end the runner
            error = _describe_error(e)
        if guard.refusal:
            error = guard.refusal
            refused.update(dict.fromkeys(defined_names(tree) if tree else (), guard.refusal))
        report.append({"id": cell["id"], "error": error, "refused": guard.refusal})
    return report, refused


def _describe_error(e):
    lines = traceback.format_exception_only(type(e), e)
    return "".join(lines).strip()[-500:]


def read_message():
    """A length-prefixed JSON object from stdin (the spec, the inputs' header); the parent
    closing stdin first (it gave up on this run) ends the runner."""
    stdin = sys.stdin.buffer
    prefix = stdin.read(8)
    if len(prefix) < 8:
        _exit(1)
    return json.loads(stdin.read(struct.unpack("<Q", prefix)[0]))


def read_inputs():
    """The header and tensors the parent sends once the student code has run."""
    header = read_message()
    tensors = _st_load(sys.stdin.buffer.read())
    return header, tensors


def encode(value, key, tensors):
    """A JSON description of ``value``; tensors go into ``tensors`` under ``key``."""
    if _isinstance(value, _Tensor):
        tensors[key] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if _isinstance(value, (tuple, list)):
        return {"tuple": [encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    for plain in (bool, int, float, _str):  # a subclass's methods run here, under the guard, not in json
        if _isinstance(value, plain):
            return {"value": plain(value)}
    if value is None:
        return {"value": None}
    return {"unsupported": _str(type(value).__name__)[:100]}


def call_all(header, tensors, namespace, guard: ConceptGuard, functions: dict, refused: dict, seconds):
    """Call each function on its inputs, under its exercise's policy (``functions``)."""
    results, out_tensors = {}, {}
    for call in header["calls"]:
        key, name = call["key"], call["function"]
        guard.start(name, functions.get(name, guard.everything))
        fn = namespace.get(name)
        args = [tensors[a["tensor"]].clone() if "tensor" in a else a["value"] for a in call["args"]]
        if name in refused:
            results[key] = {"error": f"{name} was refused with its cell: {refused[name]}", "refused": refused[name]}
            continue
        if not callable(fn):
            results[key] = {"error": f"{name} is not defined (did its cell run without errors?)"}
            continue
        try:
            # Encoded here, under the guard: a returned object's methods are graded code too. The
            # arguments go back too where the task says to leave them alone: the parent compares.
            def called():
                result = {"output": encode(fn(*args), key, out_tensors)}
                if call.get("keep_inputs") is True:
                    result["inputs_after"] = encode(tuple(args), f"{key}.in", out_tensors)
                return result
            results[key] = run_limited(called, seconds)
        except CellTimeout:
            results[key] = {"error": f"time limit ({seconds:g} s) while calling {name}"}
        except NotImplementedError:
            results[key] = {"error": f"{name} is not written yet (NotImplementedError)"}
        except BaseException as e:  # noqa: BLE001
            raised = _describe_error(e) + guard.raised_where(e)
            results[key] = {"error": f"{name} raised {raised}", "raised": raised}
        if guard.refusal:  # whatever the function caught
            results[key] = {"error": guard.refusal, "refused": guard.refusal}
    return results, out_tensors


def main():
    spec = read_message()
    block_llmcourse()
    gc.disable()  # a collection could run a student object's finalizer inside the guard's own handler
    policy = spec["policy"]
    guard = ConceptGuard(spec["cells"], policy["concepts"])
    refuse_composites(policy["concepts"], guard)
    close_raw_access(guard)
    importer = Importer(policy["modules"], guard)
    namespace = {"__name__": "__main__", "__builtins__": safe_builtins(importer, guard)}
    with guard:
        cell_report, refused = execute_cells(spec["cells"], namespace, guard, spec["cell_timeout"])
        guard.runner()
        with _open(spec["ready_file"], "w") as f:
            f.write("ready")
        header, tensors = read_inputs()
        results, out_tensors = call_all(header, tensors, namespace, guard, policy["functions"], refused,
                                        spec["cell_timeout"])
        guard.runner()
        with _open("outputs.safetensors", "wb") as f:
            f.write(_st_save(out_tensors))
        with _open("outputs.json", "w") as f:
            f.write(_dumps({"cells": cell_report, "calls": results}))
    sys.stdout.flush()
    _exit(0)  # no atexit handlers or finalizers the student may have registered


if __name__ == "__main__":
    main()
