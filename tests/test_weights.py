"""Loading GPT-2 checkpoints (random weights saved locally in the real format) and saving
our own models (chapter 4). The GPT-2 tests skip where transformers is not installed."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmcourse.config import GPTConfig
from llmcourse.model import GPT
from llmcourse.weights import load_gpt, load_hf_gpt2, load_model, save_model

HF_CONFIGS = {
    "tied": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=211),
    "untied-inner-eps": dict(n_embd=48, n_layer=3, n_head=6, n_positions=40, vocab_size=150,
                             n_inner=72, layer_norm_epsilon=1e-6, tie_word_embeddings=False),
    "one-head-one-layer": dict(n_embd=16, n_layer=1, n_head=1, n_positions=24, vocab_size=50),
}


def make_hf_model(folder, seed=0, **kw):
    """A randomly initialised GPT2LMHeadModel saved with save_pretrained, biases made nonzero."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.1)
            elif "ln" in name:
                p.normal_(mean=1.0, std=0.1)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_same_logits_as_transformers(tmp_path, name):
    hf = make_hf_model(tmp_path, **HF_CONFIGS[name])
    ours = load_hf_gpt2(tmp_path, device="cpu")
    idx = torch.randint(0, HF_CONFIGS[name]["vocab_size"], (3, HF_CONFIGS[name]["n_positions"]))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    diff = (got - expected).abs().max().item()
    assert diff < 1e-4, f"max abs logit difference {diff}"


def test_openai_style_key_names(tmp_path):
    """OpenAI's own upload has no 'transformer.' prefix and carries attn.bias mask buffers."""
    cfg = HF_CONFIGS["tied"]
    hf = make_hf_model(tmp_path, **cfg)
    state = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    for i in range(cfg["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64)
    save_file(state, tmp_path / "model.safetensors")
    ours = load_hf_gpt2(tmp_path, device="cpu")
    idx = torch.randint(0, cfg["vocab_size"], (1, 10))
    torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=0, atol=1e-4)


def test_pytorch_bin_is_read_with_weights_only(tmp_path):
    cfg = HF_CONFIGS["tied"]
    hf = make_hf_model(tmp_path, **cfg)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = load_hf_gpt2(tmp_path, device="cpu")
    idx = torch.randint(0, cfg["vocab_size"], (1, 10))
    torch.testing.assert_close(ours(idx), hf(idx).logits, rtol=0, atol=1e-4)


def _edit_safetensors(folder, edit):
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"), "missing tensors: h.1.mlp.c_fc.bias"),
    (lambda s: s.update({"transformer.h.0.attn.extra": torch.zeros(2)}), "unexpected tensors: h.0.attn.extra"),
    (lambda s: s.update({"transformer.wpe.weight": torch.zeros(63, 32)}),
     r"wrong shapes: wpe.weight: expected \(64, 32\), got \(63, 32\)"),
])
def test_mismatched_checkpoint_names_the_keys(tmp_path, edit, message):
    make_hf_model(tmp_path, **HF_CONFIGS["tied"])
    _edit_safetensors(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        load_hf_gpt2(tmp_path, device="cpu")


def test_unsupported_hf_config_and_missing_files(tmp_path):
    make_hf_model(tmp_path, **HF_CONFIGS["tied"])
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function='relu'"):
        load_hf_gpt2(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_gpt2(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_hf_gpt2(tmp_path)


def tiny(**kw):
    return GPTConfig(**{**dict(vocab_size=64, context_length=16, emb_dim=16, n_heads=2, n_layers=2), **kw})


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_round_trip(tmp_path, tie):
    torch.manual_seed(0)
    model = GPT(tiny(tie_embeddings=tie)).eval()
    save_model(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_gpt(tmp_path / "ckpt", device="cpu")
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert (loaded.out_head.weight is loaded.tok_emb.weight) == tie


def test_corrupt_or_mismatched_own_checkpoint(tmp_path):
    model = GPT(tiny())
    folder = save_model(model, tmp_path / "ckpt")
    good = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model(folder)
    (folder / "model.safetensors").write_bytes(good)
    (folder / "config.json").write_text(json.dumps(tiny(emb_dim=32).to_dict()))
    with pytest.raises(ValueError, match="does not match the config the weights were saved with"):
        load_model(folder)


def test_save_replaces_atomically(tmp_path):
    """A save over an existing checkpoint leaves no temporary files behind."""
    folder = tmp_path / "ckpt"
    save_model(GPT(tiny()), folder)
    save_model(GPT(tiny()), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
