"""Checks of the chapter 1 assignment: next-word pairs, tokens read, parameter counts.

Registered on import (``registry.py`` imports every chapter's module). Each reference
is ``llmcourse``'s own code, wrapped to take and return plain tensors and numbers.
"""
from __future__ import annotations

import torch

from ..config import GPTConfig
from ..data import NextTokenDataset
from ..model import parameter_count
from .checks import Case, Check, Mistake, register, register_quiz

# ---------------------------------------------------------------- next-word pairs


def reference_next_token_pairs(ids, max_length, stride):
    """(inputs, targets), each (n_windows, max_length) int64, from ``NextTokenDataset``."""
    dataset = NextTokenDataset(ids, max_length, stride)
    return dataset.inputs.clone(), dataset.targets.clone()


def _ids(gen: torch.Generator, n: int, vocab: int = 50257) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=gen, dtype=torch.int64)


_SKIPPING = "27 tokens, stride 5 > max_length 3 (tokens between windows are skipped)"  # its last window ends early


def _pairs_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        # The last window ends on the last token: a loop bound that is one short drops it.
        n = int(torch.randint(3, 6, (1,), generator=gen))
        return [Case((_ids(gen, 4 + 1 + 2 * n), 4, 2), f"{4 + 1 + 2 * n} token ids, max_length=4, stride=2")]
    length = int(torch.randint(40, 60, (1,), generator=gen))
    return [
        Case((_ids(gen, 6), 5, 3), "exactly max_length + 1 = 6 tokens: one window",
             hint="off by one in the number of windows: a window needs max_length + 1 tokens (its inputs "
                  "and the token after them), so there are (len(ids) - 1 - max_length) // stride + 1",
             base=_SKIPPING),
        Case((_ids(gen, 27), 3, 5), _SKIPPING),
        Case((_ids(gen, 12), 4, 1), "12 tokens, stride 1"),
        Case((_ids(gen, length), 8, 4), f"{length} tokens, max_length=8, stride=4"),
    ]


def _pairs_unshifted(ids, max_length, stride):
    inputs, _ = reference_next_token_pairs(ids, max_length, stride)
    return inputs, inputs.clone()


def _pairs_one_window_short(ids, max_length, stride):
    inputs, targets = reference_next_token_pairs(ids, max_length, stride)
    return inputs[:-1], targets[:-1]


_STRIDE_HINT = "stride ignored: window k must start at token k * stride"
register(Check(
    id="ch1.next_token_pairs", function_name="next_token_pairs",
    reference=reference_next_token_pairs, draw_cases=_pairs_cases,
    mistakes=(
        Mistake(_pairs_unshifted, "target not shifted by one: the target of position i is the token at "
                "position i + 1 (the next token), not the same token"),
        Mistake(lambda ids, m, s: reference_next_token_pairs(ids, m, 1), _STRIDE_HINT + " (you used 1)"),
        Mistake(lambda ids, m, s: reference_next_token_pairs(ids, m, m), _STRIDE_HINT + " (you used max_length)"),
        Mistake(_pairs_one_window_short, "one window too few: the last window may end on the last token but "
                "one (its target ends on the last token)"),
    ),
    rtol=0, atol=0,
))

# ---------------------------------------------------------------- tokens read per source


def reference_tokens_read(dataset_tokens, shares, trained_on):
    """Tokens read from each source and passes over it: ``share * trained_on`` and that / size."""
    read = shares * trained_on
    return read, read / dataset_tokens


GPT3_TOKENS = (410e9, 19e9, 12e9, 55e9, 3e9)  # Common Crawl, WebText2, Books1, Books2, Wikipedia
GPT3_SHARES = (0.60, 0.22, 0.08, 0.08, 0.03)


def _tokens_cases(gen: torch.Generator, kind: str) -> list[Case]:
    def sources(n):
        tokens = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(21, 27, generator=gen)).round()
        shares = torch.rand(n, generator=gen, dtype=torch.float64) + 0.05
        return tokens, shares / shares.sum()

    if kind == "visible":
        tokens, shares = sources(4)
        return [Case((tokens, shares, 1e11), "4 sources, 100B training tokens")]
    tokens, shares = sources(7)
    return [
        Case((torch.tensor(GPT3_TOKENS, dtype=torch.float64), torch.tensor(GPT3_SHARES, dtype=torch.float64), 300e9),
             "GPT-3's mix (the rounded shares add up to 1.01: use them as given)"),
        Case((tokens, shares, 2.5e12), "7 sources, 2.5T training tokens"),
        Case((tokens[:1], torch.ones(1, dtype=torch.float64), 1e9), "a single source"),
    ]


