"""Chapter 4's pretraining loop (llmcourse.train) and its checkpoints
(llmcourse.checkpoints): schedule, learning, exact resume, crash-safe checkpoints,
DDP equivalence, the CLI and the plot.

Models are tiny (GPT-2's vocabulary, 32 channels) so every run takes seconds on
two CPU cores; the text is "The Verdict" from the data directory.
"""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmcourse.checkpoints import CHECKPOINT_FILES, load_checkpoint, save_checkpoint
from llmcourse.config import GPTConfig
from llmcourse.files import fetch
from llmcourse.train import (
    TrainConfig,
    WindowOrder,
    estimate_mfu,
    get_lr,
    load_token_ids,
    plot_losses,
    train,
)
from llmcourse.weights import load_gpt

pytestmark = pytest.mark.xdist_group("train")

REPO = Path(__file__).resolve().parents[1]
SMALL = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.1)


@pytest.fixture
def verdict() -> list[Path]:
    return [fetch("the-verdict.txt")]


def small_run(tmp_path, **overrides) -> TrainConfig:
    settings = dict(batch_size=4, max_length=32, max_steps=6, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                    eval_interval=100, eval_steps=2, sample_tokens=0, progress=False,
                    token_cache_dir=str(tmp_path / "tokens"))
    return TrainConfig(**{**settings, **overrides})


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: different tensor names {sorted(a.keys() ^ b.keys())}"
    for name in a:
        assert torch.equal(a[name], b[name]), (
            f"{what}: {name} differs, max |diff| {(a[name].double() - b[name].double()).abs().max().item()}")


# --- schedule, data order, MFU ------------------------------------------------------


def test_lr_warmup_then_cosine_at_hand_computed_steps():
    config = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=14)
    expected = {
        0: 0.25, 1: 0.5, 3: 1.0,  # linear warm-up: lr * (step + 1) / 4
        4: 1.0,  # the cosine starts at lr
        9: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)),  # halfway: 0.55
        14: 0.1, 20: 0.1,  # min_lr at max_steps and after
    }
    for step, lr in expected.items():
        assert get_lr(step, config) == pytest.approx(lr, abs=1e-12), f"step {step}"
    assert get_lr(9, config) == pytest.approx(0.55, abs=1e-12)


def test_window_order_is_a_function_of_seed_epoch_and_index():
    run = WindowOrder(10, 3, seed=7)
    batches = [run.next_batch() for _ in range(7)]  # 3 per epoch (one window skipped), so 3 epochs
    assert (run.epoch, run.index) == (2, 3)
    assert len(set(torch.cat(batches[:3]).tolist())) == 9, "an epoch repeats a window"
    resumed = WindowOrder(10, 3, seed=7, epoch=1, index=3)  # where run stood after batch 4
    assert torch.equal(resumed.next_batch(), batches[4])
    with pytest.raises(ValueError, match="fewer than batch_size"):
        WindowOrder(2, 3, seed=7)


def test_estimate_mfu_hand_computed():
    config = GPTConfig(vocab_size=100, context_length=10, emb_dim=8, n_heads=2, n_layers=1)
    # N without position embeddings: tok 800 + block (attn 288 + ff 552 + norms 32) + final norm 16 = 1688
    flops_per_token = 6 * 1688 + 12 * 1 * 8 * 10
    assert estimate_mfu(config, 1000.0, 1e9) == pytest.approx(1000.0 * flops_per_token / 1e9, rel=1e-12)
    shorter = 6 * 1688 + 12 * 1 * 8 * 4  # windows of 4 tokens: less attention per token
    assert estimate_mfu(config, 1000.0, 1e9, max_length=4) == pytest.approx(1000.0 * shorter / 1e9, rel=1e-12)


def test_token_ids_are_cached_by_content(tmp_path):
    text_file = tmp_path / "a.txt"
    text_file.write_text("Hello, world.Hello, world.")
    ids = load_token_ids([text_file], tmp_path / "cache")
    assert ids.tolist() == [15496, 11, 995, 13] * 2 and len(list((tmp_path / "cache").iterdir())) == 1
    text_file.write_text("Hello, world.")  # new contents, new cache entry
    assert load_token_ids([text_file], tmp_path / "cache").tolist() == [15496, 11, 995, 13]
    assert len(list((tmp_path / "cache").iterdir())) == 2
    two = load_token_ids([text_file, text_file], tmp_path / "cache")
    assert two.tolist() == [15496, 11, 995, 13, 50256, 15496, 11, 995, 13], "files are joined by <|endoftext|>"


