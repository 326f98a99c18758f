"""The ``llmcourse`` command: thin subcommands over the package's functions.

Each subcommand parses its arguments and calls one function a notebook could call
too; nothing is implemented here.
"""
from __future__ import annotations

import argparse
import signal
import sys


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .generate import generate_text
    from .tokenizer import load_tokenizer
    from .weights import load_gpt

    model = load_gpt(args.checkpoint, device=args.device)
    generator = None
    if args.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(args.seed)
    text = generate_text(
        model, load_tokenizer(args.checkpoint), args.prompt, args.max_new_tokens,
        temperature=0.0 if args.greedy else args.temperature, top_k=args.top_k, top_p=args.top_p,
        generator=generator, use_cache=not args.no_cache,
    )
    print(args.prompt + text)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .config import model_config_from
    from .train import TrainConfig, distributed_env, train

    overrides = {"out_dir": str(args.out)}
    for flag, key in [("max_steps", "max_steps"), ("batch_size", "batch_size"), ("max_length", "max_length"),
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
    if args.preset is not None:  # the course model: its data, tokenizer, size and run, then the flags
        from .course import COURSE_MODEL, DATA, course_train_config

        if args.config is not None:
            raise ValueError("--preset sets the model size; give --preset or --config, not both")
        config = course_train_config(**{"progress": True, **overrides})
        model_config, data = (None if args.resume else COURSE_MODEL), args.data or [DATA]
    else:
        if not args.data:
            raise ValueError("train needs --data FILE ... (or --preset shakespeare, the course model)")
        config = TrainConfig.from_dict(overrides)
        model_config = None if args.resume and args.config is None else model_config_from(args.config or "tiny")
        data = args.data
    result = train(model_config, config, data, resume=args.resume)
    if distributed_env()[0] == 0:  # under torchrun, one report
        print(f"final validation loss {result.final_val_loss:.4f} after {(result.history['step'] or [0])[-1]} steps; "
              f"checkpoint in {result.checkpoint}")
    return 0


def _model_to_finetune(args: argparse.Namespace):
    """The pretrained model in --checkpoint, or a new one of size --config (default tiny)."""
    from .config import model_config_from
    from .model import GPT
    from .weights import load_gpt

    if args.checkpoint is not None:
        if args.config is not None:
            raise ValueError("give either --checkpoint (a pretrained model) or --config (a new one), not both")
        return load_gpt(args.checkpoint, device=args.device)
    return GPT(model_config_from(args.config or "tiny"), device=args.device)


def _print_epoch(record: dict) -> None:
    print(f"epoch {record['epoch']} (step {record['steps']}): train loss {record['train_loss']:.4f}, "
          f"val loss {record['val_loss']:.4f}", flush=True)


def cmd_finetune_classifier(args: argparse.Namespace) -> int:
    import torch

    from .finetune import (
        add_classification_head, classification_accuracy, classification_loss, finetune,
        freeze_for_finetuning, save_classifier, spam_dataloaders,
    )
    from .tokenizer import gpt2_tokenizer

    torch.manual_seed(args.seed)
    model = add_classification_head(_model_to_finetune(args), num_classes=2)
    if args.trainable_blocks is not None:
        freeze_for_finetuning(model, args.trainable_blocks)
    loaders = spam_dataloaders(gpt2_tokenizer(), args.batch_size, args.max_length, model.config.context_length,
                               args.seed, args.max_train_examples)
    finetune(model, loaders["train"], classification_loss, args.epochs, args.lr, args.weight_decay,
             val_loader=loaders["val"], max_steps=args.max_steps,
             log=_print_epoch)
    accuracy = {name: classification_accuracy(model, loader) for name, loader in loaders.items()}
    print("accuracy: " + ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items()))
    save_classifier(model, args.out, max_length=loaders["train"].dataset.max_length)
    print(f"saved the classifier to {args.out}")
    return 0