def _read_by_size(dataset_tokens, shares, trained_on):
    read = trained_on * dataset_tokens / dataset_tokens.sum()
    return read, read / dataset_tokens


def _passes_inverted(dataset_tokens, shares, trained_on):
    read = shares * trained_on
    return read, dataset_tokens / read


register(Check(
    id="ch1.tokens_read", function_name="tokens_read",
    reference=reference_tokens_read, draw_cases=_tokens_cases,
    mistakes=(
        Mistake(_read_by_size, "training draws from each source by its share of the mix, not by its size: "
                "tokens read = share * trained_on"),
        Mistake(_passes_inverted, "passes inverted: passes = tokens read / tokens in the source"),
    ),
    rtol=1e-9, atol=0,
))

# ---------------------------------------------------------------- parameter count


def reference_gpt_parameter_count(vocab_size, context_length, emb_dim, n_layers, ff_dim, tied):
    """``llmcourse.model.parameter_count`` of a GPT-2-style config (qkv biases, tied or not)."""
    config = GPTConfig(vocab_size=vocab_size, context_length=context_length, emb_dim=emb_dim, n_heads=1,
                       n_layers=n_layers, ff_dim=ff_dim, qkv_bias=True)
    count = parameter_count(config)
    return count.tied if tied else count.untied


def _count_variant(V, C, d, L, f, tied, *, biases=True, norms=True, final_norm=True, positions=True, head=None):
    """The parameter count with one part left out or added, for the typical mistakes."""
    attn = 4 * d * d + (4 * d if biases else 0)
    ff = 2 * d * f + ((f + d) if biases else 0)
    block = attn + ff + (4 * d if norms else 0)
    total = V * d + (C * d if positions else 0) + L * block + (2 * d if norms and final_norm else 0)
    with_head = (not tied) if head is None else head
    return total + (V * d if with_head else 0)


def _config_case(gen: torch.Generator, tied: bool) -> tuple:
    d = 16 * int(torch.randint(2, 9, (1,), generator=gen))
    return (int(torch.randint(100, 1000, (1,), generator=gen)), int(torch.randint(16, 128, (1,), generator=gen)), d,
            int(torch.randint(2, 7, (1,), generator=gen)), 4 * d, tied)


def _count_cases(gen: torch.Generator, kind: str) -> list[Case]:
    if kind == "visible":
        tied, untied = _config_case(gen, True), _config_case(gen, False)
        def label(a):
            return "vocab_size={}, context_length={}, emb_dim={}, n_layers={}, ff_dim={}, tied={}".format(*a)
        return [Case(tied, label(tied)), Case(untied, label(untied))]
    odd = _config_case(gen, False)
    odd = odd[:4] + (3 * odd[2] + 8, False)
    return [
        Case((50257, 2048, 12288, 96, 4 * 12288, True), "GPT-3: 96 layers, emb_dim 12288, context 2048, tied"),
        Case((50257, 1024, 768, 12, 3072, False), "GPT-2 small with a separate output head"),
        Case(odd, "ff_dim that is not 4 * emb_dim"),
    ]


register(Check(
    id="ch1.gpt_parameter_count", function_name="gpt_parameter_count",
    reference=reference_gpt_parameter_count, draw_cases=_count_cases,
    mistakes=(
        Mistake(lambda *a: _count_variant(*a, head=True), "the output head was counted although it is tied: "
                "with tied=True it shares the token embedding matrix, so it adds no parameters"),
        Mistake(lambda *a: _count_variant(*a, head=False), "the output head was not counted: with tied=False it "
                "has its own vocab_size x emb_dim matrix"),
        Mistake(lambda *a: _count_variant(*a, biases=False), "biases forgotten: every linear layer of the blocks "
                "(query/key/value, output projection, both feed-forward layers) has a bias vector"),
        Mistake(lambda *a: _count_variant(*a, norms=False), "layer norms forgotten: each block has two, plus one "
                "final norm, each with a scale and a shift of emb_dim numbers"),
        Mistake(lambda *a: _count_variant(*a, final_norm=False), "the final layer norm (after the last block) "
                "was forgotten: 2 * emb_dim more"),
        Mistake(lambda *a: _count_variant(*a, positions=False), "position embeddings forgotten: one learned row "
                "of emb_dim numbers per position, context_length rows"),
    ),
    rtol=0, atol=0,
))

# ---------------------------------------------------------------- concept questions

register_quiz("ch1.q1", "ch1.q2", "ch1.q3")
