"""The GPT model's parts (chapter 4) and its parameter count (chapter 1)."""
import math

import pytest
import torch
import torch.nn.functional as F

from llmcourse.config import PRESETS, TINY, GPTConfig, check_int, model_config_from
from llmcourse.model import (
    GELU,
    GPT,
    LayerNorm,
    eval_mode,
    gelu,
    layer_norm,
    linear_cross_entropy,
    next_token_loss,
    parameter_count,
    resolve_device,
)


def tiny(**kw):
    base = dict(vocab_size=101, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    return GPTConfig(**{**base, **kw})


# Published sizes: GPT-2's paper rounds them to 117M/345M/762M/1542M (untied output
# counted once); Hugging Face's GPT2LMHeadModel.num_parameters() gives these exact numbers.
@pytest.mark.parametrize("name, tied", [
    ("gpt2-small", 124_439_808),
    ("gpt2-medium", 354_823_168),
    ("gpt2-large", 774_030_080),
    ("gpt2-xl", 1_557_611_200),
])
def test_preset_parameter_counts(name, tied):
    cfg = PRESETS[name]
    count = parameter_count(cfg)
    assert count.tied == tied
    assert count.untied == tied + cfg.vocab_size * cfg.emb_dim
    with torch.device("meta"):  # shapes only, no memory
        model = GPT(cfg)
    assert model.num_parameters() == tied


def test_parameter_count_matches_transformers_for_odd_configs():
    transformers = pytest.importorskip("transformers")
    for kw in [dict(), dict(ff_dim=40, tie_embeddings=False)]:
        cfg = tiny(**kw)
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
            n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=kw.get("ff_dim"),
            tie_word_embeddings=cfg.tie_embeddings))
        expected = sum(p.numel() for p in hf.parameters())
        got = parameter_count(cfg)
        assert (got.tied if cfg.tie_embeddings else got.untied) == expected
        assert GPT(cfg).num_parameters() == expected


def test_gpt3_is_175b():
    gpt3 = GPTConfig(vocab_size=50257, context_length=2048, emb_dim=12288, n_heads=96, n_layers=96)
    assert round(parameter_count(gpt3).tied / 1e9) == 175


def test_layer_norm_lesson_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16) * 4 + 2
    w, b = torch.randn(16), torch.randn(16)
    ref = F.layer_norm(x, (16,), w, b, 1e-5)
    torch.testing.assert_close(layer_norm(x, w, b), ref, rtol=1e-5, atol=1e-5)
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.weight.copy_(w)
        ln.bias.copy_(b)
    torch.testing.assert_close(ln(x), ref, rtol=0, atol=0)
    # unit variance uses the population variance (divide by d, not d - 1)
    out = layer_norm(x, torch.ones(16), torch.zeros(16))
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(3, 5), rtol=1e-3, atol=1e-3)


def test_gelu_lesson_matches_torch_and_reference_points():
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(gelu(x), F.gelu(x, approximate="tanh"), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(GELU()(x), gelu(x), rtol=1e-6, atol=1e-6)
    # GELU(1) with the tanh approximation, computed by hand
    expected = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (1 + 0.044715)))
    assert abs(gelu(torch.tensor(1.0)).item() - expected) < 1e-7


def test_forward_shapes_and_attention_maps():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 101, (2, 9))
    logits = model(idx)
    assert logits.shape == (2, 9, 101)
    logits2, maps = model.forward_with_attention(idx)
    torch.testing.assert_close(logits, logits2, rtol=1e-5, atol=1e-5)
    assert len(maps) == 2 and maps[0].shape == (2, 4, 9, 9)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 9))


def test_last_only_gives_the_last_positions_logits():
    """What generation asks for: the last position projected, the same numbers as in the full logits."""
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 101, (2, 9))
    mask = torch.tensor([[False, False] + [True] * 7, [True] * 9])
    with torch.no_grad():
        for padding_mask in (None, mask):
            last = model(idx, padding_mask=padding_mask, last_only=True)
            assert last.shape == (2, 1, 101)
            torch.testing.assert_close(last, model(idx, padding_mask=padding_mask)[:, -1:], rtol=1e-5, atol=1e-5)


