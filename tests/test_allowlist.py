"""The answer runner's allowlist: delegation is refused with a reason, honest code never is.

Every attack below is run for real: the answer runner in the sandbox, as grading runs it,
with the policy ``policy.runner_policy`` builds from the chapter's checks. Each suite of
attacks runs in one runner process (one cell per attack, each defining a function under a
name of its own, refused the chapter's concept while it runs), so that a suite costs one
sandbox start. Honest answers in many styles, and the solution notebook of every chapter,
must come back unrefused and right (judged with the checks, against ``llmcourse``).
The static scan (``scan.py``) is checked on its own at the end.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from llmcourse.grading import answer_runner
from llmcourse.grading.checks import judge, make_cases
from llmcourse.grading.intake import runner_cells
from llmcourse.grading.policy import ATTENTION, CROSS_ENTROPY, GELU, LAYER_NORM, SOFTMAX, runner_policy, torch_names
from llmcourse.grading.registry import REGISTRY
from llmcourse.grading.sandbox import Limits, Stdin, run_isolated
from llmcourse.grading.scan import cell_findings, delegation_reasons
from llmcourse.grading.wire import decode_output, encode_inputs, encode_spec

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(answer_runner.__file__).resolve()
LIMITS = Limits(wall_s=240, cell_s=20)
GIVEN = {"id": "imports", "source": "import math\n\nimport torch\n\nfrom llmcourse.grading import check",
         "solution": False}
pytestmark = pytest.mark.xdist_group("allowlist")


def start_runner(workdir: Path, cells: list[dict], calls: list[tuple[str, str, tuple]], policy: dict):
    """Run the answer runner in the sandbox, as grading does; returns ``run_isolated``'s result."""
    spec = {"cells": cells, "policy": policy, "cell_timeout": LIMITS.cell_s, "ready_file": "ready"}
    return run_isolated([sys.executable, "-I", str(RUNNER)], workdir, LIMITS,
                        stdin=[Stdin(encode_spec(spec)), Stdin(encode_inputs(calls), after="ready")])


def run_runner(workdir: Path, cells: list[dict], calls: list[tuple[str, str, tuple]], policy: dict) -> dict:
    """The runner's outputs (``{"cells": [...], "calls": {key: ...}}``), tensors decoded."""
    from safetensors.torch import load

    result = start_runner(workdir, cells, calls, policy)
    assert result.returncode == 0 and not result.reason, (result.reason, result.stderr.decode()[-3000:])
    outputs = json.loads((workdir / "outputs.json").read_text())
    tensors = load((workdir / "outputs.safetensors").read_bytes())
    for out in outputs["calls"].values():
        if "output" in out:
            out["value"] = decode_output(out["output"], tensors)
    return outputs


def chapter_policy(chapter: str, extra: dict[str, list[str]] | None = None) -> dict:
    """The policy grading sends for ``chapter``, plus functions of the tests' own (name -> concepts)."""
    policy = runner_policy([c for i, c in REGISTRY.items() if i.startswith(chapter + ".")])
    policy["functions"].update(extra or {})
    return policy


def attack_cells(attacks: dict[str, str]) -> list[dict]:
    return [GIVEN] + [{"id": name, "source": source, "solution": True} for name, source in attacks.items()]


# ---------------------------------------------------------------- attacks on chapter 3 (attention)

