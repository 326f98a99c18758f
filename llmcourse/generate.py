"""Turning next-token logits into text (chapters 2 and 4).

Chapter 2 shows how one next token is chosen from the logits: greedy (the most
likely token), or sampling after reshaping the distribution with a temperature,
top-k or top-p (nucleus) filtering. Chapter 4 runs that choice in a loop, feeding
each new token back in, and speeds the loop up with a KV cache.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .attention import KVCache
from .config import check_int
from .model import eval_mode


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities from logits, sharpened (T < 1) or flattened (T > 1).

    logits (.., V) -> probabilities (.., V). T = 1 is the model's own distribution.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature} (use 0 for greedy)")
    return torch.softmax(logits / temperature, dim=-1)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf. (.., V) -> (.., V)."""
    check_int("top_k", k)
    k = min(k, logits.size(-1))
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]  # (.., 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the fewest most-likely tokens whose probabilities
    sum to at least p; set the rest to -inf. The most likely token is always kept.
    (.., V) -> (.., V).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of all more likely tokens
    drop_sorted = mass_before >= p  # the nucleus is already complete without this token
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token_probs(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The distribution the next token is drawn from. logits (B, V) -> probabilities (B, V).

    temperature 0 is greedy decoding: all the mass on the argmax. Otherwise the logits
    are divided by the temperature, filtered by top-k, then top-p (so top-p's cumulative
    sum runs over what top-k kept, at the final temperature), and softmaxed.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).to(logits.dtype)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose one next token per row. logits (B, V) -> token ids (B,).

    temperature 0 is greedy decoding (argmax); otherwise one token is drawn from
    ``next_token_probs``. Pass a seeded ``torch.Generator`` for reproducible samples.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits.float(), temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Autoregressive generation, one token at a time.

    idx: (B, T) prompt ids (left-padded, with ``padding_mask`` (B, T) marking real
    tokens, when prompts differ in length). Returns (B, T + n) ids, n <= max_new_tokens:
    generation stops early once every row has produced ``eos_id``; rows that finished
    earlier are filled with ``eos_id``.

    With ``use_cache`` (the default) keys and values of earlier tokens are kept in a
    ``KVCache``, so each step feeds the model only the newest token; the tokens are
    the same as without it. Sequences longer than the context window fall back to
    the uncached loop, which crops the input to the last ``context_length`` tokens.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    B, T = idx.shape if isinstance(idx, torch.Tensor) and idx.dim() == 2 else (None, None)
    if B is None:
        raise ValueError("generate expects prompt ids of shape (batch, seq_len) as a torch.Tensor")
    context = model.config.context_length
    idx = idx.to(model.device)
    if padding_mask is not None:
        padding_mask = padding_mask.to(device=model.device, dtype=torch.bool)

    cache = None
    if use_cache and T + max_new_tokens <= context:
        cache = KVCache(model.config.n_layers, T + max_new_tokens)
    finished = torch.zeros(B, dtype=torch.bool, device=model.device)
    step_input, step_mask = idx, padding_mask
    with eval_mode(model):
        for _ in range(max_new_tokens):
            if cache is None:  # re-read the whole (cropped) sequence every step
                step_input = idx[:, -context:]
                step_mask = None if padding_mask is None else padding_mask[:, -context:]
            logits = model(step_input, cache=cache, padding_mask=step_mask, last_only=True)[:, -1, :]  # (B, V)
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B,)
            if eos_id is not None:
                next_id = next_id.masked_fill(finished, eos_id)
                finished |= next_id == eos_id
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            if padding_mask is not None:
                padding_mask = torch.cat([padding_mask, padding_mask.new_ones(B, 1)], dim=1)
            step_input, step_mask = next_id[:, None], padding_mask
            if eos_id is not None and bool(finished.all()):
                break
    return idx


def completion_ids(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 50,
    **kwargs,
) -> list[list[int]]:
    """The token ids each prompt's completion got, ending with ``<|endoftext|>``
    where the model produced it (then it ended its text itself).

    Prompts of different lengths are left-padded into one batch. ``kwargs`` go to
    ``generate`` (temperature, top_k, top_p, generator, use_cache); generation stops at
    ``<|endoftext|>`` unless ``eos_id=None`` is given.
    """
    texts = [] if isinstance(prompts, str) else list(prompts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("expected a non-empty list of prompt strings (generate_text also takes one string)")
    eos = tokenizer.eot_token
    kwargs.setdefault("eos_id", eos)
    encoded = [tokenizer.encode(t, allowed_special={"<|endoftext|>"}) or [eos] for t in texts]
    width = max(len(ids) for ids in encoded)
    idx = torch.tensor([[eos] * (width - len(ids)) + ids for ids in encoded])
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
    out = generate(model, idx, max_new_tokens, padding_mask=mask, **kwargs)
    rows = out[:, width:].tolist()
    if kwargs["eos_id"] is not None:  # rows that ended early were filled with eos: keep one
        rows = [row[: row.index(kwargs["eos_id"]) + 1] if kwargs["eos_id"] in row else row for row in rows]
    return rows


def split_eos(ids: list[int], eos: int | None) -> tuple[list[int], bool]:
    """A completion from ``completion_ids`` without its final ``eos``, and whether it had one
    (the model ended its text itself)."""
    ended = eos is not None and bool(ids) and ids[-1] == eos
    return (ids[:-1] if ended else ids), ended


def generate_text(
    model,
    tokenizer,
    prompts: str | Sequence[str],
    max_new_tokens: int = 50,
    **kwargs,
) -> str | list[str]:
    """Prompts in, completions out (the text after each prompt, without the
    ``<|endoftext|>`` that ended it). Arguments as in ``completion_ids``."""
    single = isinstance(prompts, str)
    rows = completion_ids(model, tokenizer, [prompts] if single else prompts, max_new_tokens, **kwargs)
    eos = kwargs.get("eos_id", tokenizer.eot_token)
    completions = [tokenizer.decode(split_eos(row, eos)[0]) for row in rows]
    return completions[0] if single else completions
