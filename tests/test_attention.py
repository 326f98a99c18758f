"""Attention (chapter 3), checked against hand-computed numbers and PyTorch's own layers."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.attention import (
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

EMB_DIM, N_HEADS = 24, 4


def small_mha(fast_attention: bool, drop_rate: float = 0.0) -> MultiHeadAttention:
    return MultiHeadAttention(EMB_DIM, N_HEADS, drop_rate, qkv_bias=True, fast_attention=fast_attention)


def test_simplified_attention_hand_example():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    context, weights = simplified_self_attention(x)
    # scores = x x^T = [[1,0,1],[0,1,1],[1,1,2]]; row 0 softmax = (e, 1, e) / (2e + 1)
    e = math.e
    row0 = torch.tensor([e, 1.0, e]) / (2 * e + 1)
    row2 = torch.tensor([e, e, e**2]) / (2 * e + e**2)
    torch.testing.assert_close(weights[0], row0, rtol=0, atol=1e-6)
    torch.testing.assert_close(weights[2], row2, rtol=0, atol=1e-6)
    # context 0 = e*[1,0] + 1*[0,1] + e*[1,1], normalised
    torch.testing.assert_close(context[0], torch.tensor([2 * e, 1 + e]) / (2 * e + 1), rtol=0, atol=1e-6)


def test_sdpa_hand_example_uses_one_over_sqrt_dk():
    q = torch.tensor([[2.0, 0.0, 0.0, 0.0]])  # d_k = 4, so scores are divided by 2
    k = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    v = torch.tensor([[10.0], [20.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    # scores = [2, 0] / sqrt(4) = [1, 0]; weights = softmax([1, 0])
    expected_w = torch.tensor([[math.e / (math.e + 1), 1 / (math.e + 1)]])
    torch.testing.assert_close(w, expected_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, expected_w @ v, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 5, 8), (1, 1, 7, 16), (4, 9, 4)])
def test_sdpa_matches_torch(shape):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=g) for _ in range(3))
    mask = causal_mask(shape[-2])
    out, w = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def test_causal_mask_with_past():
    m = causal_mask(2, past=3)
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert torch.equal(causal_mask(3), torch.tril(torch.ones(3, 3, dtype=torch.bool)))


def test_padded_causal_mask_hand_example():
    # Row 0: one pad, then 3 real tokens; row 1: all 4 real. One token cached, 3 new.
    real = torch.tensor([[False, True, True, True], [True, True, True, True]])
    m = padded_causal_mask(real, T=3, past=1)
    assert m.shape == (2, 1, 3, 4)
    expected_row0 = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m[0, 0], expected_row0), m[0, 0].int().tolist()
    assert torch.equal(m[1, 0], causal_mask(3, past=1)), m[1, 0].int().tolist()
    # A query that is itself padding sees only itself, so its softmax is defined.
    pad_first = padded_causal_mask(torch.tensor([[False, True]]), T=2)
    assert pad_first[0, 0].int().tolist() == [[1, 0], [0, 1]]


def test_split_merge_heads_roundtrip_and_layout():
    x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 3, 2)
    # head 1 of token 2 holds channels 2..3 of that token
    assert torch.equal(h[0, 1, 2], x[0, 2, 2:4])
    assert torch.equal(merge_heads(h), x)


def _copy_into_torch_mha(ours: MultiHeadAttention, d: int, n_heads: int) -> torch.nn.MultiheadAttention:
    ref = torch.nn.MultiheadAttention(d, n_heads, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("fast_attention", [True, False])
def test_multi_head_attention_matches_torch_multihead_attention(fast_attention):
    torch.manual_seed(0)
    mha = small_mha(fast_attention).eval()
    for p in mha.parameters():  # nonzero biases so a wrong bias layout would show
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, 10, EMB_DIM)
    ref = _copy_into_torch_mha(mha, EMB_DIM, N_HEADS)
    future = torch.triu(torch.ones(10, 10, dtype=torch.bool), diagonal=1)  # True = blocked
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    got, _ = mha(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_fast_and_lesson_paths_agree_and_weights_are_causal():
    torch.manual_seed(1)
    fast = small_mha(True, drop_rate=0.3).eval()  # dropout must be off in eval() on both paths
    lesson = small_mha(False, drop_rate=0.3).eval()
    lesson.load_state_dict(fast.state_dict())
    x = torch.randn(2, 12, EMB_DIM)
    out_fast, none = fast(x)
    out_lesson, weights = lesson(x)
    assert none is None
    torch.testing.assert_close(out_fast, out_lesson, rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, N_HEADS, 12, 12)
    assert torch.all(weights.triu(diagonal=1) == 0), "a token attends to a later token"
    # asking the fast layer for weights takes the lesson path
    out_w, weights_fast = fast(x, return_weights=True)
    torch.testing.assert_close(weights_fast, weights)


@pytest.mark.parametrize("fast_attention", [True, False])
def test_no_token_sees_the_future(fast_attention):
    torch.manual_seed(2)
    mha = small_mha(fast_attention).eval()
    x = torch.randn(1, 9, EMB_DIM)
    y = x.clone()
    y[:, 5:] = torch.randn(1, 4, EMB_DIM)  # change only tokens 5..8
    a, _ = mha(x)
    b, _ = mha(y)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_dropout_only_in_training():
    torch.manual_seed(3)
    att = CausalAttention(8, 8, drop_rate=0.5)
    x = torch.randn(2, 6, 8)
    att.eval()
    a, b = att(x), att(x)
    assert torch.equal(a, b)
    att.train()
    att(x)
    assert (att.last_weights == 0).any(), "dropout should zero some attention weights in train()"


@pytest.mark.parametrize("fast_attention", [True, False])
def test_kv_cache_step_equals_full_pass(fast_attention):
    torch.manual_seed(4)
    mha = small_mha(fast_attention).eval()
    x = torch.randn(2, 7, EMB_DIM)
    full, _ = mha(x)
    cache = KVCache(n_layers=1, max_len=7)
    first, _ = mha(x[:, :4], cache=cache, layer=0)
    cache.advance(4)
    steps = [first]
    for t in range(4, 7):
        out, _ = mha(x[:, t:t + 1], cache=cache, layer=0)
        cache.advance(1)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-6)
    assert cache.keys[0].shape == (2, N_HEADS, 7, EMB_DIM // N_HEADS), "one buffer of max_len positions"


def test_kv_cache_is_full_at_max_len():
    cache = KVCache(n_layers=1, max_len=2)
    k = torch.zeros(1, N_HEADS, 3, EMB_DIM // N_HEADS)
    with pytest.raises(ValueError, match="full: 3 positions needed, 2 allocated"):
        cache.update(0, k, k)