# Each defines ``<name>(x)``, x (2, 5, 8), and tries to get attention computed for it.
QKV = "    q = k = v = x.view(2, 5, 2, 4).transpose(1, 2)\n"
MHA_LAYER = ("    layer = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()\n")
ATTENTION_ATTACKS = {
    # torch internals below the public API
    "aten_flash": ("import torch\ndef aten_flash(x):\n" + QKV +
                   "    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]", "._scaled_dot"),
    "aten_public_op": ("def aten_public_op(x):\n" + QKV + "    return torch.ops.aten.scaled_dot_product_attention(q, k, v)",
                       "torch.ops"),
    "c_nn": ("def c_nn(x):\n" + QKV + "    return torch._C._nn.scaled_dot_product_attention(q, k, v)", "._C"),
    "native_mha": (("def native_mha(x):\n    w = torch.randn(24, 8)\n    return torch._native_multi_head_attention("
                   "x, x, x, 8, 2, w, torch.zeros(24), torch.randn(8, 8), torch.zeros(8))[0]"),
                   "._native_multi_head_attention"),
    "ops_via_getattr": ("def ops_via_getattr(x):\n" + QKV + "    ops = getattr(torch, 'o' + 'ps')\n"
                        "    return ops.aten.scaled_dot_product_attention(q, k, v)", "torch.ops"),
    "private_via_getattr": ("def private_via_getattr(x):\n    return getattr(torch, '_' + 'C')", "getattr(..., '_C')"),
    # other packages, and the import machinery
    "transformers": ("import transformers\ndef transformers_attention(x):\n    return x", "the module transformers"),
    "transformers_from": ("from transformers.models.gpt2 import modeling_gpt2\ndef gpt2(x):\n    return x",
                          "the module transformers.models.gpt2"),
    "importlib": ("def importlib_attention(x):\n    import importlib\n    F = importlib.import_module('torch.nn.functional')\n"
                  + QKV + "    return F.scaled_dot_product_attention(q, k, v)", "the module importlib"),
    "dunder_import": ("def dunder_import(x):\n    F = __import__('torch.nn.functional', fromlist=['x'])\n"
                      + QKV + "    return F.scaled_dot_product_attention(q, k, v)", "__import__"),
    "sys_modules": ("def sys_modules(x):\n    import sys\n    return sys.modules['torch']", "the module sys"),
    "builtins_module": ("import builtins\ndef builtins_module(x):\n    return x", "the module builtins"),
    "numpy": ("import numpy\ndef numpy_attention(x):\n    return x", "the module numpy"),
    # names built at run time, and the ways around a module's attributes
    "built_name": ("import torch.nn.functional as F\ndef built_name(x):\n" + QKV +
                   "    return getattr(F, 'scaled_dot' + '_product_attention')(q, k, v)",
                   "torch.ops.aten._scaled_dot_product_flash_attention_for_cpu"),
    "vars": ("def vars_of_torch(x):\n    return vars(torch)['ops']", "vars()"),
    "module_dict": ("def module_dict(x):\n    return torch.__dict__['_C']", ".__dict__"),
    "eval": ("def eval_attention(x):\n" + QKV + "    return eval('torch.nn.functional.scaled_dot_product_attention')(q, k, v)",
             "eval()"),
    "exec": ("def exec_attention(x):\n    exec('import os')\n    return x", "exec()"),
    "mro": ("def mro(x):\n    return type(x).__mro__[-1].__subclasses__()", ".__mro__"),
    "func_globals": ("def func_globals(x):\n    return torch.nn.functional.softmax.__globals__['torch']", ".__globals__"),
    "frames": ("def frames(x):\n    def g():\n        yield g_.gi_frame.f_back.f_globals\n    g_ = g()\n    return next(g_)",
               "frame, code and traceback"),
    "match_class": ("def match_class(x):\n    match x:\n        case object(__class__=c):\n            return c\n",
                    "__class__"),
    "match_args": (("Meta = type('Meta', (type,), {'__instancecheck__': lambda cls, obj: True})\n"
                   "C = Meta('C', (), {'__match_args__': ('__globals__',)})\n"
                   "def match_args(x):\n    match torch.nn.functional.softmax:\n        case C(g):\n"
                   "            return g['torch']"), "__match_args__"),
    "view_module_attribute": ("def view_module_attribute(x):\n" + QKV +
                              "    return torch.nn.functional.torch.ops.aten.scaled_dot_product_attention(q, k, v)",
                              "torch.ops"),
    "compile": ("def compile_attention(x):\n    return torch.compile(lambda t: t)(x)", "torch.compile"),
    "dispatch_guard": ("def dispatch_guard(x):\n    with torch.ExcludeDispatchKeyGuard(None):\n        return x",
                       "torch.ExcludeDispatchKeyGuard"),
    "library": ("def library(x):\n    return torch.library.Library('aten', 'IMPL')", "torch.library"),
    "storage_type": (("def storage_type(x):\n    try:\n        x.untyped_storage().type('torch.nonexistent')\n"
                     "    except AttributeError as e:\n        return e.obj.ops\n"), "storage.type('torch.nonexistent')"),
    "ndarray_ctypes": ("def ndarray_ctypes(x):\n    return type(x.numpy().ctypes.shape).from_address(0)", "ndarray.ctypes"),
    "dispatch_subclass": (("def handler(cls, func, types, args=(), kwargs=None):\n    return x\n"
                          "S = type('S', (torch.Tensor,), {'__torch_dispatch__': classmethod(handler)})\n"
                          "def dispatch_subclass(x):\n    return x.as_subclass(S) + 1"), "__torch_dispatch__"),
    # the concept through public modules and functions
    "sdpa_4d": ("import torch.nn.functional as F\ndef sdpa_4d(x):\n" + QKV + "    return F.scaled_dot_product_attention(q, k, v)",
                "_scaled_dot_product_flash_attention_for_cpu"),
    "sdpa_3d_math_path": ("def sdpa_3d_math_path(x):\n    return torch.nn.functional.scaled_dot_product_attention(x, x, x)",
                          "_safe_softmax"),
    "sdpa_dropout": ("def sdpa_dropout(x):\n" + QKV +
                     "    return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.5)", "_safe_softmax"),
    "mha_module_weights": ("def mha_module_weights(x):\n" + MHA_LAYER + "    return layer(x, x, x)[0]",
                           "torch.nn.functional.multi_head_attention_forward"),
    "mha_module_no_weights": ("def mha_module_no_weights(x):\n" + MHA_LAYER + "    with torch.no_grad():\n"
                              "        return layer(x, x, x, need_weights=False)[0]", "aten._native_multi_head_attention"),
    "mha_function": (("def mha_function(x):\n    t = x.transpose(0, 1)\n    return torch.nn.functional."
                     "multi_head_attention_forward(t, t, t, 8, 2, torch.randn(24, 8), None, None, None, False, 0.0, "
                     "torch.randn(8, 8), None)[0]"), "multi_head_attention_forward"),
    "encoder_layer": (("def encoder_layer(x):\n    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)"
                      ".eval()\n    with torch.no_grad():\n        return layer(x)"), "aten._transformer_encoder_layer_fwd"),
    # where the delegation hides: a nested definition next to a decoy, a swallowed refusal
    "nested_decoy": ("def nested_decoy_helper():\n    pass\nif True:\n    try:\n        def nested_decoy(x):\n" +
                     QKV.replace("    ", "            ", 1) +
                     "            return torch.nn.functional.scaled_dot_product_attention(q, k, v)\n"
                     "    except Exception:\n        pass", "_scaled_dot_product_flash_attention_for_cpu"),
    "swallowed": ("def swallowed(x):\n" + QKV + "    try:\n        return torch.nn.functional.scaled_dot_product_attention(q, k, v)\n"
                  "    except BaseException:\n        return torch.softmax(q @ k.transpose(-2, -1), -1) @ v",
                  "_scaled_dot_product_flash_attention_for_cpu"),
    "helper_in_class": ("class Attention(torch.nn.Module):\n    def forward(self, q, k, v):\n"
                        "        return torch.nn.functional.scaled_dot_product_attention(q, k, v)\n"
                        "def helper_in_class(x):\n" + QKV + "    return Attention()(q, k, v)",
                        "_scaled_dot_product_flash_attention_for_cpu"),
}
# Escapes that fail without a refusal: what they reach is not there.
NOT_REACHED = {
    # A view renamed "torch": were `from` to miss, Python would look up sys.modules["torch.utils"].
    "renamed_view": (("def renamed_view(x):\n    F = torch.nn.functional\n    super(type(F), F).__init__('torch')\n"
                     "    from torch.nn.functional import utils\n    return utils"), "cannot import name 'utils'"),
}
# Functions named differently from their attack (one cell may define several).
ATTENTION_FUNCTIONS = {"transformers": "transformers_attention", "transformers_from": "gpt2",
                       "importlib": "importlib_attention", "numpy": "numpy_attention", "vars": "vars_of_torch",
                       "eval": "eval_attention", "exec": "exec_attention", "compile": "compile_attention"}