def cmd_finetune_instruct(args: argparse.Namespace) -> int:
    import math

    import torch

    from .finetune import (
        evaluate_loss, finetune, generate_responses, instruction_dataloader, instruction_loss,
        instruction_splits, judge_responses, mean_rouge_l, save_responses,
    )
    from .lora import apply_lora, count_trainable_parameters, merge_lora
    from .tokenizer import gpt2_tokenizer
    from .weights import save_model

    torch.manual_seed(args.seed)
    model = _model_to_finetune(args)
    if args.lora_rank:
        apply_lora(model, rank=args.lora_rank, alpha=args.lora_alpha)
        trainable, total = count_trainable_parameters(model)
        print(f"LoRA: training {trainable:,} of {total:,} parameters")
    tokenizer = gpt2_tokenizer()
    splits = instruction_splits(args.seed)
    splits["train"] = splits["train"][:args.max_train_examples]
    splits["test"] = splits["test"][:args.max_test_examples]
    loaders = {
        name: instruction_dataloader(records, tokenizer, args.batch_size, shuffle=name == "train",
                                     max_length=model.config.context_length,
                                     mask_prompt=args.mask_prompt, seed=args.seed)
        for name, records in splits.items()
    }
    finetune(model, loaders["train"], instruction_loss, args.epochs, args.lr, args.weight_decay,
             val_loader=loaders["val"], max_steps=args.max_steps,
             log=_print_epoch)
    if args.lora_rank:
        merge_lora(model)  # a plain GPT again, which save_model and generate expect
    test_loss = evaluate_loss(model, loaders["test"], instruction_loss)
    print(f"test loss {test_loss:.4f}, perplexity {math.exp(test_loss):.2f}")
    responses = generate_responses(model, tokenizer, splits["test"], args.max_new_tokens, args.batch_size)
    print(f"test ROUGE-L F1 (mean over {len(responses)} responses): {mean_rouge_l(responses):.4f}")
    save_model(model, args.out)
    save_responses(responses, args.out / "test-responses.json")
    print(f"saved the model and {args.out / 'test-responses.json'}")
    if args.judge:
        scores = [s for s in judge_responses(responses, args.judge_url, args.judge_model) if s is not None]
        print(f"judge ({args.judge_model}) mean score: {sum(scores) / max(len(scores), 1):.1f} "
              f"over {len(scores)} scored responses")
    return 0


def _skip_jsonschema_iri_format() -> None:
    """Keep jsonschema, which nbformat imports, from loading ``rfc3987_syntax``: that compiles an
    Earley grammar at import (2.4 s on the course's 2-core machine) for the "iri" string
    format alone. No notebook validation checks a format (nbformat passes no format
    checker, and its schema uses none), so what is validated does not change; only this
    process is affected."""
    sys.modules.setdefault("rfc3987_syntax", None)  # None: an ImportError, which jsonschema expects


def _skip_nbgrader_server_extensions() -> None:
    """Keep nbgrader's package from loading its Jupyter server extensions (its ``__init__``
    imports them, and with them jupyter_server, tornado and nbgrader's exchange: 0.3-0.6 s
    of a ``check`` here). They only plug nbgrader into a running Jupyter server, which
    ``check`` never starts; the preprocessors and the gradebook it uses do not import them.
    Only this process is affected."""
    import types

    for name in ("assignment_list", "course_list", "validate_assignment", "formgrader"):
        stub = types.ModuleType(f"nbgrader.server_extensions.{name}", "not loaded by llmcourse check")
        stub.load_jupyter_server_extension = None  # the one name nbgrader's __init__ takes from each
        sys.modules.setdefault(stub.__name__, stub)


def _skip_final_collection() -> None:
    """Move every object into the collector's permanent generation (``gc.freeze``), so the
    interpreter's exit does not walk the heap torch, nbgrader and sqlalchemy left (1.1 s of a
    ``check`` here); call it when the command's work is done, as the process ends right after.
    An in-process caller would keep the frozen objects' cycles for good."""
    import gc

    gc.freeze()


def cmd_check(args: argparse.Namespace) -> int:
    _skip_jsonschema_iri_format()
    _skip_nbgrader_server_extensions()
    from .grading.sandbox import Limits, sandbox_problem
    from .grading.scoring import AnswerRunner  # neither imports torch or nbgrader yet

    # A notebook can come from anyone: without bubblewrap its code would run with process
    # limits only, so that needs --unsandboxed, said on purpose (and each run is time-limited).
    problem = sandbox_problem()
    if problem and not args.unsandboxed:
        print(f"llmcourse check: error: cannot fully sandbox the notebook's code here ({problem}). Run it "
              f"anyway, with process and time limits only, with --unsandboxed (only for a notebook you trust).",
              file=sys.stderr)
        return 3
    limits = Limits(allow_unsandboxed=args.unsandboxed)
    # The answer runner starts first: its sandbox and torch import overlap this process's imports.
    with AnswerRunner(limits) as runner:
        from .grading.grade import check_notebook, format_report

        report = check_notebook(args.notebook, args.course, limits=limits, execute=False,
                                with_solutions=args.with_solutions, assignment=args.assignment, runner=runner)
    print(format_report(report))
    _skip_final_collection()
    return 0 if report.status == "graded" and report.score == report.max_score else 1


