"""llmcourse's GPT vs transformers' GPT2LMHeadModel (sdpa), side by side in one run.

Same config and the same random weights on both sides; each measurement is repeated
with the two sides interleaved and the median is kept, and every figure is
reported as a ratio against the other side measured in this run.

    .venv/bin/python benchmarks/bench_model.py                  # CPU, fp32, 2 threads
    .venv/bin/python benchmarks/bench_model.py --device cuda --dtype bf16 --compile

Measured: forward tokens/s; training step tokens/s (forward + mean next-token
cross-entropy + backward + optimizer step, the **same** optimizer on both sides: fused
``torch.optim.AdamW``; llmcourse through its training path ``model(x, targets=y)``,
transformers through its logits and ``F.cross_entropy``), so the ratio measures the
models, not the optimizers; greedy generation tokens/s (10-token prompt, 100 new tokens,
batch 1) with and without the KV cache, and, as a same-run baseline for the uncached
loop, llmcourse's model projecting every position to the vocabulary at each step (what
it did before ``forward(..., last_only=True)``).
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


class AllPositions(torch.nn.Module):
    """llmcourse's model with ``last_only`` ignored: every position projected to the vocabulary."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    @property
    def device(self):
        return self.model.device

    def forward(self, idx, cache=None, padding_mask=None, last_only=False):
        return self.model(idx, cache=cache, padding_mask=padding_mask)


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

    # Training step: the same optimizer on both sides; each side's own way to the loss.
    ours.train()
    hf.train()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)

    def step_ours():
        with autocast:
            loss = ours_fwd(x, targets=y)
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
        opt_hf.zero_grad(set_to_none=True)

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

    def gen(use_cache, model=ours):
        with autocast:
            return generate(model, prompt, n, use_cache=use_cache)

    def gen_hf():
        with autocast:
            return hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               eos_token_id=None, pad_token_id=0)

    every = AllPositions(ours)
    assert torch.equal(gen(True), gen_hf()), "cached generation differs from transformers"
    assert torch.equal(gen(False), gen(False, every)), "projecting only the last position changed the tokens"
    t_c, t_u, t_a, t_h = [], [], [], []
    for _ in range(max(1, args.repeats // 2)):
        t_c.append(timed(lambda: gen(True), device, 1))
        t_u.append(timed(lambda: gen(False), device, 1))
        t_a.append(timed(lambda: gen(False, every), device, 1))
        t_h.append(timed(gen_hf, device, 1))
    cached, uncached, all_positions, hf_gen = (n / statistics.median(t) for t in (t_c, t_u, t_a, t_h))

    print(f"\n{args.preset}, context {args.context_length}, batch {args.batch}, {args.dtype}, "
          f"{args.threads} threads, device {device}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}\n")
    print("| measurement | llmcourse tok/s | transformers tok/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, (a, b) in results.items():
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    print(f"| greedy generation, KV cache | {cached:,.1f} | {hf_gen:,.1f} | {cached / hf_gen:.2f}x |")
    print(f"| greedy generation, no cache | {uncached:,.1f} | {hf_gen:,.1f} | {uncached / hf_gen:.2f}x |")
    print(f"| greedy generation, no cache, every position projected (before) | {all_positions:,.1f} | "
          f"{hf_gen:,.1f} | {all_positions / hf_gen:.2f}x |")
    print(f"\ncached vs our own uncached generation: {cached / uncached:.2f}x; uncached, last position only vs "
          f"every position projected: {uncached / all_positions:.2f}x")


if __name__ == "__main__":
    main()