def _attack_outputs(tmp_path_factory, name: str, chapter: str, attacks: dict, functions: dict, concept: str,
                    x: torch.Tensor) -> dict:
    names = [functions.get(a, a) for a in attacks]
    policy = chapter_policy(chapter, {n: [concept] for n in names})
    calls = [(a, functions.get(a, a), (x,)) for a in attacks]
    return run_runner(tmp_path_factory.mktemp(name), attack_cells({a: s for a, (s, _) in attacks.items()}),
                      calls, policy)


@pytest.fixture(scope="module")
def attention_attacks(tmp_path_factory):
    return _attack_outputs(tmp_path_factory, "attention", "ch3", {**ATTENTION_ATTACKS, **NOT_REACHED},
                           ATTENTION_FUNCTIONS, "attention", torch.randn(2, 5, 8))


@pytest.mark.parametrize("attack", NOT_REACHED)
def test_escapes_reach_nothing(attention_attacks, attack):
    out = attention_attacks["calls"][attack]
    assert "value" not in out and NOT_REACHED[attack][1] in out["error"], out


@pytest.mark.parametrize("attack", ATTENTION_ATTACKS)
def test_attention_attacks_are_refused(attention_attacks, attack):
    out = attention_attacks["calls"][attack]
    phrase = ATTENTION_ATTACKS[attack][1]
    assert "refused" in out, f"{attack} was not refused: {out}"
    assert phrase in out["refused"] and "not allowed in this exercise" in out["refused"], out["refused"]
    assert out["error"] == out["refused"] or out["refused"] in out["error"]


def test_a_refusal_names_the_line_and_the_concept(attention_attacks):
    reason = attention_attacks["calls"]["sdpa_4d"]["refused"]
    assert reason.startswith("sdpa_4d used torch.ops.aten._scaled_dot_product_flash_attention_for_cpu (line 4 of "
                             "cell 'sdpa_4d': `return F.scaled_dot_product_attention(q, k, v)`)"), reason
    assert reason.endswith("it asks you to write attention with tensor operations")
    refused_cells = {c["id"]: c for c in attention_attacks["cells"] if c["refused"]}
    assert "the module transformers" in refused_cells["transformers"]["error"]
    assert "given" not in json.dumps(refused_cells)  # the given cell runs unrefused


