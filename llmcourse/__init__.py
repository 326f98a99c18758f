"""llmcourse: the reference GPT pipeline behind the course "LLMs from scratch".

Each module follows one part of the book:

* ``data``       chapters 1-2: the course's data files, next-token (input, target) pairs
* ``tokenizer``  chapter 2: byte-level BPE from scratch and GPT-2's tokenizer
* ``attention``  chapter 3: self-attention, from the simplified form to multi-head
* ``model``      chapter 4: the GPT model and its configuration
* ``generate``   chapters 2 and 4: decoding (greedy, temperature, top-k, top-p), KV cache
* ``weights``    chapter 4: loading GPT-2's public weights, saving checkpoints
* ``train``      chapter 4: the pretraining loop, checkpoints, resume, DDP
* ``finetune``   chapter 5: classification and instruction fine-tuning
* ``lora``       chapter 5: low-rank adapters
"""
from .attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    scaled_dot_product_attention,
    simplified_self_attention,
    split_heads,
)
from .data import NextTokenDataset, create_dataloader, fetch, read_text
from .generate import (
    generate,
    generate_text,
    sample_next_token,
    softmax_with_temperature,
    top_k_filter,
    top_p_filter,
)
from .model import (
    GELU,
    GPT,
    PRESETS,
    FeedForward,
    GPTConfig,
    LayerNorm,
    TransformerBlock,
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
    "FeedForward",
    "GELU",
    "GPT",
    "GPTConfig",
    "KVCache",
    "LayerNorm",
    "MultiHeadAttention",
    "NextTokenDataset",
    "PRESETS",
    "TransformerBlock",
    "causal_mask",
    "create_dataloader",
    "fetch",
    "gelu",
    "generate",
    "generate_text",
    "gpt2_tokenizer",
    "layer_norm",
    "load_gpt",
    "load_hf_gpt2",
    "load_model",
    "merge_heads",
    "linear_cross_entropy",
    "next_token_loss",
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
