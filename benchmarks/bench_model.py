"""llmcourse's GPT vs transformers' GPT2LMHeadModel (sdpa), side by side in one run.

Same config and the same random weights on both sides; each measurement is repeated
with the two sides interleaved and the median is kept, and every figure is
reported as a ratio against the other side measured in this run.

    .venv/bin/python benchmarks/bench_model.py                  # CPU, fp32, 2 threads
    .venv/bin/python benchmarks/bench_model.py --device cuda --dtype bf16 --compile

Measured: forward tokens/s, training step tokens/s (forward + loss + backward +
optimizer step; each side with its usual optimizer: fused AdamW for llmcourse,
torch.optim.AdamW defaults for transformers), greedy generation tokens/s (10-token
prompt, 100 new tokens) with and without the KV cache.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from llmcourse.config import GPTConfig
from llmcourse.generate import generate
from llmcourse.model import next_token_loss
from llmcourse.weights import load_hf_gpt2


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(args, device):
    import transformers

    cfg = GPTConfig.from_preset(args.preset, context_length=args.context_length, drop_rate=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, attn_implementation="sdpa"))
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_hf_gpt2(d, device=device)
    return cfg, hf.to(device), ours


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt2-small")
    ap.add_argument("--context-length", type=int, default=256, dest="context_length",
                    help="the model's context_length, and the tokens per sequence")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile llmcourse's model")
    ap.add_argument("--new-tokens", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg, hf, ours = build(args, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    ours_fwd = torch.compile(ours) if args.compile else ours

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.context_length), generator=g).to(device)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.context_length), generator=g).to(device)
    tokens = args.batch * args.context_length
    results = {}

    # Forward, inference mode.
    def fwd_ours():
        with torch.no_grad(), autocast:
            ours_fwd(x)

    def fwd_hf():
        with torch.no_grad(), autocast:
            hf(x)

    # Training step: each side as its users would write it.
    ours.train()
    hf.train()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def step_ours():
        with autocast:
            loss = next_token_loss(ours_fwd(x), y)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_hf():
        # HF shifts labels internally: feed y as labels of a sequence one longer.
        with autocast:
            logits = hf(x).logits
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt_hf.step()
        opt_hf.zero_grad()

    for name, ours_fn, hf_fn in [("forward", fwd_ours, fwd_hf), ("train step", step_ours, step_hf)]:
        t_ours, t_hf = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
            t_ours.append(timed(ours_fn, device, 1))
            t_hf.append(timed(hf_fn, device, 1))
        results[name] = (tokens / statistics.median(t_ours), tokens / statistics.median(t_hf))

    # Greedy generation, 10-token prompt, 100 new tokens, batch 1.
    ours.eval()
    hf.eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 10), generator=g).to(device)
    n = args.new_tokens

    def gen(use_cache):
        with autocast:
            return generate(ours, prompt, n, use_cache=use_cache)

    def gen_hf():
        with autocast:
            return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               eos_token_id=None, pad_token_id=0)

    assert torch.equal(gen(True), gen_hf()), "cached generation differs from transformers"
    t_c, t_u, t_h = [], [], []
    for _ in range(max(1, args.repeats // 2)):
        t_c.append(timed(lambda: gen(True), device, 1))
        t_u.append(timed(lambda: gen(False), device, 1))
        t_h.append(timed(gen_hf, device, 1))
    cached, uncached, hf_gen = (n / statistics.median(t) for t in (t_c, t_u, t_h))

    print(f"\n{args.preset}, context {args.context_length}, batch {args.batch}, {args.dtype}, "
          f"{args.threads} threads, device {device}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}\n")
    print("| measurement | llmcourse tok/s | transformers tok/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, (a, b) in results.items():
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    print(f"| greedy generation, KV cache | {cached:,.1f} | {hf_gen:,.1f} | {cached / hf_gen:.2f}x |")
    print(f"| greedy generation, no cache | {uncached:,.1f} | {hf_gen:,.1f} | {uncached / hf_gen:.2f}x |")
    print(f"\ncached vs our own uncached generation: {cached / uncached:.2f}x")


if __name__ == "__main__":
    main()