def test_lesson_attention_path_gives_the_same_logits():
    torch.manual_seed(0)
    fast = GPT(tiny()).eval()
    lesson = GPT(tiny(), fast_attention=False).eval()
    lesson.load_state_dict(fast.state_dict())
    idx = torch.randint(0, 101, (2, 9))
    torch.testing.assert_close(lesson(idx), fast(idx), rtol=1e-5, atol=1e-5)


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 101, (1, 12))
    other = idx.clone()
    other[0, 8:] = (other[0, 8:] + 1) % 101
    torch.testing.assert_close(model(idx)[:, :8], model(other)[:, :8], rtol=0, atol=0)


def test_weight_tying():
    model = GPT(tiny())
    assert model.out_head.weight is model.tok_emb.weight
    untied = GPT(tiny(tie_embeddings=False))
    assert untied.out_head.weight is not untied.tok_emb.weight


@pytest.mark.parametrize("kwargs, message", [
    (dict(emb_dim=30, n_heads=4), "divisible by n_heads"),
    (dict(n_layers=0), "GPTConfig.n_layers must be an int >= 1, got 0"),
    (dict(drop_rate=1.5), "drop_rate"),
    (dict(vocab_size=2.5), "vocab_size"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_presets_and_round_trip():
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.from_preset("gpt5")
    cfg = GPTConfig.from_preset("gpt2-medium", context_length=256)
    assert cfg.emb_dim == 1024 and cfg.context_length == 256 and cfg.ff_dim == 4096
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_embd": 3})


def test_model_config_from_names_and_files(tmp_path):
    assert model_config_from("tiny") == TINY and model_config_from("gpt2-xl") == PRESETS["gpt2-xl"]
    path = tmp_path / "model.json"
    path.write_text('{"emb_dim": 256, "n_layers": 6, "n_heads": 8}')
    assert model_config_from(path) == GPTConfig(emb_dim=256, n_layers=6, n_heads=8)
    with pytest.raises(ValueError, match="preset name .*tiny.*gpt2-small.*'nope' is neither"):
        model_config_from("nope")
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        model_config_from(path)


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {}, "n must be an int >= 1, got 0"),
    (True, {}, "n must be an int >= 1, got True"),
    (2.0, {}, "got 2.0"),
    (5, dict(minimum=0, maximum=4, note=" (the blocks)"), r"n must be an int from 0 to 4 \(the blocks\), got 5"),
])
def test_check_int_names_the_argument_and_the_bound(value, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_int("n", value, **kwargs)
    assert check_int("n", 3) == 3


@pytest.mark.parametrize("idx, error, message", [
    (torch.tensor([[1, 2, 101]]), ValueError, r"token id 101 is out of range \[0, 101\)"),
    (torch.tensor([[-1, 2]]), ValueError, "token id -1"),
    (torch.zeros(1, 17, dtype=torch.long), ValueError, "longer than the model's context_length 16"),
    (torch.zeros(1, 3), TypeError, "integer token ids"),
    (torch.zeros(3, dtype=torch.long), ValueError, r"shape \(batch, seq_len\)"),
    ([[1, 2]], TypeError, "torch.Tensor"),
])
def test_forward_input_errors(idx, error, message):
    model = GPT(tiny())
    with pytest.raises(error, match=message):
        model(idx)


def test_gpt_rejects_non_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"emb_dim": 8})


def test_next_token_loss():
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens: loss = log 4
    targets = torch.tensor([[1, 3]])
    assert abs(next_token_loss(logits, targets).item() - math.log(4)) < 1e-6
    # ignored positions do not count
    logits[0, 1, 3] = 10.0
    assert abs(next_token_loss(logits, torch.tensor([[1, -100]])).item() - math.log(4)) < 1e-6
    with pytest.raises(ValueError, match="targets of shape"):
        next_token_loss(logits, torch.tensor([1, 3]))