def cmd_release(args: argparse.Namespace) -> int:
    from .grading.release import release

    release(args.assignment, args.course, release_dir=args.release_dir)
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from .grading.cluster import ClusterUnavailable  # imports Dask only when a cluster is used
    from .grading.grade import grade_assignment
    from .grading.sandbox import Limits, SandboxUnavailable

    try:
        grade_assignment(args.assignment, args.submitted, args.out, jobs=args.jobs, root=args.course,
                         notebook=args.notebook, students=args.student, regrade=args.regrade, roster=args.roster,
                         private=args.private, progress=sys.stderr, scheduler=args.scheduler, due=args.due,
                         late_policy=args.late_policy,
                         limits=Limits(allow_unsandboxed=args.allow_unsandboxed,
                                       allow_no_cgroup=args.allow_no_cgroup))
    except (SandboxUnavailable, ClusterUnavailable) as e:
        print(f"llmcourse grade: error: {e}", file=sys.stderr)
        return 3
    print(f"gradebook, grades.csv, report.json, canvas.csv, questions.csv, autograded/ and feedback/ in {args.out}")
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
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature (default 0.8; 0 or --greedy: always the most likely token)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens (default 50)")
    p.add_argument("--top-p", type=float, default=None, help="then from the smallest set with probability >= p")
    p.add_argument("--greedy", action="store_true", help="deterministic: always the most likely token")
    p.add_argument("--seed", type=int, default=None, help="seed the sampling, for a repeatable text")
    p.add_argument("--no-cache", action="store_true", help="generate without the KV cache")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("train", help="pretrain a GPT on text files (chapter 4); resumable, multi-GPU with torchrun")
    p.add_argument("--config", default=None,
                   help="model size: tiny (default), gpt2-small, ..., or a JSON file of GPTConfig fields "
                        "(with --resume: the checkpoint's)")
    p.add_argument("--preset", choices=["shakespeare"], default=None,
                   help="the course model: a GPT with the course's own tokenizer, pretrained on tinyshakespeare "
                        "in minutes on a CPU (data, tokenizer, size and run; other flags still apply)")
    p.add_argument("--data", nargs="+", default=None, metavar="FILE",
                   help="text files, or course data names such as the-verdict.txt (with --preset: its data)")
    p.add_argument("--out", type=Path, default=Path("out"), help="checkpoint folder (default: out)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="windows per micro-step, over all processes")
    p.add_argument("--max-length", type=int, default=None, dest="max_length",
                   help="tokens per window (default: the model's context_length)")
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

    def add_finetune_arguments(p, epochs, lr, batch_size):
        p.add_argument("--checkpoint", type=Path, default=None,
                       help="a pretrained model folder (ours or Hugging Face GPT-2); default: a new model")
        p.add_argument("--config", default=None,
                       help="size of the new model without --checkpoint: tiny (default), gpt2-small, ... or a JSON file")
        p.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned model")
        p.add_argument("--epochs", type=int, default=epochs)
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--weight-decay", type=float, default=0.1)
        p.add_argument("--batch-size", type=int, default=batch_size)
        p.add_argument("--max-steps", type=int, default=None, help="stop after this many updates")
        p.add_argument("--max-train-examples", type=int, default=None, help="train on the first N examples only")
        p.add_argument("--seed", type=int, default=123, help="data split, shuffling and new weights")
        p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")

    p = sub.add_parser("finetune-classifier", help="fine-tune a GPT as an SMS spam classifier (chapter 5)")
    add_finetune_arguments(p, epochs=5, lr=5e-5, batch_size=8)
    p.add_argument("--trainable-blocks", type=int, default=None,
                   help="freeze all but the last N blocks, final norm and head (the book: 1 with GPT-2); "
                        "default: train everything")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per message (default: the longest training message, at most the context)")
    p.set_defaults(func=cmd_finetune_classifier)

    p = sub.add_parser("finetune-instruct", help="instruction fine-tune a GPT on instruction-data.json (chapter 5)")
    add_finetune_arguments(p, epochs=2, lr=5e-5, batch_size=8)
    p.add_argument("--max-test-examples", type=int, default=None, help="generate for the first N test records only")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest generated response")
    p.add_argument("--mask-prompt", action="store_true", help="learn the responses only, not the prompts")
    p.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: full fine-tuning)")
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--judge", action="store_true", help="also score responses with a local Ollama-style model")
    p.add_argument("--judge-url", default="http://localhost:11434/api/chat")
    p.add_argument("--judge-model", default="llama3")
    p.set_defaults(func=cmd_finetune_instruct)

    def add_course_argument(p):
        p.add_argument("--course", type=Path, default=None,
                       help="the course folder (nbgrader_config.py, solutions/, exercises/); default: "
                            "$LLMCOURSE_COURSE, else the current directory or the first folder above it that is one")

    p = sub.add_parser("check", help="student: grade one exercise notebook locally, as the grader would",
                       description="Grade one exercise notebook as the grader would, against the course's own "
                                   "release (visible checks; --with-solutions: solutions/), never against the file "
                                   "itself. The assignment is --assignment, "
                                   "else the one the notebook's metadata names (released notebooks carry it), else "
                                   "its folder's or file's name. The first check of an assignment builds its "
                                   "gradebook (seconds) and caches it in $LLMCOURSE_CACHE_DIR (default "
                                   "~/.cache/llmcourse); later checks reuse it until the course changes.")
    p.add_argument("notebook", type=Path,
                   help="your notebook, any name and folder: e.g. exercises/ch3/ch3.ipynb or ~/work/my-ch3.ipynb")
    p.add_argument("--assignment", default=None,
                   help="the assignment it answers, e.g. ch3 (default: from the notebook's metadata, else its "
                        "folder or file name)")
    p.add_argument("--unsandboxed", action="store_true",
                   help="where bubblewrap is unavailable, run the notebook's code with process and time "
                        "limits only (for a notebook you trust) instead of refusing")
    p.add_argument("--with-solutions", action="store_true",
                   help="instructor: check against solutions/ (hidden checks and concept keys) instead of "
                        "the release")
    add_course_argument(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("release", help="instructor: generate exercises/ from solutions/ with nbgrader")
    p.add_argument("assignment", nargs="?", default=None, help="e.g. ch3 (default: every assignment)")
    p.add_argument("--release-dir", type=Path, default=None, help="default: exercises/ in the course folder")
    add_course_argument(p)
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("grade", help="instructor: grade a whole class (gradebook, CSV, feedback HTML)",
                       description="Grade the submissions of a class: by default only those new or changed "
                                   "since the last run into --out; grades.csv and report.json always list the "
                                   "whole class (students graded earlier, missing ones), with statistics per "
                                   "grade cell, printed at the end.")
    p.add_argument("assignment", help="e.g. ch3")
    p.add_argument("--submitted", type=Path, required=True,
                   help="folder of submissions: <student>/<assignment>/<notebook>.ipynb")
    p.add_argument("--out", type=Path, default=Path("grading"),
                   help="gradebook.db, grades.csv, report.json, canvas.csv, questions.csv, autograded/, feedback/ "
                        "(default: grading)")
    p.add_argument("--jobs", type=int, default=None, help="submissions graded in parallel (default: CPU count)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT|local:N",
                   help="grade on a Dask cluster (pip install 'llmcourse[cluster]'): a running scheduler's "
                        "address, or local:N for N workers on this machine; each worker grades one submission "
                        "at a time in its own sandbox, this machine writes every result. Instead of --jobs")
    p.add_argument("--notebook", default=None, help="notebook name, when the assignment has several")
    p.add_argument("--student", action="append", default=None, metavar="ID",
                   help="grade only this student (again, even if unchanged); repeat for several. The CSV and "
                        "report still list the whole class")
    p.add_argument("--regrade", action="store_true",
                   help="grade every submission again (default: only those new or changed since they were graded)")
    p.add_argument("--roster", type=Path, default=None, metavar="FILE.csv",
                   help="the class list, a CSV file with a 'student' or 'id' column, added to the gradebook's "
                        "students: those without a submission are listed as missing (in later runs too)")
    p.add_argument("--private", action="store_true",
                   help="results readable by you alone (files 0600, folders 0700; the course can say so with "
                        "c.LLMCourse.private_results = True in nbgrader_config.py); default: by your group too "
                        "(0640, 0750)")
    p.add_argument("--due", default=None, metavar="TIME",
                   help="the assignment's due date for this run, e.g. '2026-12-10 23:59 UTC', instead of "
                        "c.LLMCourse.due_dates in nbgrader_config.py; a submission's time is its timestamp.txt, "
                        "else its file's")
    p.add_argument("--late-policy", default=None, metavar="none|zero|penalty_per_day:P",
                   help="what a late submission costs for this run, instead of c.LLMCourse.late_policy: nothing, "
                        "everything, or P%% of the maximum per started day late (never more than the score)")
    add_course_argument(p)
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="where bubblewrap is unavailable, grade with process limits only (results marked "
                        "NOT SANDBOXED) instead of refusing")
    p.add_argument("--allow-no-cgroup", action="store_true",
                   help="where no cgroup can be made for each sandbox (memory, processes and CPU of the whole "
                        "process tree), grade with bubblewrap and per-process limits only (results marked NOT "
                        "FULLY SANDBOXED) instead of refusing")
    p.set_defaults(func=cmd_grade)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("check", "grade"):
        # SIGTERM (a kill, a scheduler's stop) unwinds like Ctrl-C, so scratch folders are removed
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"llmcourse {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