# Replaced torch methods that the runner's own code calls, after the function returned or
# before it was called: reading the inputs calls ``reshape``, writing the outputs ``contiguous``.
LATER = {
    "while_reading_inputs": """
STASH = []
_reshape = torch.Tensor.reshape

def reshape(self, *shape):
    out = _reshape(self, *shape)
    if out.dim() == 3:
        STASH.append(torch.nn.functional.scaled_dot_product_attention(out, out, out))
    return out

torch.Tensor.reshape = reshape

def later(x):
    return STASH[-1] if STASH else x""",
    "while_writing_outputs": """
STASH = []
_contiguous = torch.Tensor.contiguous

def contiguous(self, *args, **kwargs):
    for x in STASH:
        x.copy_(torch.nn.functional.scaled_dot_product_attention(x, x, x))
    return _contiguous(self, *args, **kwargs)

torch.Tensor.contiguous = contiguous

def later(x):
    STASH.append(x)
    return x""",
}


@pytest.mark.parametrize("attack", LATER)
def test_graded_code_cannot_compute_later_in_the_runners_code(tmp_path, attack):
    """Graded code runs under the guard even when the runner's own code calls it: it
    is refused there too (and the run then ends without outputs)."""
    result = start_runner(tmp_path, attack_cells({"later": LATER[attack]}), [("c", "later", (torch.randn(2, 5, 8),))],
                          chapter_policy("ch3", {"later": ["attention"]}))
    outputs = tmp_path / "outputs.json"
    reason = (json.loads(outputs.read_text())["calls"]["c"]["refused"] if outputs.exists()
              else result.stderr.decode().strip().splitlines()[-1])
    assert "used torch.ops.aten._safe_softmax" in reason and "scaled_dot_product_attention(" in reason, reason


# ---------------------------------------------------------------- chapter 2 (softmax) and chapter 4

SOFTMAX_ATTACKS = {
    "torch_softmax": ("def torch_softmax(x):\n    return torch.softmax(x, -1)", "aten._softmax"),
    "method": ("def method(x):\n    return x.softmax(-1)", "aten._softmax"),
    "softmin": ("import torch.nn.functional as F\ndef softmin(x):\n    return F.softmin(-x, dim=-1)", "aten._softmax"),
    "special": ("def special(x):\n    return torch.special.softmax(x, -1)", "aten._softmax"),
    "module": ("from torch import nn\ndef module(x):\n    return nn.Softmax(dim=-1)(x)", "aten._softmax"),
    "log_softmax_exp": ("def log_softmax_exp(x):\n    return x.log_softmax(-1).exp()", "aten._log_softmax"),
    "built_name": ("def built_name(x):\n    return getattr(torch.nn.functional, 'soft' + 'max')(x, -1)", "aten._softmax"),
    "gumbel": ("def gumbel(x):\n    return torch.nn.functional.gumbel_softmax(x, tau=1.0)", "aten._softmax"),
    "categorical": ("def categorical(x):\n    return torch.distributions.Categorical(logits=x).probs",
                    "torch.distributions"),
    "via_attention": (("def via_attention(x):\n    eye = torch.eye(x.size(-1))\n    q = x[None, None]\n"
                      "    k = eye[None, None] * x.size(-1) ** 0.5\n"
                      "    return torch.nn.functional.scaled_dot_product_attention(q, k, eye[None, None])[0, 0]"),
                      "_scaled_dot_product_flash_attention_for_cpu"),
    "via_mha": ("def via_mha(x):\n    layer = torch.nn.MultiheadAttention(x.size(-1), 1)\n    return layer(x, x, x)[1]",
                "multi_head_attention_forward"),
    "swallowed": (("def swallowed(x):\n    try:\n        return torch.softmax(x, -1)\n    except BaseException:\n"
                  "        e = torch.exp(x - x.max(-1, keepdim=True).values)\n        return e / e.sum(-1, keepdim=True)"),
                  "aten._softmax"),
    "logsumexp": ("def logsumexp(x):\n    return torch.exp(x - torch.logsumexp(x, -1, keepdim=True))", "aten.logsumexp"),
    "logsumexp_gradient": (("def logsumexp_gradient(x):\n    x = x.detach().requires_grad_()\n"
                           "    return torch.autograd.grad(x.logsumexp(-1).sum(), x)[0]"), "aten.logsumexp"),
}
LAYER_NORM_ATTACKS = {
    "functional": ("import torch.nn.functional as F\ndef functional(x):\n    return F.layer_norm(x, (x.size(-1),))",
                   "aten.native_layer_norm"),
    "module": ("def module(x):\n    return torch.nn.LayerNorm(x.size(-1))(x)", "aten.native_layer_norm"),
    "group_norm": (("def group_norm(x):\n    return torch.nn.functional.group_norm(x.reshape(-1, 1, x.size(-1)), 1)"
                   ".reshape(x.shape)"), "aten.native_group_norm"),
    "batch_norm": (("def batch_norm(x):\n    flat = x.reshape(1, -1, x.size(-1))\n    return torch.nn.functional.batch_norm("
                   "flat, None, None, training=True).reshape(x.shape)"), "batch_norm"),
    "rms_norm": ("def rms_norm(x):\n    return torch.nn.functional.rms_norm(x - x.mean(-1, keepdim=True), (x.size(-1),))",
                 "torch.nn.functional.rms_norm"),
    "torch_rms_norm": ("def torch_rms_norm(x):\n    return torch.rms_norm(x, (x.size(-1),))", "torch.rms_norm"),
    "gelu": ("def gelu(x):\n    return torch.nn.functional.gelu(x, approximate='tanh')", "aten.gelu"),
    "gelu_module": ("def gelu_module(x):\n    return torch.nn.GELU('tanh')(x)", "aten.gelu"),
    "cross_entropy": (("def cross_entropy(x):\n    return torch.nn.functional.cross_entropy(x.reshape(-1, x.size(-1)), "
                      "torch.zeros(x.numel() // x.size(-1), dtype=torch.long))"), "aten.nll_loss_forward"),
    "linear_cross_entropy": (("def linear_cross_entropy(x):\n    flat = x.reshape(-1, x.size(-1))\n"
                             "    return torch.nn.functional.linear_cross_entropy(flat, torch.eye(x.size(-1)), "
                             "torch.zeros(flat.size(0), dtype=torch.long))"), "aten.nll_loss_forward"),
    "optimizer": ("def optimizer(x):\n    return torch.optim.AdamW([x])", "torch.optim"),
    "optimizer_import": ("from torch.optim import AdamW\ndef optimizer_import(x):\n    return x", "the module torch.optim"),
}


