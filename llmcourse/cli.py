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
