"""LoRA adapters (chapter 5) (llmcourse.lora): exact at init, only adapters train, merging is exact."""
import pytest
import torch
from torch import nn

from llmcourse.config import GPTConfig
from llmcourse.lora import (
    LoRALinear,
    apply_lora,
    count_trainable_parameters,
    merge_lora,
)
from llmcourse.model import GPT, next_token_loss
from llmcourse.weights import load_model, save_model

pytestmark = pytest.mark.xdist_group("lora")

CONFIG = GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def small_gpt(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval()


def tokens(seed=1, batch=3, length=12) -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def train_a_few_steps(model, steps=5):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = tokens(seed=2), tokens(seed=3)
    model.train()
    for _ in range(steps):
        loss = next_token_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_lora_linear_matches_the_formula():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    layer = LoRALinear(linear, rank=2, alpha=3.0)
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (4, 2)
    assert torch.count_nonzero(layer.lora_B) == 0, "B starts at zero"
    assert torch.count_nonzero(layer.lora_A) > 0, "A starts random (Kaiming-uniform)"
    bound = 1 / 6 ** 0.5  # kaiming_uniform_(a=sqrt(5)) on fan_in 6: U(-1/sqrt(6), 1/sqrt(6))
    assert layer.lora_A.abs().max() <= bound
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x), linear(x), rtol=0, atol=0)

    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(4, 2))
    W, b, A, B = linear.weight, linear.bias, layer.lora_A, layer.lora_B
    expected = x @ W.T + b + (3.0 / 2) * (x @ A.T @ B.T)  # W x + b + (alpha / r) B A x
    torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)


def test_lora_linear_rejects_bad_arguments():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(2, 2, 1), rank=2, alpha=1)
    for rank in (0, -1, 2.0):
        with pytest.raises(ValueError, match="rank"):
            LoRALinear(nn.Linear(2, 2), rank=rank, alpha=1)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(2, 2), rank=1, alpha=0)


def test_apply_lora_leaves_outputs_unchanged_and_trains_only_adapters():
    model = small_gpt()
    x = tokens()
    before = model(x)
    apply_lora(model, rank=4, alpha=8)
    assert torch.equal(model(x), before), "with B = 0 the wrapped model must compute exactly the same logits"
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable, "the LoRA matrices must train"
    assert all(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for name in trainable), sorted(trainable)
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped == [f"blocks.{i}.{t}" for i in range(2) for t in ("attn.qkv", "attn.out_proj", "ff.fc1", "ff.fc2")]


@pytest.mark.parametrize("rank", [1, 4])
def test_trainable_count_is_rank_times_in_plus_out(rank):
    d, f, layers = CONFIG.emb_dim, CONFIG.ff_dim, CONFIG.n_layers
    model = small_gpt()
    total = model.num_parameters()
    apply_lora(model, rank=rank, alpha=16)
    # Per block: qkv d -> 3d, out_proj d -> d, fc1 d -> f, fc2 f -> d; each adds rank * (in + out).
    per_block = rank * ((d + 3 * d) + (d + d) + (d + f) + (f + d))
    assert count_trainable_parameters(model) == (layers * per_block, total + layers * per_block)

    only_qkv = apply_lora(small_gpt(), rank=rank, alpha=16, targets=("attn.qkv",))
    assert count_trainable_parameters(only_qkv)[0] == layers * rank * (d + 3 * d)


def test_apply_lora_rejects_unknown_targets_and_double_wrapping():
    with pytest.raises(ValueError, match="no layer 'attn.nope'"):
        apply_lora(small_gpt(), targets=("attn.nope",))
    model = apply_lora(small_gpt(), rank=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, rank=2)
    with pytest.raises(TypeError, match="GPT"):
        apply_lora(nn.Linear(2, 2))


def test_training_changes_only_adapters_and_merging_keeps_the_outputs(tmp_path):
    model = small_gpt()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    apply_lora(model, rank=4, alpha=8)
    train_a_few_steps(model)
    for name, p in model.named_parameters():
        base = name.replace(".linear.", ".")
        if base in frozen:
            assert torch.equal(p, frozen[base]), f"frozen {name} changed"
    assert all(torch.count_nonzero(m.lora_B) > 0 for m in model.modules() if isinstance(m, LoRALinear))

    x = tokens(seed=4)
    with torch.no_grad():
        unmerged = model(x)
        merge_lora(model)
        merged = model(x)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    assert set(model.state_dict()) == set(small_gpt().state_dict()), "merged: the plain GPT's parameter names"
    assert not torch.equal(model.blocks[0].attn.qkv.weight, frozen["blocks.0.attn.qkv.weight"])

    # A merged model is a plain GPT again: it saves and loads like one.
    save_model(model, tmp_path / "merged")
    torch.testing.assert_close(load_model(tmp_path / "merged", device="cpu")(x), merged, rtol=0, atol=0)
