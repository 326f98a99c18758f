"""Training throughput: ``llmcourse train``'s step against a plain reference step.

Both train the same ``GPT`` on the same batches. "ours" is ``llmcourse.train.train_step``
exactly as ``train`` runs it: the loss straight from the hidden states
(``model(x, targets=y)``, ``linear_cross_entropy``: the logits never exist whole), AdamW
with weight-decay groups and the fused kernel, gradient clipping,
``zero_grad(set_to_none=True)``, plus autocast / ``torch.compile`` when asked for.
"reference" is how a typical from-scratch course trains: logits, then
``F.cross_entropy``, ``torch.optim.AdamW(model.parameters(), lr)`` with PyTorch's
defaults, backward, step, zero_grad; always fp32, never compiled.
Repeats alternate between the two; medians are reported.

CPU (the default is what ``llmcourse train`` runs with no options: the tiny model,
batch 8, its full context of 128, fp32, 2 threads; then gpt2-small's shapes):
    .venv/bin/python benchmarks/bench_train.py
    .venv/bin/python benchmarks/bench_train.py --model gpt2-small --batch 2 --max-length 256 --steps 2
bf16 autocast against fp32 on the CPU, both ``train_step`` on the same batches from the same
initial weights: tokens/s, and the loss at the end (mean of the last 20 steps), so a faster
dtype is only taken with the same loss curve:
    LLMCOURSE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_train.py --compare-dtypes 200 \
        --data tinyshakespeare.txt
GPU (tokens/s and MFU of ours; the reference runs as well):
    python benchmarks/bench_train.py --device cuda --compile --dtype bf16 \\
        --batch 16 --max-length 1024 --data tinyshakespeare.txt --peak-tflops 989
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from llmcourse.config import model_config_from
from llmcourse.model import GPT, next_token_loss
from llmcourse.train import (
    TrainConfig,
    autocast_dtype,
    configure_optimizer,
    estimate_mfu,
    load_token_ids,
    train_step,
)

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def batches(ids: torch.Tensor, batch: int, max_length: int, n: int, seed: int = 0):
    """n random (inputs, targets) batches of shape (batch, max_length) from the token stream."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - max_length - 1, (n, batch), generator=g)
    offsets = torch.arange(max_length)
    for row in starts:
        window = ids[(row[:, None] + offsets).long()].long()  # (batch, max_length)
        target = ids[(row[:, None] + offsets + 1).long()].long()
        yield window, target


def reference_step(model, optimizer, x, y) -> None:
    loss = next_token_loss(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), for saying whether it has bf16 matrix units."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def compare_dtypes(args, model_config, ids, device) -> None:
    """fp32 against bf16 autocast: ``args.compare_dtypes`` steps each, same batches, same start."""
    flags = cpu_flags()
    print(f"CPU bf16 units: avx512_bf16 {'avx512_bf16' in flags}, amx_bf16 {'amx_bf16' in flags}; "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    data = list(batches(ids, args.batch, args.max_length, args.compare_dtypes, seed=1))
    tail = min(20, len(data))
    for name in ("fp32", "bf16"):
        config = TrainConfig(batch_size=args.batch, max_length=args.max_length, dtype=DTYPES[name],
                             device=args.device)
        amp = autocast_dtype(config, device)
        torch.manual_seed(0)
        model = GPT(model_config, device=device).train()
        optimizer = configure_optimizer(model, config)
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        losses, seconds = [], 0.0
        for x, y in data:
            x, y = x.to(device), y.to(device)
            sync(device)
            t0 = time.perf_counter()
            losses.append(float(train_step(model, optimizer, scaler, [(x, y)], config, amp)))
            sync(device)
            seconds += time.perf_counter() - t0
        print(f"{name}: {len(data) * x.numel() / seconds:,.0f} tokens/s, loss first {losses[0]:.3f}, "
              f"mean of the last {tail} steps {statistics.mean(losses[-tail:]):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny, gpt2-small, ... or a GPTConfig JSON file")
    p.add_argument("--max-length", type=int, default=None, dest="max_length",
                   help="tokens per window (default: the model's context_length)")
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype of ours")
    p.add_argument("--compile", action="store_true", help="torch.compile ours")
    p.add_argument("--data", default="the-verdict.txt", help="text file or course data name")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the device's dense peak for MFU (H100 SXM bf16: 989)")
    p.add_argument("--no-reference", action="store_true", help="time ours only")
    p.add_argument("--compare-dtypes", type=int, default=0, metavar="STEPS",
                   help="instead: train STEPS steps in fp32 and in bf16 autocast, tokens/s and loss of each")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model_config = model_config_from(args.model)
    args.max_length = args.max_length or model_config.context_length
    if args.max_length > model_config.context_length:
        raise SystemExit(f"--max-length {args.max_length} exceeds the model's {model_config.context_length}")
    config = TrainConfig(batch_size=args.batch, max_length=args.max_length, dtype=DTYPES[args.dtype],
                         device=args.device, compile=args.compile)
    amp = autocast_dtype(config, device)
    ids = load_token_ids([args.data])
    if args.compare_dtypes:
        return compare_dtypes(args, model_config, ids, device)
    n_steps = args.warmup + args.repeats * args.steps
    data = [(x.to(device), y.to(device)) for x, y in batches(ids, args.batch, args.max_length, n_steps)]

    torch.manual_seed(0)
    ours = GPT(model_config, device=device).train()
    ours_step_model = torch.compile(ours) if args.compile else ours
    optimizer = configure_optimizer(ours, config)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    runners = {"ours": lambda x, y: train_step(ours_step_model, optimizer, scaler, [(x, y)], config, amp)}
    if not args.no_reference:
        torch.manual_seed(0)
        ref = GPT(model_config, device=device).train()
        ref_optimizer = torch.optim.AdamW(ref.parameters(), lr=config.lr)
        runners["reference"] = lambda x, y: reference_step(ref, ref_optimizer, x, y)

    print(f"{args.model}: {ours.num_parameters() / 1e6:.1f}M parameters, batch {args.batch} x "
          f"{args.max_length} tokens, {device}, {args.threads} threads, ours: {args.dtype}"
          f"{' compiled' if args.compile else ''}, fused AdamW {optimizer.defaults.get('fused')}")
    started = time.perf_counter()
    for name, run in runners.items():  # warm-up, including compilation
        for x, y in data[: args.warmup]:
            run(x, y)
        sync(device)
    print(f"warm-up: {time.perf_counter() - started:.1f} s")

    tokens_per_sec = {name: [] for name in runners}
    for r in range(args.repeats):
        chunk = data[args.warmup + r * args.steps: args.warmup + (r + 1) * args.steps]
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]  # alternate who goes first
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            for x, y in chunk:
                runners[name](x, y)
            sync(device)
            tokens_per_sec[name].append(args.steps * args.batch * args.max_length / (time.perf_counter() - t0))

    medians = {name: statistics.median(v) for name, v in tokens_per_sec.items()}
    for name, values in tokens_per_sec.items():
        print(f"{name:>9}: median {medians[name]:,.0f} tokens/s  (repeats: {', '.join(f'{v:,.0f}' for v in values)})")
    if "reference" in medians:
        print(f"ratio ours / reference: {medians['ours'] / medians['reference']:.3f}x")
    if device.type == "cuda":
        mfu = estimate_mfu(model_config, medians["ours"], args.peak_tflops * 1e12, max_length=args.max_length)
        print(f"MFU of ours: {100 * mfu:.1f}% of {args.peak_tflops:g} TFLOP/s")


if __name__ == "__main__":
    main()
