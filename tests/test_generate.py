"""Sampling rules (chapter 2) and the generation loop, with and without the KV cache (chapter 4).

The sampling rules are checked by hand; the loop against transformers' GPT-2 (those
tests skip where transformers is not installed)."""
import math

import pytest
import torch

from llmcourse.generate import (
    generate,
    next_token_probs,
    sample_next_token,
    softmax_with_temperature,
    top_k_filter,
    top_p_filter,
)

NEG_INF = float("-inf")


def test_temperature_hand_example():
    logits = torch.tensor([math.log(1.0), math.log(3.0)])
    torch.testing.assert_close(softmax_with_temperature(logits, 1.0), torch.tensor([0.25, 0.75]))
    # T = 0.5 squares the odds: 1 : 9
    torch.testing.assert_close(softmax_with_temperature(logits, 0.5), torch.tensor([0.1, 0.9]))
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(logits, 0.0)


def test_top_k_hand_example():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    expected = torch.tensor([[NEG_INF, 4.0, 3.0, NEG_INF]])
    assert torch.equal(top_k_filter(logits, 2), expected)
    assert torch.equal(top_k_filter(logits, 10), logits)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, 0)


def test_top_p_hand_example():
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    logits = probs.log()
    # sorted: 0.5, 0.25, 0.15, 0.1; p = 0.7 needs 0.5 + 0.25 = 0.75 -> keep two
    kept = top_p_filter(logits, 0.7)
    assert torch.isinf(kept).tolist() == [True, False, True, False]
    # p = 0.75 exactly: 0.5 + 0.25 reaches it, so still two tokens
    assert torch.isinf(top_p_filter(logits, 0.75 - 1e-6)).tolist() == [True, False, True, False]
    # tiny p keeps only the most likely token; p = 1 keeps all
    assert (~torch.isinf(top_p_filter(logits, 1e-9))).sum() == 1
    assert not torch.isinf(top_p_filter(logits, 1.0)).any()


def test_top_p_matches_transformers_warper():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    for p in (0.1, 0.5, 0.9):
        ref = transformers.TopPLogitsWarper(top_p=p)(None, logits.clone())
        assert torch.equal(torch.isinf(top_p_filter(logits, p)), torch.isinf(ref)), p


