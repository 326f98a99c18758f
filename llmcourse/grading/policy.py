"""What graded code may use: an allowlist for every exercise, and the concept each one teaches.

An exercise asks for something written by hand (attention, softmax, layer norm) with
ordinary tensor operations. The answer runner (``answer_runner.py``) enforces, at run time:

* **imports**: only the modules below (``importable_modules``): torch's tensor namespaces,
  ``math`` and a few plain stdlib modules; each arrives as a view showing its public names
  (for ``torch`` itself: its tensor operations, dtypes and a few classes, ``torch_names``),
  so ``torch.ops``, ``torch._C``, ``torch.compile`` or ``transformers`` are simply not there;
* **the concept itself** (``Concept``), whatever path reaches it: every public alias of a
  built-in softmax, attention or layer norm ends in one of a few aten kernels, which the
  runner refuses while the exercise's function runs. A few public functions compute the
  concept out of ordinary kernels (``nn.MultiheadAttention`` asked for its weights does
  ``bmm`` + ``softmax``); those are listed as ``composites`` and refused by name.

``runner_policy(checks)`` is that policy as the JSON the runner reads (``spec["policy"]``);
the static scan (``scan.py``) reads the same data to name the reason in the feedback.
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Concept:
    """What an exercise asks the student to write, and what in torch would write it for them.

    ``kernels``: aten operators (their overload packet names) that compute it; every public
    path to the built-in reaches one of them, so the runner refuses these, not names.
    ``composites``: public functions (dotted paths) that compute it out of ordinary kernels,
    which the kernel guard cannot tell from honest code; the runner refuses them by name.
    ``entry_points``: the public names a student would call (dotted paths); the static scan
    reports any use of their last component, even on a path the tests do not take.
    """

    name: str  # as the reason says it: "this exercise asks you to write <name> ..."
    kernels: tuple[str, ...]
    composites: tuple[str, ...] = ()
    entry_points: tuple[str, ...] = ()

    def as_json(self) -> dict:
        return {"kernels": list(self.kernels), "composites": list(self.composites),
                "entry_points": list(self.entry_points)}


# The softmax variants only attention kernels use (sdpa's math path, MultiheadAttention's
# fast path): private, so honest code never reaches them.
_ATTENTION_SOFTMAX = ("_safe_softmax", "_masked_softmax")
ATTENTION = Concept(
    "attention",
    kernels=("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps",
             "_flash_attention_forward", "_flash_attention_forward_no_dropout_inplace",
             "_efficient_attention_forward", "_cudnn_attention_forward", "_native_multi_head_attention",
             "_triton_multi_head_attention", "_triton_scaled_dot_attention", "_transformer_encoder_layer_fwd",
             *_ATTENTION_SOFTMAX),
    # Asked for its weights, MultiheadAttention computes them with bmm and softmax.
    composites=("torch.nn.functional.multi_head_attention_forward",),
    entry_points=("torch.nn.functional.scaled_dot_product_attention",
                  "torch.nn.functional.multi_head_attention_forward", "torch.nn.MultiheadAttention",
                  "torch.nn.Transformer", "torch.nn.TransformerEncoder", "torch.nn.TransformerEncoderLayer",
                  "torch.nn.TransformerDecoder", "torch.nn.TransformerDecoderLayer"),
)
SOFTMAX = Concept(
    "softmax",
    # Attention kernels compute a softmax too (with v the identity, sdpa returns one), and
    # logsumexp is its normaliser (softmax = exp(x - logsumexp(x)), and its gradient).
    kernels=("_softmax", "_log_softmax", "softmax", "log_softmax", "_sparse_softmax", "_sparse_log_softmax",
             "_nested_tensor_softmax_with_shape", "logsumexp", *ATTENTION.kernels),
    composites=ATTENTION.composites,
    entry_points=("torch.softmax", "torch.log_softmax", "torch.special.softmax", "torch.special.log_softmax",
                  "torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.softmin",
                  "torch.nn.functional.gumbel_softmax", "torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin",
                  "torch.nn.Softmax2d", "torch.logsumexp", "torch.special.logsumexp", *ATTENTION.entry_points),
)
LAYER_NORM = Concept(
    "layer norm",
    # Group, batch and instance norm normalise over a layer too, once x is reshaped.
    kernels=("native_layer_norm", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit",
             "_native_batch_norm_legit_functional", "_native_batch_norm_legit_no_training",
             "_batch_norm_with_update", "_batch_norm_with_update_functional", "_batch_norm_no_update",
             "batch_norm_elemt", "batch_norm_stats", "batch_norm_gather_stats",
             "batch_norm_gather_stats_with_counts", "batch_norm_update_stats", "cudnn_batch_norm",
             "miopen_batch_norm", "quantized_batch_norm"),
    # RMS norm of x - mean is layer norm; on the CPU it is made of ordinary kernels.
    composites=("torch.nn.functional.rms_norm", "torch.rms_norm"),
    entry_points=("torch.nn.functional.layer_norm", "torch.layer_norm", "torch.native_layer_norm",
                  "torch.nn.LayerNorm", "torch.nn.functional.group_norm", "torch.nn.GroupNorm",
                  "torch.nn.functional.batch_norm", "torch.nn.functional.instance_norm",
                  "torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm"),
)
GELU = Concept("GELU", kernels=("gelu", "gelu_"),
               entry_points=("torch.nn.functional.gelu", "torch.nn.GELU"))
CROSS_ENTROPY = Concept(
    "the cross-entropy loss",
    kernels=("nll_loss_forward", "nll_loss2d_forward"),  # what cross_entropy and nll_loss end in
    entry_points=("torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss",
                  "torch.nn.functional.linear_cross_entropy", "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss",
                  "torch.nn.LinearCrossEntropyLoss"),
)
# torch.optim is not importable at all (see importable_modules); its fused kernels are refused
# too, and its plain (for-loop) AdamW is made of ordinary kernels.
ADAMW = Concept("the AdamW update", kernels=("_fused_adam", "_fused_adam_", "_fused_adamw", "_fused_adamw_"),
                entry_points=("torch.optim.AdamW", "torch.optim.Adam"))


# ---------------------------------------------------------------- what graded code may import

# Module -> the public names graded code sees (None: all of them). Submodules are importable
# only when listed here. Left out on purpose: torch.ops / utils / library / overrides /
# compile machinery (they reach below the allowlist), torch.optim (an exercise writes one),
# dataclasses, typing.get_type_hints, functools.wraps / singledispatch, operator.attrgetter,
# string.Formatter (they evaluate code or look up attribute names given as strings, past the
# runner's name rule), and every third-party package (transformers implements the exercises,
# tiktoken and tokenizers the BPE ones).
_TORCH_MODULES = {
    "torch.nn": None, "torch.nn.functional": None, "torch.nn.init": None, "torch.linalg": None,
    "torch.special": None, "torch.fft": None, "torch.autograd": None, "torch.random": None,
    "torch.functional": None, "torch.nn.utils": ("rnn",), "torch.nn.utils.rnn": None,
    "torch.cuda": ("is_available", "device_count"),  # the rest can load native code
}
_STDLIB_MODULES = {
    "math": None, "cmath": None, "itertools": None, "collections": None, "collections.abc": None,
    "heapq": None, "bisect": None, "random": None, "re": None, "statistics": None, "__future__": None,
    "functools": ("partial", "reduce", "lru_cache", "cache", "cached_property", "cmp_to_key", "total_ordering"),
    "operator": ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "matmul", "abs", "eq", "ne", "lt",
                 "le", "gt", "ge", "and_", "or_", "xor", "not_", "truth", "index", "getitem", "itemgetter",
                 "contains", "concat", "countOf", "indexOf"),
    "string": ("ascii_letters", "ascii_lowercase", "ascii_uppercase", "digits", "hexdigits", "octdigits",
               "punctuation", "printable", "whitespace", "capwords"),
    "typing": ("Any", "Callable", "Dict", "FrozenSet", "Iterable", "Iterator", "List", "Literal", "Mapping",
               "NamedTuple", "Optional", "Sequence", "Set", "Tuple", "Union"),
}
# Top-level torch names that are neither tensor operations nor dtypes but belong to ordinary
# tensor code: classes, grad modes, seeding, printing.
_TORCH_EXTRAS = (
    "Tensor", "Size", "Generator", "device", "dtype", "finfo", "iinfo", "layout", "memory_format",
    "no_grad", "enable_grad", "inference_mode", "set_grad_enabled", "is_grad_enabled", "is_inference_mode_enabled",
    "autocast", "BoolTensor", "ByteTensor", "CharTensor", "ShortTensor", "IntTensor", "LongTensor", "HalfTensor",
    "BFloat16Tensor", "FloatTensor", "DoubleTensor", "broadcast_shapes", "get_default_dtype", "set_default_dtype",
    "get_default_device", "is_tensor", "manual_seed", "seed", "initial_seed", "get_rng_state", "set_rng_state",
    "default_generator", "set_printoptions", "typename", "unique", "vmap", "lu", "get_num_threads",
    "use_deterministic_algorithms", "are_deterministic_algorithms_enabled", "newaxis",
)


@functools.cache
def torch_names() -> tuple[str, ...]:
    """The top-level ``torch`` names graded code sees: every tensor operation (the aten
    functions and torch's overridable Python functions), the dtypes and constants, and
    ``_TORCH_EXTRAS``; not the JIT, dispatcher, serialisation and compiler entry points
    (``torch.compile``, ``torch.load``, ``torch.DisableTorchFunction``, ``torch.ExcludeDispatchKeyGuard``)."""
    from torch.overrides import get_overridable_functions

    operations = set(get_overridable_functions().get(torch, ()))
    aten = set(dir(torch._C._VariableFunctions))
    names = []
    for name in dir(torch):
        value = getattr(torch, name, None)
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        constant = isinstance(value, (torch.dtype, torch.layout, torch.memory_format, float))
        if name in aten or name in _TORCH_EXTRAS or constant or (callable(value) and value in operations):
            names.append(name)
    return tuple(names)


def importable_modules() -> dict[str, list[str] | None]:
    """Module -> the names graded code sees of it (None: all public names)."""
    modules = {"torch": list(torch_names())}
    for name, names in {**_TORCH_MODULES, **_STDLIB_MODULES}.items():
        modules[name] = None if names is None else list(names)
    return modules


def runner_policy(checks) -> dict:
    """The policy the answer runner enforces for a notebook graded by ``checks`` (JSON).

    ``{"modules": {module: [names] | null}, "concepts": {name: {"kernels", "composites",
    "entry_points"}}, "functions": {function: [concept names]}}``: a check's function is
    refused its concepts while it runs; the cells' own code runs under all of them.
    """
    concepts, functions = {}, {}
    for check in checks:
        for concept in check.concepts:
            concepts[concept.name] = concept.as_json()
        functions.setdefault(check.function_name, [])
        functions[check.function_name] += [c.name for c in check.concepts if c.name not in functions[check.function_name]]
    return {"modules": importable_modules(), "concepts": concepts, "functions": functions}