@pytest.fixture(scope="module")
def softmax_attacks(tmp_path_factory):
    return _attack_outputs(tmp_path_factory, "softmax", "ch2", SOFTMAX_ATTACKS, {}, "softmax", torch.randn(3, 6))


@pytest.fixture(scope="module")
def chapter4_attacks(tmp_path_factory):
    concepts = [c.name for c in (LAYER_NORM, GELU, CROSS_ENTROPY)] + ["the AdamW update"]
    names = list(LAYER_NORM_ATTACKS)
    policy = chapter_policy("ch4", {n: concepts for n in names})
    calls = [(a, a, (torch.randn(2, 3, 8),)) for a in names]
    cells = attack_cells({a: s for a, (s, _) in LAYER_NORM_ATTACKS.items()})
    return run_runner(tmp_path_factory.mktemp("ch4"), cells, calls, policy)


@pytest.mark.parametrize("attack", SOFTMAX_ATTACKS)
def test_softmax_attacks_are_refused(softmax_attacks, attack):
    out, phrase = softmax_attacks["calls"][attack], SOFTMAX_ATTACKS[attack][1]
    assert "refused" in out and phrase in out["refused"], f"{attack}: {out}"


@pytest.mark.parametrize("attack", LAYER_NORM_ATTACKS)
def test_chapter4_attacks_are_refused(chapter4_attacks, attack):
    out, phrase = chapter4_attacks["calls"][attack], LAYER_NORM_ATTACKS[attack][1]
    assert "refused" in out and phrase in out["refused"], f"{attack}: {out}"


# ---------------------------------------------------------------- honest answers are never refused

