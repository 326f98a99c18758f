"""Pretraining a GPT on raw text (chapter 4).

Read top to bottom, in the order a run uses it:

1. ``TrainConfig``: every knob of a run in one dataclass (the model's size stays in
   ``GPTConfig``).
2. Data: text files are tokenized once (GPT-2's tokenizer, or a course tokenizer saved
   with ``BPETokenizer.save``) and cached; the token
   stream is split by position (first 90% train, last 10% validation) and cut into
   windows; ``WindowOrder`` says which windows come next, reproducibly and resumably.
3. Optimisation: AdamW (fused kernels where PyTorch has them) with weight decay on
   matrices only, linear warm-up then cosine decay of the learning rate, gradient
   clipping and gradient accumulation, optional autocast to bf16/fp16 on GPUs.
4. Evaluation: validation loss and perplexity exp(loss), plus a short greedy sample.
5. ``train``: set-up, resume (from a checkpoint, ``checkpoints.py``), and the loop.

On several GPUs or machines (``torchrun --nproc_per_node=8 -m llmcourse.cli train ...``)
``train`` reads RANK / WORLD_SIZE / LOCAL_RANK from the environment, joins the process
group (NCCL on CUDA, gloo on CPU) and wraps the model in ``DistributedDataParallel``:
each rank takes a disjoint slice of every global batch and DDP averages the
gradients, so the run equals one process training on the whole batch. Only rank 0
writes checkpoints and logs.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoints import (
    gather_rng_states,
    load_checkpoint,
    load_optimizer_state,
    recover_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import GPTConfig, check_int, config_from_dict
from .data import NextTokenDataset
from .files import atomic_write_bytes, cache_dir, fetch, sha256_of
from .generate import generate_text
from .model import GPT, eval_mode, next_token_loss, parameter_count, resolve_device
from .tokenizer import TOKENIZER_FILE, load_tokenizer

# --- 1. The configuration of a run ----------------------------------------------------


@dataclass
class TrainConfig:
    """How to train (the model's size is a separate ``GPTConfig``).

    One optimizer step sees ``batch_size * grad_accum_steps`` windows of
    ``max_length`` tokens; with several processes ``batch_size`` is the global
    micro-batch, split evenly across them.
    """

    # data
    batch_size: int = 8  # windows per micro-step, summed over all processes
    max_length: int | None = None  # tokens per window; None = the model's context_length
    stride: int | None = None  # start of one window to the next; None = max_length (no overlap)
    val_fraction: float = 0.1  # the last 10% of the tokens are held out
    token_cache_dir: str | None = None  # None = <llmcourse cache>/tokens
    tokenizer: str | None = None  # a file saved by BPETokenizer.save; None = GPT-2's tokenizer
    # optimisation
    lr: float = 6e-4
    min_lr: float = 6e-5  # cosine decay ends here (nanoGPT: lr / 10)
    warmup_steps: int = 20
    max_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    grad_accum_steps: int = 1
    fused_adamw: bool = True
    # evaluation and checkpoints
    eval_interval: int = 50  # evaluate (and checkpoint) every this many steps, and at the end
    eval_steps: int = 10  # validation batches per evaluation
    sample_prompt: str = "Every effort moves you"
    sample_tokens: int = 20  # 0 turns the sample off
    out_dir: str | None = None  # the checkpoint folder; None = keep nothing on disk
    # hardware
    seed: int = 123
    device: str = "auto"
    dtype: str = "auto"  # auto, float32, bfloat16, float16 (see autocast_dtype)
    compile: bool = False
    progress: bool = True  # a tqdm bar with loss and tokens/s

    def __post_init__(self):
        self.betas = tuple(self.betas)  # JSON gives lists back
        for name in ["batch_size", "max_steps", "grad_accum_steps", "eval_interval", "eval_steps"]:
            check_int(f"TrainConfig.{name}", getattr(self, name))
        for name in ["max_length", "stride"]:
            if getattr(self, name) is not None:
                check_int(f"TrainConfig.{name}", getattr(self, name), note=" or None")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0.0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig needs 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.weight_decay < 0 or self.sample_tokens < 0:
            raise ValueError("TrainConfig.warmup_steps, grad_clip, weight_decay and sample_tokens must be >= 0")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"TrainConfig.dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Rebuild a config saved in a checkpoint; unknown fields are an error."""
        return config_from_dict(cls, d)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The dtype the forward pass computes in. "auto": bf16 on GPUs that have it, else
    fp16 (with a GradScaler, since fp16 gradients underflow); fp32 on the CPU: on CPUs
    without bf16 matrix units (AVX512-BF16, AMX) bf16 autocast is several times slower
    (``benchmarks/bench_train.py --compare-dtypes``), and on those with them it is not
    measured yet (bf16 autocast is there to ask for). The weights stay fp32 either way."""
    if config.dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if config.dtype == "float16" and device.type != "cuda":
        raise ValueError(f"dtype float16 needs a CUDA device (its GradScaler), got {device}; use bfloat16")
    return getattr(torch, config.dtype)


# --- 2. Data ------------------------------------------------------------------------


def tokenizer_key(tokenizer: str | os.PathLike | None) -> str:
    """What names a tokenizer in the token cache: "gpt2", or the start of its file's sha256."""
    return "gpt2" if tokenizer is None else "bpe-" + sha256_of(tokenizer)[:16]


def token_ids_of_file(path: str | os.PathLike, cache: str | os.PathLike | None = None,
                      tokenizer: str | os.PathLike | None = None) -> torch.Tensor:
    """A text file's token ids (1-D int32), tokenized once.

    ``tokenizer``: a file saved by ``BPETokenizer.save``, or None for GPT-2's. The ids are
    cached as ``<sha256 of the file>.<tokenizer_key>.safetensors`` in ``cache`` (default
    ``<llmcourse cache>/tokens``): keyed by the contents, so an edited file or another
    tokenizer is tokenized again and a renamed file is not.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {path}")
    cache = Path(cache) if cache is not None else cache_dir() / "tokens"
    cached = cache / f"{sha256_of(path)}.{tokenizer_key(tokenizer)}.safetensors"
    if cached.is_file():
        try:
            return safetensors_load(cached.read_bytes())["ids"]
        except (SafetensorError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    text = path.read_text(encoding="utf-8")
    ids = torch.tensor(load_tokenizer(tokenizer).encode(text, allowed_special="all"), dtype=torch.int32)
    atomic_write_bytes(cached, safetensors_save({"ids": ids}))
    return ids


def load_token_ids(data: str | os.PathLike | Sequence[str | os.PathLike],
                   cache: str | os.PathLike | None = None,
                   tokenizer: str | os.PathLike | None = None) -> torch.Tensor:
    """The token stream to train on, 1-D int32.

    ``data`` is either text (a ``str``) or files (a ``Path`` or a list of paths; a
    name from ``llmcourse.files.DATA_FILES`` such as "the-verdict.txt" is fetched).
    Several files are joined with ``<|endoftext|>`` between them, as GPT-2's
    training documents were. ``tokenizer`` as in ``token_ids_of_file``.
    """
    if isinstance(data, str):
        return torch.tensor(load_tokenizer(tokenizer).encode(data, allowed_special="all"), dtype=torch.int32)
    paths = [data] if isinstance(data, os.PathLike) else list(data)
    if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError("train data must be a str of text, a Path, or a non-empty list of file paths")
    separator = torch.tensor([load_tokenizer(tokenizer).eot_token], dtype=torch.int32)
    parts = []
    for p in paths:
        file = Path(p) if Path(p).is_file() else _registry_file(p)
        parts += [token_ids_of_file(file, cache, tokenizer), separator]
    return torch.cat(parts[:-1])


def _registry_file(name) -> Path:
    try:
        return fetch(str(name))
    except ValueError:
        raise FileNotFoundError(f"{name} is neither a file nor a course data file name") from None


def split_train_val(ids: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (1 - val_fraction) of the tokens for training, the rest for
    validation. Split by position, not at random: windows that overlap the boundary
    would otherwise leak validation text into training."""
    n_train = int(len(ids) * (1 - val_fraction))
    return ids[:n_train], ids[n_train:]


class WindowOrder:
    """Which training windows come next, as a position (epoch, index).

    Each epoch visits every window once in an order drawn from a generator seeded
    by (seed, epoch) alone, so the order never depends on what ran before: saving
    (epoch, index) in a checkpoint is enough to continue exactly where a run stopped.
    A batch never spans two epochs (the last < batch_size windows are skipped).
    """

    def __init__(self, n_windows: int, batch_size: int, seed: int, epoch: int = 0, index: int = 0):
        if n_windows < batch_size:
            raise ValueError(
                f"the training text has only {n_windows} windows, fewer than batch_size={batch_size}; "
                f"use more text, a smaller batch_size, max_length or stride"
            )
        self.n_windows, self.batch_size, self.seed = n_windows, batch_size, seed
        self.epoch, self.index = epoch, index
        self._order = self._permutation(epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        # Distinct seeds for every (seed, epoch) with epoch < 1,000,003.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_windows, generator=generator)

    def next_batch(self) -> torch.Tensor:
        """The next batch_size window indices, (batch_size,)."""
        if self.index + self.batch_size > self.n_windows:
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        batch = self._order[self.index: self.index + self.batch_size]
        self.index += self.batch_size
        return batch


# --- 3. Optimisation ----------------------------------------------------------------


def get_lr(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    Linear warm-up from lr / warmup_steps to lr over the first ``warmup_steps``
    steps (large early updates of a random model are unstable), then a cosine
    from lr down to min_lr at ``max_steps``.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)  # 0 -> 1
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def configure_optimizer(model: GPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2: linear layers and
    embeddings) and none on biases and LayerNorm parameters, as in nanoGPT.
    Uses PyTorch's fused kernel (one kernel for all parameters) where it exists."""
    params = [p for p in model.parameters() if p.requires_grad]  # a tied matrix once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = config.fused_adamw and model.device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)


def train_step(model, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               micro_batches, config: TrainConfig, amp: torch.dtype) -> torch.Tensor:
    """One optimizer step over ``config.grad_accum_steps`` micro-batches.

    micro_batches yields (inputs, targets), (B, T) each. Gradients of the micro-batches
    add up (each loss divided by their number, so the sum is the gradient of the mean),
    then they are clipped to ``grad_clip`` and AdamW takes one step. ``model`` may be
    wrapped in DDP. Returns the mean loss over the micro-batches (a 0-d tensor).
    """
    device = next(iter(optimizer.param_groups[0]["params"])).device
    step_loss = torch.zeros((), device=device)
    for micro, (x, y) in enumerate(micro_batches):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        # DDP averages gradients across ranks in backward; skip that on all but the last micro-step.
        last = micro == config.grad_accum_steps - 1
        with model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext():
            with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                loss = model(x, targets=y) / config.grad_accum_steps
            scaler.scale(loss).backward()
        step_loss += loss.detach()
    if config.grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not fp16-scaled ones
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return step_loss


def estimate_mfu(config: GPTConfig, tokens_per_second: float, peak_flops: float,
                 max_length: int | None = None) -> float:
    """Model FLOPs utilisation, the fraction of the hardware's peak the training run
    achieves with windows of ``max_length`` tokens (default: the context length). A
    token costs 6N FLOPs in matmuls (2N forward, 4N backward; N = parameters without
    the position embedding) plus 12 L d T for attention over T tokens (PaLM,
    appendix B; nanoGPT)."""
    T = max_length or config.context_length
    N = parameter_count(config).tied - config.context_length * config.emb_dim
    flops_per_token = 6 * N + 12 * config.n_layers * config.emb_dim * T
    return tokens_per_second * flops_per_token / peak_flops


# --- 4. Evaluation ------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: GPT, val_set: NextTokenDataset, config: TrainConfig, device: torch.device,
             amp: torch.dtype, rank: int = 0, world_size: int = 1) -> float:
    """The mean next-token loss on the first ``eval_steps`` validation batches
    (always the same windows, so evaluations are comparable). With several
    processes each takes a slice of every batch and the sums are added up."""
    loss_sum, n_tokens = 0.0, 0
    with eval_mode(model):
        for start in range(0, min(len(val_set), config.eval_steps * config.batch_size), config.batch_size):
            batch = torch.arange(start, min(start + config.batch_size, len(val_set)))
            mine = batch.tensor_split(world_size)[rank]
            if len(mine) == 0:
                continue
            x, y = (t.to(device) for t in val_set[mine])
            with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                loss = next_token_loss(model(x), y)
            loss_sum += loss.item() * y.numel()
            n_tokens += y.numel()
    total = torch.tensor([loss_sum, n_tokens], device=device)
    if world_size > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


def plot_losses(history: dict, path: str | os.PathLike | None = None):
    """Training and validation loss (left) and validation perplexity
    (right) against the optimizer step. Returns the matplotlib ``Figure`` (a notebook
    shows it); with ``path`` it is also saved there as a PNG."""
    from matplotlib.figure import Figure  # not pyplot: no global figure state to leak

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_ppl = fig.subplots(1, 2)
    ax_loss.plot(history["step"], history["train_loss"], label="train", alpha=0.7)
    ax_loss.plot(history["eval_step"], history["val_loss"], "o-", label="validation")
    ax_loss.set(xlabel="step", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    ax_ppl.plot(history["eval_step"], history["val_perplexity"], "o-", color="C1")
    ax_ppl.set(xlabel="step", ylabel="perplexity = exp(loss)", title="Validation perplexity", yscale="log")
    if path is not None:
        atomic_write_bytes(path, _png(fig))
    return fig


def _png(fig) -> bytes:
    """A matplotlib figure as the bytes of a PNG file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def new_history() -> dict:
    return {"step": [], "lr": [], "train_loss": [], "tokens_per_sec": [],
            "eval_step": [], "val_loss": [], "val_perplexity": [], "sample": []}



# --- 5. The run ---------------------------------------------------------------------


@dataclass
class TrainResult:
    model: GPT  # the trained model (unwrapped from DDP / torch.compile), in eval mode
    history: dict  # per step: step, lr, train_loss, tokens_per_sec; per evaluation: eval_step, ...
    checkpoint: Path | None = None  # the checkpoint folder, if out_dir was set
    final_val_loss: float = field(default=float("nan"))


def distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the variables torchrun sets; (0, 0, 1) alone."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


@dataclass
class _Run:
    """What the loop works on: built by ``_set_up``, moved on by ``_resume`` and ``_loop``."""
    model: GPT  # unwrapped: what is evaluated, sampled and saved
    tokenizer: object  # what samples are decoded with (load_tokenizer)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    order: WindowOrder
    train_set: NextTokenDataset
    val_set: NextTokenDataset
    data_sha256: str
    device: torch.device
    amp: torch.dtype
    max_length: int  # tokens per window
    rank: int
    local_rank: int
    world_size: int
    step: int = 0
    history: dict = field(default_factory=new_history)


# Fields that decide which tokens each step sees: a resumed run must keep them.
_RESUME_FIXED = ["batch_size", "max_length", "stride", "val_fraction", "grad_accum_steps", "seed"]


def train(model_config: GPTConfig | None, config: TrainConfig,
          data: str | os.PathLike | Sequence[str | os.PathLike],
          resume: bool = False, until_step: int | None = None) -> TrainResult:
    """Pretrain a GPT on next-token prediction.

    data: text, or text files (see ``load_token_ids``). With ``resume``, training
    continues from the checkpoint in ``config.out_dir`` (``model_config`` may then be
    None: the checkpoint's is used). ``until_step`` stops early, with a checkpoint,
    at that step; the learning-rate schedule still runs to ``max_steps``, so a later
    resume continues the same run (on CPU, bit for bit).
    """
    if model_config is None and not resume:
        raise ValueError("train needs a GPTConfig (or resume=True to take the checkpoint's)")
    if (resume or until_step is not None) and config.out_dir is None:
        raise ValueError("resume and until_step need a checkpoint folder: set TrainConfig.out_dir")
    rank, local_rank, world_size = distributed_env()
    device, own_group = _join_process_group(config, local_rank, world_size)
    ids = load_token_ids(data, config.token_cache_dir, config.tokenizer)  # every rank: the same windows and order
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    checkpoint = _read_checkpoint(config.out_dir, model_config, device, rank, world_size) if resume else None
    model = checkpoint["model"] if checkpoint is not None else GPT(model_config).to(device).train()
    run = _set_up(model, ids, config, device, rank, local_rank, world_size)
    if checkpoint is not None:
        _resume(run, checkpoint, config)
    elif rank > 0:
        torch.manual_seed(config.seed + rank)  # different dropout masks on every rank
    stop = min(config.max_steps, until_step if until_step is not None else config.max_steps)
    val_loss = _loop(run, config, stop)
    if world_size > 1:
        dist.barrier()  # the checkpoint is complete before any rank returns
        if own_group:
            dist.destroy_process_group()
    return TrainResult(run.model.eval(), run.history,
                       Path(config.out_dir) if config.out_dir is not None else None, val_loss)


def _join_process_group(config: TrainConfig, local_rank: int, world_size: int) -> tuple[torch.device, bool]:
    """This process's device, after joining the process group when there are several
    processes; and whether ``train`` started the group (and so must end it)."""
    device = resolve_device(config.device)
    own_group = False
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        own_group = not dist.is_initialized()
        if own_group:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if config.batch_size % world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {world_size} processes")
    return device, own_group


def _read_checkpoint(folder, model_config: GPTConfig | None, device: torch.device, rank: int,
                     world_size: int) -> dict:
    """``load_checkpoint``, after one process has repaired an interrupted save."""
    if rank == 0:
        recover_checkpoint(folder)
    if world_size > 1:
        dist.barrier()
    return load_checkpoint(folder, model_config, device)


def _set_up(model: GPT, ids: torch.Tensor, config: TrainConfig, device: torch.device,
            rank: int, local_rank: int, world_size: int) -> _Run:
    """The tokenizer, windows, optimizer, gradient scaler and data order of a run from step 0."""
    tokenizer = load_tokenizer(config.tokenizer)
    if model.config.vocab_size < tokenizer.n_vocab:
        raise ValueError(f"the model's vocab_size ({model.config.vocab_size}) is smaller than the tokenizer's "
                         f"{tokenizer.n_vocab} ids; set GPTConfig.vocab_size={tokenizer.n_vocab}")
    context_length = model.config.context_length
    max_length = config.max_length or context_length
    if max_length > context_length:
        raise ValueError(f"max_length {max_length} exceeds the model's context_length {context_length}")
    train_ids, val_ids = split_train_val(ids, config.val_fraction)
    train_set = NextTokenDataset(train_ids, max_length, config.stride or max_length)
    try:
        val_set = NextTokenDataset(val_ids, max_length, max_length)
    except ValueError:
        raise ValueError(f"the validation split ({len(val_ids)} tokens, val_fraction={config.val_fraction}) "
                         f"is shorter than one window of max_length={max_length}+1 tokens") from None
    amp = autocast_dtype(config, device)
    return _Run(
        model=model, tokenizer=tokenizer, optimizer=configure_optimizer(model, config),
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        order=WindowOrder(len(train_set), config.batch_size, config.seed),
        train_set=train_set, val_set=val_set, data_sha256=hashlib.sha256(ids.numpy().tobytes()).hexdigest(),
        device=device, amp=amp, max_length=max_length, rank=rank, local_rank=local_rank, world_size=world_size,
    )


def _resume(run: _Run, checkpoint: dict, config: TrainConfig) -> None:
    """Move ``run`` to where the checkpoint's run stopped: optimizer, scaler, data
    position, step, history and RNG states, after checking that it is the same run."""
    state = checkpoint["trainer_state"]
    saved = state["train_config"]
    changed = [k for k in _RESUME_FIXED if saved[k] != getattr(config, k)]
    if changed:
        raise ValueError(f"cannot resume {config.out_dir}: {', '.join(changed)} differ from the checkpoint's "
                         f"({', '.join(f'{k}={saved[k]!r}' for k in changed)})")
    if state["data_sha256"] != run.data_sha256:
        raise ValueError(f"cannot resume {config.out_dir}: it was trained on other data")
    load_optimizer_state(run.optimizer, checkpoint["optimizer"], Path(config.out_dir) / "optimizer.safetensors")
    run.scaler.load_state_dict(state["grad_scaler"])
    run.order = WindowOrder(len(run.train_set), config.batch_size, config.seed, state["epoch"], state["index"])
    run.step, run.history = state["step"], state["history"]
    restore_rng_state(checkpoint["rng"], run.device, run.rank)


def _loop(run: _Run, config: TrainConfig, stop: int) -> float:
    """Optimizer steps until step ``stop``, evaluating and checkpointing every
    ``eval_interval`` steps and at the end. Returns the last validation loss."""
    model = torch.compile(run.model) if config.compile else run.model
    if run.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[run.local_rank] if run.device.type == "cuda" else None)
    per_rank = config.batch_size // run.world_size
    tokens_per_step = config.batch_size * config.grad_accum_steps * run.max_length
    bar = tqdm(total=stop, initial=run.step, disable=not (config.progress and run.rank == 0), desc="train")
    val_loss = float("nan")
    while run.step < stop:
        lr = get_lr(run.step, config)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        micro_batches = (run.train_set[run.order.next_batch()[run.rank * per_rank: (run.rank + 1) * per_rank]]
                         for _ in range(config.grad_accum_steps))  # this rank's slice of each batch
        step_loss = train_step(model, run.optimizer, run.scaler, micro_batches, config, run.amp)
        if run.world_size > 1:  # the loss of the whole global batch (gloo has no AVG)
            dist.all_reduce(step_loss)
            step_loss /= run.world_size
        run.step += 1
        loss_value = step_loss.item()
        tokens_per_sec = tokens_per_step / (time.perf_counter() - started)
        for key, value in zip(["step", "lr", "train_loss", "tokens_per_sec"], [run.step, lr, loss_value, tokens_per_sec]):
            run.history[key].append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_sec:,.0f}")
        if run.step % config.eval_interval == 0 or run.step == stop:
            val_loss = _evaluate_and_save(run, config, bar)
    bar.close()
    return val_loss


def _evaluate_and_save(run: _Run, config: TrainConfig, bar) -> float:
    """Validation loss and a sample into the history, then (on rank 0, with
    ``out_dir``) a checkpoint. Returns the validation loss."""
    is_main = run.rank == 0
    val_loss = evaluate(run.model, run.val_set, config, run.device, run.amp, run.rank, run.world_size)
    sample = ""
    if is_main and config.sample_tokens:
        sample = generate_text(run.model, run.tokenizer, config.sample_prompt, config.sample_tokens)
    for key, value in zip(["eval_step", "val_loss", "val_perplexity", "sample"],
                          [run.step, val_loss, math.exp(val_loss), sample]):
        run.history[key].append(value)
    if is_main:
        bar.write(f"step {run.step}: val loss {val_loss:.3f}, perplexity {math.exp(val_loss):.1f} | "
                  f"{config.sample_prompt}{sample!r}")
    rng = gather_rng_states(run.device, run.world_size)  # a collective: every rank takes part
    if is_main and config.out_dir is not None:
        trainer_state = {
            "step": run.step, "epoch": run.order.epoch, "index": run.order.index, "world_size": run.world_size,
            "train_config": asdict(config), "data_sha256": run.data_sha256,
            "grad_scaler": run.scaler.state_dict(), "history": run.history,
        }
        extra = {"loss.png": _png(plot_losses(run.history))}
        if config.tokenizer is not None:  # the model folder carries the tokenizer it reads (load_tokenizer)
            extra[TOKENIZER_FILE] = Path(config.tokenizer).read_bytes()
        save_checkpoint(config.out_dir, run.model, run.optimizer, trainer_state, rng, extra)
    return val_loss