@pytest.mark.parametrize("n_rows, d", [(7, 4), (20, 8), (64, 16)])  # one chunk, several, a ragged last one
def test_linear_cross_entropy_equals_the_lesson_loss(n_rows, d):
    """The fast path training uses gives next_token_loss's value and gradients."""
    g = torch.Generator().manual_seed(n_rows)
    hidden = torch.randn(2, n_rows, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(53, d, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 53, (2, n_rows), generator=g)
    targets[0, :3] = -100  # ignored rows, including a whole stretch
    grads = []
    for loss_fn in (lambda: next_token_loss(hidden @ weight.T, targets),
                    lambda: linear_cross_entropy(hidden, weight, targets)):
        loss = loss_fn()
        (3.0 * loss).backward()  # an outer factor must reach both gradients
        grads.append((loss.detach(), hidden.grad, weight.grad))
        hidden.grad = weight.grad = None
    for plain, fast in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # evaluation takes the plain path
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets), grads[0][0])
    with pytest.raises(ValueError, match="need targets of shape"):
        linear_cross_entropy(hidden, weight, targets[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_linear_cross_entropy_under_autocast(dtype):
    """The GPU path (chapter 4: bf16/fp16 autocast): same loss as the plain path computed
    under the same autocast, fp32 gradients for fp32 weights, and an outer scale (fp16's
    GradScaler multiplies the loss by 2**16) reaching the gradients unrounded."""
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 24, 16, generator=g, requires_grad=True)
    weight = (0.1 * torch.randn(300, 16, generator=g)).requires_grad_()
    targets = torch.randint(0, 300, (2, 24), generator=g)
    results = []
    for fused in (False, True):
        with torch.autocast("cpu", dtype=dtype):
            loss = linear_cross_entropy(hidden, weight, targets) if fused else next_token_loss(hidden @ weight.T, targets)
        (loss * 2.0**16).backward()
        results.append((loss.detach().float(), hidden.grad / 2**16, weight.grad / 2**16))
        assert loss.dtype == torch.float32 and weight.grad.dtype == torch.float32
        hidden.grad = weight.grad = None
    for plain, fast in zip(*results):  # each chunk's product is rounded to bf16/fp16: a few ulps of the largest
        torch.testing.assert_close(fast, plain, rtol=2e-2, atol=2e-2 * plain.abs().max().item())


def test_linear_cross_entropy_with_bf16_weights():
    """A model kept in bf16 (no autocast): bf16 gradients, close to the exact ones."""
    g = torch.Generator().manual_seed(1)
    hidden64 = torch.randn(2, 40, 16, generator=g, dtype=torch.float64)
    weight64 = 0.1 * torch.randn(300, 16, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 300, (2, 40), generator=g)
    grads = []
    for dtype, loss_fn in ((torch.float64, next_token_loss), (torch.bfloat16, None)):
        hidden = hidden64.to(dtype).clone().requires_grad_()
        weight = weight64.to(dtype).clone().requires_grad_()
        loss = linear_cross_entropy(hidden, weight, targets) if loss_fn is None else loss_fn(hidden @ weight.T, targets)
        loss.backward()
        grads.append((loss.detach().double(), hidden.grad.double(), weight.grad.double()))
    assert grads[1][2].abs().max() > 0
    for exact, fast in zip(*grads):
        torch.testing.assert_close(fast, exact, rtol=2e-2, atol=2e-2 * exact.abs().max().item())


def test_gpt_forward_with_targets_gives_the_loss_and_its_gradients():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx, targets = torch.randint(0, 101, (3, 16)), torch.randint(0, 101, (3, 16))
    grads = []
    for fused in (False, True):
        loss = model(idx, targets=targets) if fused else next_token_loss(model(idx), targets)
        loss.backward()
        grads.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
        model.zero_grad(set_to_none=True)
    for plain, fast in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-7)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert auto.type in {"cpu", "mps"}
    model = GPT(tiny(), device="cpu")
    assert model.device == torch.device("cpu")


def test_eval_mode_restores_the_mode_even_on_errors():
    model = GPT(tiny()).train()
    with eval_mode(model):
        assert not model.training and not model.blocks[0].training
    assert model.training and model.blocks[0].training
    with pytest.raises(ValueError), eval_mode(model):
        model(torch.tensor([[101]]))
    assert model.training, "an error inside the block must not leave the model in eval mode"
    with eval_mode(model.eval()):
        pass
    assert not model.training