SDPA_STYLES = {
    "reference_style": '''
def sdpa_reference_style(q, k, v, mask=None, dropout=0.0, training=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if training and dropout > 0:
        weights = torch.nn.functional.dropout(weights, p=dropout, training=True)
    return weights @ v, weights''',
    "einsum_where": '''
import math as m
from torch import nn
import torch.nn.functional as F
from typing import Optional

def sdpa_einsum_where(q, k, v, mask: Optional[torch.Tensor] = None, dropout=0.0, training=False):
    scores = torch.einsum("...qd,...kd->...qk", q, k) * (1.0 / m.sqrt(q.shape[-1]))
    if isinstance(mask, torch.Tensor):
        scores = torch.where(mask, scores, torch.tensor(float("-inf"), dtype=scores.dtype))
    weights = scores.softmax(-1)
    weights = F.dropout(weights, p=dropout, training=training)
    return torch.matmul(weights, v), weights''',
    "loops_and_helpers": '''
import itertools
import functools
from collections import namedtuple

Shape = namedtuple("Shape", "rows cols")

def _row_softmax(row):
    top = max(row.tolist())
    e = [math.exp(value - top) for value in row.tolist()]
    total = functools.reduce(lambda a, b: a + b, e, 0.0)
    return [value / total for value in e]

def sdpa_loops_and_helpers(q, k, v, mask=None, dropout=0.0, training=False):
    """Loops over every query: slow, but written by hand."""
    *lead, T, d = q.shape
    S = k.shape[-2]
    shape = Shape(T, S)
    qf, kf, vf = q.reshape(-1, T, d), k.reshape(-1, S, d), v.reshape(-1, S, v.shape[-1])
    weights = torch.zeros(qf.shape[0], shape.rows, shape.cols, dtype=q.dtype)
    for b, i in itertools.product(range(qf.shape[0]), range(T)):
        row = torch.stack([(qf[b, i] * kf[b, j]).sum() for j in range(S)]) / d ** 0.5
        if mask is not None:
            row = row.masked_fill(~mask.expand(*lead, T, S).reshape(-1, T, S)[b, i], float("-inf"))
        weights[b, i] = torch.tensor(_row_softmax(row), dtype=q.dtype)
    out = weights @ vf
    return out.reshape(*lead, T, v.shape[-1]), weights.reshape(*lead, T, S)''',
    "class_and_no_grad": '''
class Attention(torch.nn.Module):
    def __init__(self, scale=True):
        super().__init__()
        self.scale = scale
        self.calls = 0

    def forward(self, q, k, v, mask=None):
        self.calls += 1
        scores = q @ k.mT
        if self.scale:
            scores = scores / torch.sqrt(torch.tensor(q.size(-1), dtype=q.dtype))
        if mask is not None:
            scores = scores.masked_fill(mask.logical_not(), torch.finfo(scores.dtype).min)
        weights = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights @ v, weights


class Counter:
    def __init__(self):
        self.seen = {}

    def __call__(self, name):
        self.seen[name] = self.seen.get(name, 0) + 1
        return self.seen[name]

    def __len__(self):
        return len(self.seen)


_layer, _counter = Attention(), Counter()

def sdpa_class_and_no_grad(q, k, v, mask=None, dropout=0.0, training=False):
    n = _counter(type(q).__name__)
    assert n >= 1 and len(_counter) == 1, f"counted {n}"
    with torch.no_grad():
        context, weights = _layer(q, k, v, mask)
    stats = {name: value for name, value in zip(["mean", "max"], [weights.mean().item(), weights.max().item()])}
    order = sorted(stats, key=stats.get)
    for index, name in enumerate(order):
        if index < 0 or name not in stats:
            raise ValueError(f"{name}?")
    return context, weights''',
    "generators_and_errors": '''
def _scores(q, k):
    for scale in (1 / math.sqrt(q.size(-1)),):
        yield q @ k.transpose(-2, -1) * scale

def sdpa_generators_and_errors(q, k, v, mask=None, dropout=0.0, training=False):
    try:
        scores = next(_scores(q, k))
    except (StopIteration, ValueError) as e:
        raise RuntimeError(str(e))
    if mask is not None:
        scores = scores.masked_fill(mask == False, -float("inf"))  # noqa: E712
    weights = torch.nn.functional.softmax(scores, dim=-1)
    if __name__ == "__main__" and training and dropout > 0:
        keep = (torch.rand_like(weights) >= dropout).to(weights.dtype)
        weights = weights * keep / (1 - dropout)
    return weights @ v, weights''',
}


@pytest.fixture(scope="module")
def honest_attention(tmp_path_factory):
    check = REGISTRY["ch3.scaled_dot_product_attention"]
    names = {style: f"sdpa_{style}" for style in SDPA_STYLES}
    cases = make_cases(check, "visible", 7) + make_cases(check, "hidden", 8)
    calls = [(f"{style}.{i}", name, case.args) for style, name in names.items() for i, case in enumerate(cases)]
    cells = attack_cells({style: source for style, source in SDPA_STYLES.items()})
    policy = chapter_policy("ch3", {n: ["attention"] for n in names.values()})
    return check, cases, run_runner(tmp_path_factory.mktemp("honest"), cells, calls, policy)


@pytest.mark.parametrize("style", SDPA_STYLES)
def test_honest_attention_is_never_refused(honest_attention, style):
    check, cases, outputs = honest_attention
    assert not any(c["refused"] or c["error"] for c in outputs["cells"]), outputs["cells"]
    for i, case in enumerate(cases):
        out = outputs["calls"][f"{style}.{i}"]
        assert "value" in out, f"{style}, {case.label}: {out}"
        # dropout in training draws its own mask: only its shape can match
        if case.args[5:6] == (True,):
            continue
        result = judge(check, case, out["value"], "visible")
        assert result.passed, f"{style}, {case.label}: {result.message}"