# --- learning -----------------------------------------------------------------------


def test_loss_goes_down_on_the_verdict(tmp_path, verdict):
    config = small_run(tmp_path, max_steps=30, lr=1e-2, min_lr=1e-3, warmup_steps=3, eval_interval=30, eval_steps=4)
    result = train(SMALL, config, verdict)
    losses = result.history["train_loss"]
    assert losses[0] == pytest.approx(math.log(50257), abs=0.3), "a fresh model should be near uniform"
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0, f"train loss {losses[0]:.2f} -> {losses[-5:]}"
    assert result.history["val_loss"][-1] < losses[0] - 1.5
    assert result.history["val_perplexity"][-1] == pytest.approx(math.exp(result.history["val_loss"][-1]))


# --- checkpoints and exact resume ---------------------------------------------------


def test_resume_is_bit_exact(tmp_path, verdict):
    # Dropout and gradient accumulation, so RNG state and data position both matter.
    settings = dict(max_steps=6, grad_accum_steps=2, batch_size=2)
    full = train(SMALL, small_run(tmp_path, out_dir=str(tmp_path / "full"), **settings), verdict)

    part = small_run(tmp_path, out_dir=str(tmp_path / "part"), **settings)
    train(SMALL, part, verdict, until_step=3)
    torch.manual_seed(999)  # resume must restore the RNG, not inherit it
    resumed = train(None, part, verdict, resume=True)

    assert resumed.history["train_loss"] == full.history["train_loss"]
    assert resumed.history["step"] == list(range(1, 7))
    assert_same_tensors(resumed.model.state_dict(), full.model.state_dict(), "weights")
    assert_same_tensors(load_file(tmp_path / "part" / "optimizer.safetensors"),
                        load_file(tmp_path / "full" / "optimizer.safetensors"), "optimizer state")
    part_state = json.loads((tmp_path / "part" / "trainer_state.json").read_text())
    full_state = json.loads((tmp_path / "full" / "trainer_state.json").read_text())
    for key in ("step", "epoch", "index"):
        assert part_state[key] == full_state[key], key


@pytest.fixture
def checkpoint(tmp_path, verdict) -> Path:
    train(SMALL, small_run(tmp_path, out_dir=str(tmp_path / "ckpt"), max_steps=1), verdict)
    return tmp_path / "ckpt"


def test_checkpoint_is_a_model_folder_and_loads(checkpoint):
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted([*CHECKPOINT_FILES, "loss.png"])
    assert load_gpt(checkpoint, device="cpu").config == SMALL
    state = load_checkpoint(checkpoint, SMALL)
    assert state["trainer_state"]["step"] == 1
    assert state["rng"]["cpu.rank0"].dtype == torch.uint8


