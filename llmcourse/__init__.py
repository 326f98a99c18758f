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
"""
from .attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    padded_causal_mask,
    scaled_dot_product_attention,
    simplified_self_attention,
    split_heads,
)
from .config import PRESETS, TINY, GPTConfig, model_config_from
from .data import NextTokenDataset, create_dataloader
from .files import DATA_FILES, fetch, read_text
from .generate import (
    completion_ids,
    generate,
    generate_text,
    next_token_probs,
    sample_next_token,
    softmax_with_temperature,
    top_k_filter,
    top_p_filter,
)
from .model import (
    GELU,
    GPT,
    FeedForward,
    LayerNorm,
    TransformerBlock,
    eval_mode,
    gelu,
    layer_norm,
    linear_cross_entropy,
    next_token_loss,
    parameter_count,
    resolve_device,
)
from .tokenizer import BPETokenizer, gpt2_tokenizer
from .weights import load_gpt, load_hf_gpt2, load_model, save_model

__all__ = [
    "BPETokenizer",
    "CausalAttention",
    "DATA_FILES",
    "FeedForward",
    "GELU",
    "GPT",
    "GPTConfig",
    "KVCache",
    "LayerNorm",
    "MultiHeadAttention",
    "NextTokenDataset",
    "PRESETS",
    "TINY",
    "TransformerBlock",
    "causal_mask",
    "create_dataloader",
    "eval_mode",
    "fetch",
    "completion_ids",
    "gelu",
    "generate",
    "generate_text",
    "gpt2_tokenizer",
    "layer_norm",
    "load_gpt",
    "load_hf_gpt2",
    "load_model",
    "linear_cross_entropy",
    "merge_heads",
    "model_config_from",
    "next_token_loss",
    "next_token_probs",
    "padded_causal_mask",
    "parameter_count",
    "read_text",
    "resolve_device",
    "sample_next_token",
    "save_model",
    "scaled_dot_product_attention",
    "simplified_self_attention",
    "softmax_with_temperature",
    "split_heads",
    "top_k_filter",
    "top_p_filter",
]

__version__ = "0.1.0"