def test_sample_next_token_greedy_and_seeded():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert sample_next_token(logits).tolist() == [1, 0]
    a = sample_next_token(logits, temperature=1.5, generator=torch.Generator().manual_seed(7))
    b = sample_next_token(logits, temperature=1.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    # top_k=1 makes sampling greedy whatever the temperature
    many = torch.stack([sample_next_token(logits, 5.0, top_k=1) for _ in range(20)])
    assert (many == torch.tensor([1, 0])).all()


def hf_and_ours(seed=0, **kw):
    """A random transformers GPT-2 (larger weights than its init) and the same model loaded into ours."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=97)
    cfg.update(kw)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so logits are far from ties
        for p in hf.parameters():
            p.mul_(5.0)
    import tempfile

    from llmcourse.weights import load_hf_gpt2
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_hf_gpt2(d, device="cpu")
    return hf, ours


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_equals_transformers_generate(seed):
    hf, ours = hf_and_ours(seed)
    prompt = torch.randint(0, 97, (3, 6), generator=torch.Generator().manual_seed(seed))
    expected = hf.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    for use_cache in (True, False):
        got = generate(ours, prompt, 40, use_cache=use_cache)
        assert torch.equal(got, expected), f"use_cache={use_cache}"


def test_left_padded_batch_equals_transformers_and_single_prompts():
    hf, ours = hf_and_ours(3)
    prompt = torch.randint(1, 97, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0  # row 1 is a 4-token prompt, left-padded
    expected = hf.generate(prompt, attention_mask=mask, max_new_tokens=15, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    for use_cache in (True, False):
        got = generate(ours, prompt, 15, padding_mask=mask, use_cache=use_cache)
        assert torch.equal(got, expected), f"use_cache={use_cache}"
    alone = generate(ours, prompt[1:, 3:], 15)
    assert torch.equal(alone[0], got[1, 3:])


def test_sampling_cached_equals_uncached():
    _, ours = hf_and_ours(4)
    prompt = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(4))
    kw = dict(temperature=0.9, top_k=20, top_p=0.9)
    a = generate(ours, prompt, 30, generator=torch.Generator().manual_seed(11), use_cache=True, **kw)
    b = generate(ours, prompt, 30, generator=torch.Generator().manual_seed(11), use_cache=False, **kw)
    assert torch.equal(a, b)


def test_stops_at_eos_and_pads_finished_rows():
    _, ours = hf_and_ours(5)
    prompt = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(5))
    free = generate(ours, prompt, 20)
    eos = free[0, 6].item()  # the third token row 0 generates
    out = generate(ours, prompt, 20, eos_id=eos)
    first_eos = [row[4:].tolist().index(eos) if eos in row[4:].tolist() else None for row in out]
    assert first_eos[0] is not None and first_eos[0] <= 2
    for row, pos in zip(out, first_eos):
        if pos is not None:
            assert (row[4 + pos:] == eos).all(), "tokens after end-of-text must stay end-of-text"
    if all(p is not None for p in first_eos):
        assert out.size(1) < 24, "generation should stop once every row has finished"


def test_longer_than_context_crops_without_cache():
    _, ours = hf_and_ours(6, n_positions=16)
    prompt = torch.randint(0, 97, (1, 10))
    out = generate(ours, prompt, 12)  # 22 > 16 tokens: sliding window
    assert out.shape == (1, 22)
    with torch.no_grad():
        last = ours(out[:, 5:21])[:, -1].argmax(-1)
    assert out[0, 21] == last[0]


def test_generate_puts_back_the_training_mode():
    from llmcourse.config import GPTConfig
    from llmcourse.model import GPT

    model = GPT(GPTConfig(vocab_size=20, context_length=8, emb_dim=8, n_heads=2, n_layers=1)).train()
    out = generate(model, torch.tensor([[1, 2]]), 3)
    assert out.shape == (1, 5) and model.training, "generate runs in eval mode and restores train mode"


def test_generate_input_errors():
    _, ours = hf_and_ours(7)
    with pytest.raises(ValueError, match=r"shape \(batch, seq_len\)"):
        generate(ours, torch.tensor([1, 2, 3]), 5)
    with pytest.raises(ValueError, match="out of range"):
        generate(ours, torch.tensor([[1, 2, 500]]), 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(ours, torch.tensor([[1, 2]]), -1)


def test_next_token_probs_is_what_sampling_draws_from():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    probs = next_token_probs(logits, temperature=0.8, top_k=3, top_p=0.9)
    expected = torch.softmax(top_p_filter(top_k_filter(logits / 0.8, 3), 0.9), dim=-1)
    assert torch.equal(probs, expected) and probs[0, 3:].eq(0).all()
    draws = torch.stack([sample_next_token(logits, 0.8, 3, 0.9, torch.Generator().manual_seed(s)) for s in range(300)])
    assert set(draws.flatten().tolist()) <= set(probs[0].nonzero().flatten().tolist())
    assert torch.equal(next_token_probs(logits), torch.tensor([[1.0, 0, 0, 0, 0]]))  # greedy: all on the argmax
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        next_token_probs(logits, temperature=-1.0)


@pytest.mark.parametrize("which", ["gpt2", "course"])
def test_generate_text_works_with_either_tokenizer(which):
    """GPT-2's tiktoken encoding and the course's own BPETokenizer share what generation
    uses: encode(text, allowed_special), decode, eot_token, n_vocab."""
    from llmcourse.config import GPTConfig
    from llmcourse.files import read_text
    from llmcourse.generate import generate_text
    from llmcourse.model import GPT
    from llmcourse.tokenizer import BPETokenizer, gpt2_tokenizer

    tokenizer = gpt2_tokenizer() if which == "gpt2" else BPETokenizer.train(read_text("the-verdict.txt"), 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.n_vocab, context_length=32, emb_dim=16, n_heads=2, n_layers=1)).eval()
    out = generate_text(model, tokenizer, ["I had", "The"], max_new_tokens=6)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    # a model whose every row says "end of text" stops at once, for both tokenizers
    with torch.no_grad():
        model.out_head.weight.zero_()
        model.out_head.weight[tokenizer.eot_token] = 1.0
        model.final_norm.weight.zero_()
        model.final_norm.bias.fill_(1.0)
    assert generate_text(model, tokenizer, "I had", max_new_tokens=6) == ""


def test_a_course_tokenizer_without_end_of_text_says_so():
    from llmcourse.tokenizer import BPETokenizer

    tokenizer = BPETokenizer.train("abc abc abd", 258, special_tokens=())
    with pytest.raises(ValueError, match="no <\\|endoftext\\|> token"):
        tokenizer.eot_token