SOFTMAX_STYLES = {
    "max_shift": "def softmax_max_shift(logits, dim=-1):\n    e = torch.exp(logits - logits.max(dim=dim, keepdim=True)"
                 ".values)\n    return e / e.sum(dim=dim, keepdim=True)",
    "amax_methods": "def softmax_amax_methods(logits, dim=-1):\n    shifted = logits - logits.amax(dim, keepdim=True)\n"
                    "    shifted = torch.nan_to_num(shifted, nan=float('-inf'))\n"
                    "    return shifted.exp() / shifted.exp().sum(dim, keepdim=True)",
    "moved_dim": "def softmax_moved_dim(logits, dim=-1):\n    x = logits.movedim(dim, -1)\n"
                 "    x = x - x.max(-1, keepdim=True)[0]\n    p = x.exp()\n    p /= p.sum(-1, keepdim=True)\n"
                 "    return p.movedim(-1, dim)",
    "stdlib_and_hints": """from __future__ import annotations

import operator, re, statistics, string
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

@torch.no_grad()
def softmax_stdlib_and_hints(logits: Tensor, dim: int = -1) -> Tensor:
    assert re.fullmatch(r"[a-z]+", "softmax") and string.digits and statistics.mean([1, 2]) == 1.5
    assert pad_sequence([torch.ones(2), torch.ones(1)]).shape == (2, 2) and torch.__version__
    e = operator.sub(logits, logits.max(dim=dim, keepdim=True).values).exp()
    return operator.truediv(e, e.sum(dim=dim, keepdim=True))""",
}


def test_honest_softmax_is_never_refused(tmp_path):
    check = REGISTRY["ch2.softmax"]
    cases = make_cases(check, "visible", 3) + make_cases(check, "hidden", 4)
    names = {style: f"softmax_{style}" for style in SOFTMAX_STYLES}
    calls = [(f"{style}.{i}", name, case.args) for style, name in names.items() for i, case in enumerate(cases)]
    policy = chapter_policy("ch2", {n: ["softmax"] for n in names.values()})
    outputs = run_runner(tmp_path, attack_cells(SOFTMAX_STYLES), calls, policy)
    assert not any(c["refused"] or c["error"] for c in outputs["cells"]), outputs["cells"]
    for style in SOFTMAX_STYLES:
        for i, case in enumerate(cases):
            out = outputs["calls"][f"{style}.{i}"]
            assert "value" in out, f"{style}: {out}"
            assert judge(check, case, out["value"], "visible").passed, (style, case.label)


@pytest.mark.parametrize("chapter", ["ch1", "ch2", "ch3", "ch4", "ch5"])
def test_solutions_pass_unrefused(tmp_path, chapter):
    """The instructor's answers and given cells of every chapter, through the runner: no
    cell refused or failing, every check (visible and hidden cases) passed."""
    nb = nbformat.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb", as_version=4)
    checks = [c for i, c in REGISTRY.items() if i.startswith(chapter + ".")]
    cases = {check.id: make_cases(check, "visible", 11) + ([] if check.choices else make_cases(check, "hidden", 12))
             for check in checks}
    calls = [(f"{check.id}.{i}", check.function_name, case.args) for check in checks for i, case in enumerate(cases[check.id])]
    outputs = run_runner(tmp_path, runner_cells(nb), calls, runner_policy(checks))
    assert not [c for c in outputs["cells"] if c["error"] or c["refused"]], outputs["cells"]
    for check in checks:
        for i, case in enumerate(cases[check.id]):
            out = outputs["calls"][f"{check.id}.{i}"]
            assert "value" in out, f"{check.id}, {case.label}: {out}"
            result = judge(check, case, out["value"], "visible")
            assert result.passed, f"{check.id}, {case.label}: {result.message}"


# ---------------------------------------------------------------- the policy

@pytest.mark.parametrize("concept, pattern", [
    (ATTENTION, ("attention", "multi_head", "transformer_encoder")),
    (SOFTMAX, ("softmax",)),
    (LAYER_NORM, ("layer_norm", "group_norm", "batch_norm", "instance_norm", "rms_norm")),
    (GELU, ("gelu",)),
    (CROSS_ENTROPY, ("nll_loss", "cross_entropy_loss")),
])
def test_every_kernel_of_a_concept_is_refused(concept, pattern):
    """The aten kernels are a closed set: each operator of this torch whose name says it
    computes the concept either is in ``kernels`` or has no kernel of its own (it is made
    of others, which the guard sees instead). A new torch adding one fails here."""
    overloads: dict[str, list[str]] = {}
    for op in torch._C._dispatch_get_all_op_names():
        if op.startswith("aten::"):
            overloads.setdefault(op.split(".")[0][len("aten::"):], []).append(op)
    for name in sorted(overloads):
        if not any(p in name for p in pattern) or "backward" in name:
            continue
        composite = all(torch._C._dispatch_has_kernel_for_dispatch_key(op, "CompositeImplicitAutograd")
                        for op in overloads[name])
        assert name in concept.kernels or composite, f"aten.{name} computes {concept.name} and is not refused"


