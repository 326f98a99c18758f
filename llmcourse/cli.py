"""The ``llmcourse`` command: thin subcommands over the package's functions.

Each subcommand parses its arguments and calls one function a notebook could call
too; nothing is implemented here.
"""
from __future__ import annotations

import argparse
import sys


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .generate import generate_text
    from .tokenizer import gpt2_tokenizer
    from .weights import load_gpt

    model = load_gpt(args.checkpoint, device=args.device)
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    text = generate_text(
        model, gpt2_tokenizer(), args.prompt, args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        generator=generator, use_cache=not args.no_cache,
    )
    print(args.prompt + text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .train import TrainConfig, distributed_env, model_config_from, train

    overrides = {"out_dir": str(args.out)}
    for flag, key in [("max_steps", "max_steps"), ("batch_size", "batch_size"), ("context", "max_length"),
                      ("lr", "lr"), ("grad_accum", "grad_accum_steps"), ("eval_interval", "eval_interval"),
                      ("seed", "seed"), ("device", "device"), ("dtype", "dtype")]:
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.compile:
        overrides["compile"] = True
    if args.no_progress:
        overrides["progress"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            overrides[key] = json.loads(value)  # numbers, true/false, lists
        except json.JSONDecodeError:
            overrides[key] = value  # plain strings need no quotes
    if "min_lr" not in overrides and "lr" in overrides:
        overrides["min_lr"] = overrides["lr"] / 10
    config = TrainConfig.from_dict(overrides)
    model_config = None if args.resume and args.config is None else model_config_from(args.config or "tiny")
    result = train(model_config, config, args.data, resume=args.resume)
    if distributed_env()[0] == 0:  # under torchrun, one report
        print(f"final validation loss {result.final_val_loss:.4f} after {(result.history['step'] or [0])[-1]} steps; "
              f"checkpoint in {result.checkpoint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="llmcourse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate text from a saved model (ours or Hugging Face GPT-2)")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="a folder written by llmcourse (save_model / train) or a Hugging Face GPT-2 folder")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-cache", action="store_true", help="generate without the KV cache")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="pretrain a GPT on text files (chapter 4); resumable, multi-GPU with torchrun")
    p.add_argument("--config", default=None,
                   help="model size: tiny (default), gpt2-small, ..., or a JSON file of GPTConfig fields "
                        "(with --resume: the checkpoint's)")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE",
                   help="text files, or course data names such as the-verdict.txt")
    p.add_argument("--out", type=Path, default=Path("out"), help="checkpoint folder (default: out)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="windows per micro-step, over all processes")
    p.add_argument("--context", type=int, default=None, help="tokens per window (default: the model's context)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (min_lr becomes lr / 10)")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-steps per optimizer step")
    p.add_argument("--eval-interval", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    p.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16 or float16")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field, e.g. --set warmup_steps=50 (repeatable)")
    p.set_defaults(func=cmd_train)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"llmcourse {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
