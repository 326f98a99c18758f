"""llmcourse's GPT beside its peers on the same work, in one run: transformers'
GPT2LMHeadModel (sdpa), nanoGPT's ``model.py`` and the from-scratch book's ``GPTModel``.

    .venv/bin/python benchmarks/bench_model.py                              # both sizes, CPU fp32, 2 threads
    .venv/bin/python benchmarks/bench_model.py --nanogpt ~/src/nanoGPT/model.py   # with nanoGPT
    .venv/bin/pip install --no-deps --target ../peers llms-from-scratch==1.0.19   # the book's models...
    PYTHONPATH=../peers .venv/bin/python benchmarks/bench_model.py          # ...beside the others
    .venv/bin/python benchmarks/bench_model.py --device cuda --dtype bf16 --compile

Peers are optional: nanoGPT is read from a clone of its repository (``--nanogpt``, the
path of its ``model.py``; its source is not part of this project), the book's models come
from its PyPI package ``llms-from-scratch`` (installed into a folder of its own, without its
dependencies, which ch04 does not need and which would not fit the course's pins). transformers comes with the test requirements.

The same work on every side: the same shapes (GPT-2's 50,257-token vocabulary, biases in
every linear layer and layer norm, dropout 0), random weights, fp32 unless ``--dtype``,
and the **same optimizer**: fused ``torch.optim.AdamW``, lr 1e-4, all parameters in one
group. Each side reaches the mean next-token cross-entropy its own way: llmcourse through
its training path ``model(x, targets=y)`` (the chunked ``linear_cross_entropy``), nanoGPT
through ``model(x, targets)``, transformers and the book through their logits and
``F.cross_entropy``. So a training ratio measures the model and its loss, not the optimizer.
(The book's model unties the output head from the token embedding, as the book does:
38M more parameters at gpt2-small.)

Rows: training step tokens/s (forward + loss + backward + optimizer step); greedy generation
tokens/s, batch 1, a 10-token prompt and 100 new tokens, without a cache (each side's own
loop: llmcourse's and nanoGPT's project only the last position, the book's and
transformers' every position) and with one (llmcourse and transformers' ``generate``; nanoGPT
has none, and the package's GPT-2 KV-cache model, ``llms_from_scratch.kv_cache.gpt2``, fails on
its first one-token step: its causal mask is sliced by columns, shape (1, 1, 11, 1) for a
(1, 1, 1, 11) score); the training process's peak RSS, each side in a
process of its own doing three steps. Timed rows interleave the sides in every round and
keep the median; the script first checks that llmcourse's cached and uncached tokens equal
transformers' greedy ``generate`` on the same weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from llmcourse.config import GPTConfig
from llmcourse.generate import generate
from llmcourse.weights import load_hf_gpt2

SIZES = {  # name: (GPTConfig fields, batch)
    "gpt2-small": (dict(emb_dim=768, n_layers=12, n_heads=12, context_length=256), 2),
    "tiny": (dict(emb_dim=256, n_layers=4, n_heads=4, context_length=128), 8),
}
PEERS = ("llmcourse", "nanoGPT", "transformers", "book")


@dataclass
class Peer:
    """One side of the comparison: its model, its way to the loss, its generation loops."""
    name: str
    model: torch.nn.Module
    loss: Callable  # (x, y) -> scalar loss
    uncached: Callable  # (prompt, n) -> token ids
    cached: Callable | None = None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def hf_config(cfg: GPTConfig):
    import transformers

    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")


def book_config(cfg: GPTConfig) -> dict:
    return dict(vocab_size=cfg.vocab_size, context_length=cfg.context_length, emb_dim=cfg.emb_dim,
                n_heads=cfg.n_heads, n_layers=cfg.n_layers, drop_rate=0.0, qkv_bias=True)


def cross_entropy(logits, y):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def build(name: str, cfg: GPTConfig, args, device, hf_folder: str) -> Peer:
    """The peer ``name`` at ``cfg``'s shapes; llmcourse and transformers share the weights in ``hf_folder``."""
    torch.manual_seed(0)
    if name == "llmcourse":
        model = load_hf_gpt2(hf_folder, device=device)
        return Peer(name, model, lambda x, y: model(x, targets=y),
                    lambda p, n: generate(model, p, n, use_cache=False),
                    lambda p, n: generate(model, p, n, use_cache=True))
    if name == "transformers":
        import transformers

        model = transformers.GPT2LMHeadModel.from_pretrained(hf_folder).to(device)

        def hf_generate(p, n, use_cache):
            return model.generate(p, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                                  eos_token_id=None, pad_token_id=0)
        return Peer(name, model, lambda x, y: cross_entropy(model(x).logits, y),
                    lambda p, n: hf_generate(p, n, False), lambda p, n: hf_generate(p, n, True))
    if name == "nanoGPT":
        spec = importlib.util.spec_from_file_location("nanogpt_model", args.nanogpt)
        nanogpt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(nanogpt)
        model = nanogpt.GPT(nanogpt.GPTConfig(block_size=cfg.context_length, vocab_size=cfg.vocab_size,
                                              n_layer=cfg.n_layers, n_head=cfg.n_heads, n_embd=cfg.emb_dim,
                                              dropout=0.0, bias=True)).to(device)
        # its own generate samples; top_k=1 leaves one token to sample, so it is greedy
        return Peer(name, model, lambda x, y: model(x, targets=y)[1],
                    lambda p, n: model.generate(p, n, top_k=1))
    if name == "book":
        from llms_from_scratch import ch04

        model = ch04.GPTModel(book_config(cfg)).to(device)
        return Peer(name, model, lambda x, y: cross_entropy(model(x), y),
                    lambda p, n: ch04.generate_text_simple(model, p, n, cfg.context_length))
    raise ValueError(f"unknown peer {name!r}; expected one of {PEERS}")