def test_corrupt_or_mismatched_checkpoints_are_named(checkpoint, tmp_path):
    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(checkpoint, copy)
        return copy

    folder = broken("truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(folder, SMALL)

    folder = broken("truncated-optimizer")
    data = (folder / "optimizer.safetensors").read_bytes()
    (folder / "optimizer.safetensors").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="optimizer.safetensors"):
        load_checkpoint(folder, SMALL)

    folder = broken("edited-config")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "emb_dim": 64}))
    with pytest.raises(ValueError, match="config.json"):
        load_checkpoint(folder)

    folder = broken("missing-optimizer")
    (folder / "optimizer.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="optimizer.safetensors"):
        load_checkpoint(folder, SMALL)

    folder = broken("bad-json")
    (folder / "trainer_state.json").write_text('{"step": 1,')
    with pytest.raises(ValueError, match="trainer_state.json.*not valid JSON"):
        load_checkpoint(folder, SMALL)

    with pytest.raises(ValueError, match=r"does not match the model config \(emb_dim: checkpoint 32, requested 64"):
        load_checkpoint(checkpoint, GPTConfig(context_length=32, emb_dim=64, n_heads=2, n_layers=2))


def test_resume_refuses_other_data_settings(checkpoint, tmp_path, verdict):
    with pytest.raises(ValueError, match="batch_size differ"):
        train(SMALL, small_run(tmp_path, out_dir=str(checkpoint), batch_size=2), verdict, resume=True)


def test_interrupted_swap_is_recovered(checkpoint):
    saving, previous = checkpoint.parent / ".ckpt.saving", checkpoint.parent / ".ckpt.previous"
    # Killed between the two renames: the old checkpoint waits as .previous.
    os.replace(checkpoint, previous)
    saving.mkdir()
    (saving / "config.json").write_text("{}")  # an incomplete new one
    assert load_checkpoint(checkpoint, SMALL)["trainer_state"]["step"] == 1
    assert not saving.exists() and not previous.exists()


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import torch
    import llmcourse.checkpoints as checkpoints_mod
    import llmcourse.weights as weights_mod
    from llmcourse.config import GPTConfig
    from llmcourse.model import GPT

    model = GPT(GPTConfig(vocab_size=64, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long)).sum().backward()
    optimizer.step()
    folder = sys.argv[1]

    def state(step):  # the step and a weight it must come with
        return {"step": step, "weight": model.tok_emb.weight[0, 0].item()}

    checkpoints_mod.save_checkpoint(folder, model, optimizer, state(1), {"cpu.rank0": torch.get_rng_state()})

    def announce(event):  # say what just happened, then wait until the parent says go on (or kills us)
        print(event, flush=True)
        sys.stdin.readline()

    write, replace = weights_mod.atomic_write_bytes, os.replace
    def announced_write(path, data):
        write(path, data)
        announce("wrote " + Path(path).name)
    def announced_replace(src, dst):
        replace(src, dst)
        if Path(dst).is_dir():  # the checkpoint swap, not a file's own rename
            announce("renamed " + Path(src).name + " " + Path(dst).name)
    checkpoints_mod.atomic_write_bytes = weights_mod.atomic_write_bytes = announced_write
    os.replace = announced_replace
    with torch.no_grad():
        model.tok_emb.weight.add_(1.0)
    checkpoints_mod.save_checkpoint(folder, model, optimizer, state(2), {"cpu.rank0": torch.get_rng_state()})
    print("done", flush=True)
""")


@pytest.mark.parametrize("kill_after, left_behind, step", [
    ("wrote model.safetensors", ".ckpt.saving", 1),  # mid-write of the new checkpoint
    ("wrote trainer_state.json", ".ckpt.saving", 1),  # all files written, not yet swapped in
    ("renamed ckpt .ckpt.previous", ".ckpt.previous", 1),  # between the two renames: no ckpt at all
    ("renamed .ckpt.saving ckpt", ".ckpt.previous", 2),  # swapped in, old one not yet deleted
])
def test_kill_mid_save_leaves_a_loadable_checkpoint(tmp_path, kill_after, left_behind, step):
    script = tmp_path / "saver.py"
    script.write_text(KILL_SCRIPT)
    folder = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, str(script), str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    events = []
    for line in proc.stdout:  # the saver waits after each event until it reads a line
        events.append(line.strip())
        if events[-1] == kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        if events[-1] == "done":  # the saver finished without reporting kill_after
            break
        proc.stdin.write("go on\n")
        proc.stdin.flush()
    proc.wait(timeout=60)
    proc.stdin.close()
    proc.stdout.close()
    assert events[-1] == kill_after, f"the saver never reported {kill_after!r}; it said {events}"
    assert (tmp_path / left_behind).is_dir(), sorted(p.name for p in tmp_path.iterdir())

    state = load_checkpoint(folder)  # raises if anything is half written
    saved = state["trainer_state"]
    assert saved["step"] == step
    # Files of one save belong together: the weights are those of the step in trainer_state.
    assert state["model"].tok_emb.weight[0, 0].item() == saved["weight"]
    assert load_gpt(folder, device="cpu").tok_emb.weight[0, 0].item() == saved["weight"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(CHECKPOINT_FILES)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt"))
    assert leftovers == [], f"temporary folders left after recovery: {leftovers}"


def test_save_checkpoint_replaces_the_previous_one(checkpoint):
    state = load_checkpoint(checkpoint, SMALL)
    model = state["model"]
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(checkpoint, model, optimizer, {"step": 7}, state["rng"])
    assert json.loads((checkpoint / "trainer_state.json").read_text()) == {"step": 7}
    assert not any(p.name.startswith(".ckpt") for p in checkpoint.parent.iterdir())


# --- distributed --------------------------------------------------------------------


DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    torch.set_num_threads(1)
    from llmcourse.model import GPTConfig
    from llmcourse.train import TrainConfig, train
    model_config, train_config, data = json.loads(sys.argv[1])
    train(GPTConfig(**model_config), TrainConfig(**train_config), data)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_the_global_batch(tmp_path, verdict):
    # No qkv bias: the key bias's true gradient is 0 (softmax ignores a shift shared by a row),
    # so its computed gradient is rounding noise that Adam's normalisation blows up to +-lr,
    # differently for any other summation order, DDP's or not.
    model_config = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=False)
    settings = dict(max_steps=4, grad_accum_steps=2, eval_interval=2, lr=1e-3, min_lr=1e-4)
    ddp_config = small_run(tmp_path, out_dir=str(tmp_path / "ddp"), **settings)
    arg = json.dumps([model_config.to_dict(), ddp_config.__dict__, [str(p) for p in verdict]])
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), arg], cwd=REPO,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]

    single = train(model_config, small_run(tmp_path, **settings), verdict)
    ddp_state = load_checkpoint(tmp_path / "ddp", model_config)
    ddp_weights, weights = ddp_state["model"].state_dict(), single.model.state_dict()
    # Summing the batch in two halves rounds differently (~1e-7 relative). Where a gradient is
    # a sum that nearly cancels (an output row of a token the batch never has: tiny softmax
    # terms of both signs), that rounding is a large part of it, and Adam, which divides by
    # sqrt(v), turns it into a visible change of the update. So: a loose bound (5% of lr) for
    # every element, and a tight one (1e-7) for all but 0.1% of them. A real DDP bug (gradients
    # not averaged, both ranks on the same data) moves most weights by ~lr and the losses too.
    n_loose, n_total = 0, 0
    for name in weights:
        diff = (ddp_weights[name] - weights[name]).abs()
        assert diff.max() <= 5e-5, f"{name}: DDP and single-process weights differ by up to {diff.max():.2e}"
        n_loose += int((diff > 1e-7).sum())
        n_total += diff.numel()
    assert n_loose <= n_total * 1e-3, f"{n_loose} of {n_total} weights differ by more than 1e-7"
    history = ddp_state["trainer_state"]["history"]
    assert history["train_loss"][0] == pytest.approx(single.history["train_loss"][0], abs=1e-6), "same first batch"
    assert history["train_loss"] == pytest.approx(single.history["train_loss"], abs=1e-5)
    assert sorted(ddp_state["rng"]) == ["cpu.rank0", "cpu.rank1"]


# --- the command line and the plot ---------------------------------------------------


@pytest.mark.slow
def test_cli_train_then_generate(tmp_path):
    config_file = tmp_path / "model.json"
    config_file.write_text(json.dumps({"context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2}))
    env = {**os.environ, "LLMCOURSE_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    out = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "llmcourse.cli", "train", "--config", str(config_file), "--data", "the-verdict.txt",
         "--max-steps", "3", "--batch-size", "2", "--out", str(out), "--no-progress",
         "--set", "eval_steps=1", "--set", "sample_tokens=3", "--set", "warmup_steps=1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"checkpoint in {out}" in run.stdout and "final validation loss" in run.stdout
    gen = subprocess.run(
        [sys.executable, "-m", "llmcourse.cli", "generate", "--checkpoint", str(out),
         "--prompt", "Every effort", "--max-new-tokens", "5", "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("Every effort") and len(gen.stdout.strip()) > len("Every effort")

    bad = subprocess.run([sys.executable, "-m", "llmcourse.cli", "train", "--config", "nope", "--data", "x"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "preset name" in bad.stderr


def test_plot_losses_writes_a_png(tmp_path):
    history = {"step": [1, 2, 3], "train_loss": [10.0, 9.0, 8.5], "eval_step": [3], "val_loss": [8.8],
               "val_perplexity": [math.exp(8.8)]}
    fig = plot_losses(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2 and fig.axes[0].get_lines()[0].get_ydata().tolist() == [10.0, 9.0, 8.5]
