"""llmcourse: the reference GPT pipeline behind the course "LLMs from scratch".

Each module follows one part of the book (the chapters that teach it), and each
imports only from the modules above it in this list (``tests/test_layers.py``):

* ``config``       chapters 1, 4: ``GPTConfig``, GPT-2's sizes and ``TINY``
* ``files``        chapter 1: the course's data files (fetched, checked), atomic writes
* ``tokenizer``    chapter 2: byte-level BPE from scratch and GPT-2's tokenizer
* ``data``         chapters 1-2: next-token (input, target) windows, data loaders
* ``attention``    chapter 3: self-attention, from the simplified form to multi-head
* ``model``        chapter 4: the GPT model, its parameter count, the next-token loss
* ``generate``     chapters 2, 4: decoding (greedy, temperature, top-k, top-p), KV cache
* ``weights``      chapter 4: loading GPT-2's public weights, saving and loading models
* ``checkpoints``  chapter 4: training checkpoints (optimizer, RNG, data position)
* ``train``        chapter 4: the pretraining loop, resume, DDP
* ``course``       chapters 2-5: the course model (its tokenizer, size, run) and what it learned
* ``finetune``     chapter 5: classification and instruction fine-tuning (a package)
* ``lora``         chapter 5: low-rank adapters

``grading`` (the exercises' autograder) and ``cli`` (the ``llmcourse`` command) sit on
top: they import the library, never the other way round.

Importing ``llmcourse`` loads none of these: each name in ``EXPORTS`` is imported from its
module the first time it is used (``from llmcourse import GPT`` works as it always does;
Python's module ``__getattr__``, PEP 562), so a command that needs little, like
``llmcourse check``, which starts its sandbox before torch is loaded, does not wait for all
of it. The function ``generate`` is ``llmcourse.generate.generate``: at the top,
``llmcourse.generate`` is the module.
"""

import importlib

__version__ = "0.1.0"

# The public names, by the module that defines them (in the order of the list above).
EXPORTS = {
    "config": ("PRESETS", "TINY", "GPTConfig", "model_config_from"),
    "files": ("DATA_FILES", "fetch", "read_text"),
    "tokenizer": ("BPETokenizer", "gpt2_tokenizer"),
    "data": ("NextTokenDataset", "create_dataloader"),
    "attention": ("CausalAttention", "KVCache", "MultiHeadAttention", "causal_mask", "merge_heads",
                  "padded_causal_mask", "scaled_dot_product_attention", "simplified_self_attention", "split_heads"),
    "model": ("GELU", "GPT", "FeedForward", "LayerNorm", "TransformerBlock", "eval_mode", "gelu", "layer_norm",
              "linear_cross_entropy", "next_token_loss", "parameter_count", "resolve_device"),
    "generate": ("completion_ids", "generate_text", "next_token_probs", "sample_next_token",
                 "softmax_with_temperature", "top_k_filter", "top_p_filter"),
    "weights": ("load_gpt", "load_hf_gpt2", "load_model", "save_model"),
}
_HOME = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    """``llmcourse.GPT`` and the like, imported from their module on first use."""
    if name not in _HOME:
        raise AttributeError(f"module 'llmcourse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # later uses find it here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