def test_torch_view_shows_tensor_operations_only():
    names = set(torch_names())
    assert {"softmax", "einsum", "tensor", "arange", "where", "float32", "Tensor", "no_grad", "pi", "manual_seed"} <= names
    for hidden in ("ops", "compile", "load", "save", "jit", "library", "utils", "overrides", "DisableTorchFunction",
                   "ExcludeDispatchKeyGuard", "DispatchKeySet", "cond", "CompilationUnit", "set_default_tensor_type"):
        assert hidden not in names, hidden


def test_scrub_drops_the_objects_a_caught_exception_carries():
    error = AttributeError("no such attribute", name="x", obj=torch)
    group = ExceptionGroup("several", [error, ValueError(torch)])
    answer_runner.scrub(group)
    assert error.obj is None and group.exceptions[1].args == (None,)


# ---------------------------------------------------------------- the static scan

CH3 = chapter_policy("ch3")


def test_scan_charges_nested_definitions_and_their_callers():
    cells = [
        {"id": "helpers", "solution": True, "source": (
            "def decoy(x):\n    return x\n\nif True:\n    try:\n        def attend(q, k, v):\n"
            "            return torch.nn.functional.scaled_dot_product_attention(q, k, v)\n"
            "    except Exception:\n        pass\n\nclass Layer:\n    def __call__(self, x):\n        return x\n")},
        {"id": "mha", "solution": True, "source": "def multi_head_attention(x):\n    return attend(x, x, x)\n"},
        {"id": "block", "solution": True, "source": "def block(x):\n    y = multi_head_attention(x)\n    return y\n"},
        {"id": "honest", "solution": True, "source": "def causal_mask(T):\n    return torch.ones(T, T).tril().bool()\n"},
        {"id": "given", "solution": False, "source": "def given_attention(x):\n    return torch.nn.functional."
                                                   "scaled_dot_product_attention(x, x, x)\n"},
    ]
    reasons = delegation_reasons(cells, CH3)
    assert {"decoy", "attend", "Layer", "multi_head_attention", "block"} <= set(reasons), reasons
    assert "causal_mask" not in reasons and "given_attention" not in reasons  # given cells are trusted
    assert reasons["block"][0].startswith("block calls multi_head_attention: multi_head_attention calls attend: "
                                          "answer cell 'helpers' uses torch.nn.functional.scaled_dot_product_attention "
                                          "(line 7)")
    assert all("not allowed in this exercise" in r for rs in reasons.values() for r in rs)


@pytest.mark.parametrize("chapter", ["ch1", "ch2", "ch3", "ch4", "ch5"])
@pytest.mark.parametrize("folder", ["solutions", "exercises"])
def test_scan_finds_nothing_in_the_course_notebooks(folder, chapter):
    nb = nbformat.read(ROOT / folder / chapter / f"{chapter}.ipynb", as_version=4)
    assert delegation_reasons(runner_cells(nb), chapter_policy(chapter)) == {}


@pytest.mark.parametrize("source, phrase", [
    ("import transformers", "imports transformers"),
    ("from transformers.models.gpt2 import modeling_gpt2", "imports transformers.models.gpt2"),
    ("import importlib\nm = importlib.import_module('torch')", "imports importlib"),
    ("from torch import ops", "imports torch.ops"),
    ("y = torch._C._nn.gelu(x)", "uses ._C"),
    ("y = __import__('torch')", "uses __import__"),
    ("y = vars(torch)['ops']", "uses vars"),
    ("y = eval('1')", "uses eval"),
    ("g = getattr(F, 'scaled_dot' + '_product_attention')",
     "uses 'scaled_dot' + '_product_attention' (scaled_dot_product_attention)"),
    ("def f(x):\n    return x.gi_frame.f_back", "frame, code and traceback"),
    ("import llmcourse.attention as a", "uses llmcourse"),
])
def test_scan_names_what_the_runner_refuses(source, phrase):
    assert any(phrase in r for r in cell_findings(source, CH3)), cell_findings(source, CH3)


@pytest.mark.parametrize("source", [
    "import math\nimport torch.nn.functional as F\nfrom torch import nn\nfrom typing import Optional",
    "def _helper(x):\n    for _ in range(3):\n        x = x + 1\n    return x",
    ("class A(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n    def __call__(self, x):\n"
    "        return x\n    def __repr__(self):\n        return f'A({self.training})'"),
    "w = torch.softmax(x, -1)\nprint(f'softmax: {w}', type(w).__name__)",
    "if __name__ == '__main__':\n    print(sorted(zip([1], [2])), min(1, 2), dict(a=1))",
    "def input(prompt):\n    return prompt\nprint(input('x'))",
])
def test_scan_leaves_honest_code_alone(source):
    assert cell_findings(source, CH3) == []