def available(args) -> list[str]:
    """The peers this run can measure: nanoGPT only with ``--nanogpt``, the book only when installed."""
    names = ["llmcourse", "transformers"]
    if args.nanogpt:
        names.insert(1, "nanoGPT")
    if importlib.util.find_spec("llms_from_scratch") is not None:
        names.append("book")
    return [n for n in names if n in args.peers]


def setup(size: str, args):
    fields, batch = SIZES[size]
    cfg = GPTConfig.from_preset("gpt2-small", **fields, drop_rate=0.0, qkv_bias=True)
    device = torch.device(args.device)
    folder = tempfile.mkdtemp(prefix="bench-model-")
    import transformers

    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(hf_config(cfg)).save_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), generator=g).to(device)
    y = torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), generator=g).to(device)
    prompt = torch.randint(0, cfg.vocab_size, (1, 10), generator=g).to(device)
    return cfg, device, folder, x, y, prompt


def train_step(peer: Peer, optimizer, x, y, autocast) -> None:
    with autocast:
        loss = peer.loss(x, y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure_rss(size: str, name: str, args) -> float:
    """Peak RSS in MB of a process that builds peer ``name`` and runs three training steps."""
    cfg, device, folder, x, y, _ = setup(size, args)
    peer = build(name, cfg, args, device, folder)
    peer.model.train()
    optimizer = torch.optim.AdamW(peer.model.parameters(), lr=1e-4, fused=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    for _ in range(3):
        train_step(peer, optimizer, x, y, autocast)
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``; Linux's
    ``ru_maxrss`` would also count the parent's memory at the fork)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def run_size(size: str, args) -> dict[str, dict[str, float]]:
    """Every row for every available peer at ``size``: {peer: {row: value}}."""
    names = available(args)
    rows: dict[str, dict[str, float]] = {n: {} for n in names}
    for name in names:  # each in a fresh process, before this one holds any model
        child = subprocess.run([sys.executable, __file__, "--rss-of", name, "--sizes", size, *forwarded(args)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"measuring {name}'s peak RSS failed:\n{child.stderr}")
        rows[name]["train peak RSS (MB)"] = json.loads(child.stdout.strip().splitlines()[-1])

    cfg, device, folder, x, y, prompt = setup(size, args)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    peers = [build(n, cfg, args, device, folder) for n in names]
    for peer in peers:
        if args.compile:
            peer.model.compile()
    check_tokens(peers, prompt)

    tokens = x.numel()
    optimizers = {}
    for peer in peers:
        peer.model.train()
        optimizers[peer.name] = torch.optim.AdamW(peer.model.parameters(), lr=1e-4, fused=True)
        for _ in range(args.warmup):
            train_step(peer, optimizers[peer.name], x, y, autocast)
    times = {p.name: [] for p in peers}
    for _ in range(args.repeats):  # interleaved, so drift hits every side alike
        for peer in peers:
            times[peer.name].append(seconds(lambda: train_step(peer, optimizers[peer.name], x, y, autocast),
                                            device))
    for peer in peers:
        rows[peer.name]["train tok/s"] = tokens / statistics.median(times[peer.name])
    optimizers.clear()

    n = args.new_tokens
    for peer in peers:
        peer.model.eval()
    loops = [(f"greedy, {kind}, tok/s", peer, fn) for kind in ("no cache", "KV cache") for peer in peers
             if (fn := peer.uncached if kind == "no cache" else peer.cached) is not None]
    times = {(row, peer.name): [] for row, peer, _ in loops}
    with torch.no_grad(), autocast:
        for _, _, fn in loops:
            fn(prompt, n)  # warm-up
        for _ in range(max(1, args.repeats // 2)):
            for row, peer, fn in loops:
                times[row, peer.name].append(seconds(lambda: fn(prompt, n), device))
    for (row, name), t in times.items():
        rows[name][row] = n / statistics.median(t)
    return rows


def check_tokens(peers: list[Peer], prompt) -> None:
    """llmcourse's greedy tokens, cached and not, equal transformers' on the same weights."""
    by_name = {p.name: p for p in peers}
    if not {"llmcourse", "transformers"} <= set(by_name):
        return
    ours, hf = by_name["llmcourse"], by_name["transformers"]
    for p in (ours, hf):
        p.model.eval()
    with torch.no_grad():
        expected = hf.cached(prompt, 20)
        assert torch.equal(ours.cached(prompt, 20), expected), "cached generation differs from transformers"
        assert torch.equal(ours.uncached(prompt, 20), expected), "uncached generation differs from transformers"


def forwarded(args) -> list[str]:
    """The options a child process needs to build the same peers."""
    out = ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
    return out + (["--nanogpt", args.nanogpt] if args.nanogpt else [])


def print_table(size: str, rows: dict[str, dict[str, float]], args) -> None:
    names = list(rows)
    fields, batch = SIZES[size]
    print(f"\n{size} (d={fields['emb_dim']}, {fields['n_layers']} layers, T={fields['context_length']}, "
          f"B={batch}), {args.dtype}, {args.threads} threads, device {args.device}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for row in ("train tok/s", "greedy, no cache, tok/s", "greedy, KV cache, tok/s", "train peak RSS (MB)"):
        values = {n: rows[n].get(row) for n in names}
        best = (min if "RSS" in row else max)(v for v in values.values() if v is not None)
        shown = {n: "–" if v is None else f"{v:,.{2 if v < 100 else 1}f}" for n, v in values.items()}
        cells = [f"**{shown[n]}**" if v == best else shown[n] for n, v in values.items()]
        print(f"| {row} | " + " | ".join(cells) + " |")
    ours = rows.get("llmcourse", {})
    print()
    for row in ("train tok/s", "greedy, no cache, tok/s", "greedy, KV cache, tok/s"):
        others = {n: r[row] for n, r in rows.items() if n != "llmcourse" and r.get(row) is not None}
        if ours.get(row) and others:
            best = max(others, key=others.get)
            print(f"{row}: llmcourse / fastest peer ({best}) = {ours[row] / others[best]:.3f}x")
    others = {n: r["train peak RSS (MB)"] for n, r in rows.items() if n != "llmcourse"}
    if ours and others:
        print("train peak RSS: llmcourse / " + ", ".join(f"{n} {ours['train peak RSS (MB)'] / v:.2f}x"
                                                         for n, v in others.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS),
                    help="which sides to measure (default: all that are available)")
    ap.add_argument("--nanogpt", help="path of nanoGPT's model.py (a clone of its repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="training steps timed per side, interleaved")
    ap.add_argument("--warmup", type=int, default=2, help="training steps per side before timing")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile every side's model")
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--rss-of", choices=PEERS, help=argparse.SUPPRESS)  # the child that measures peak RSS
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_of:
        print(json.dumps(measure_rss(args.sizes[0], args.rss_of, args)))
        return
    for size in args.sizes:
        print_table(size, run_size(size, args), args)


if __name__ == "__main__":
    main()
