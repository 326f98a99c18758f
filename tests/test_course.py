"""The course model: its tokenizer learns from the training text only, the model is trained
once and then read from the cache (an interrupted run resumes), and the loss in nats per
character and its two baselines are computed as their definitions say.

The full-size run is the book's (chapter 4 asserts it learned); here the same code runs on
a tiny model for a few steps, in a cache folder of the test's own.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmcourse import course
from llmcourse.config import GPTConfig
from llmcourse.files import read_text
from llmcourse.model import GPT
from llmcourse.tokenizer import BPETokenizer
from llmcourse.train import train

REPO = Path(__file__).resolve().parents[1]
SMALL = replace(course.COURSE_MODEL, context_length=32, emb_dim=32, n_heads=2, n_layers=1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def small_run(**overrides):
    return course.course_train_config(**{"max_steps": 4, "batch_size": 2, "eval_interval": 2, "eval_steps": 1,
                                         "warmup_steps": 1, "sample_tokens": 3, **overrides})


def test_the_course_tokenizer_learns_from_the_training_text_only(cache):
    tokenizer = course.course_tokenizer()
    assert tokenizer.n_vocab == course.VOCAB_SIZE and tokenizer.eot_token == course.VOCAB_SIZE - 1
    text = read_text(course.DATA)
    assert tokenizer.merges == BPETokenizer.train(text[:int(len(text) * course.TOKENIZER_TEXT)],
                                                  course.VOCAB_SIZE).merges
    # the text it learned from ends before the validation tokens begin
    train_ids, val_ids = course.course_splits()
    assert int(len(text) * course.TOKENIZER_TEXT) <= course.chars_of(tokenizer, train_ids)
    assert tokenizer.decode(train_ids.tolist() + val_ids.tolist()) == text
    assert course.course_tokenizer_file() == course.course_tokenizer_file()  # trained once, then read


def test_the_course_model_is_trained_once_then_read_from_the_cache(cache):
    config = small_run()
    model, history = course.course_model(SMALL, config)
    assert history["step"][-1] == 4 and not model.training
    (folder,) = (cache / "course").glob("shakespeare-*")
    assert (folder / "tokenizer.json").is_file()  # the model folder carries its tokenizer
    stamp = (folder / "trainer_state.json").stat().st_mtime_ns
    again, history_again = course.course_model(SMALL, config)
    assert (folder / "trainer_state.json").stat().st_mtime_ns == stamp, "a finished run is not trained again"
    assert history_again["val_loss"] == history["val_loss"]
    x = torch.randint(0, course.VOCAB_SIZE, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # another setting is another model, in its own folder
    course.course_model(SMALL, small_run(seed=7, max_steps=2))
    assert len(list((cache / "course").glob("shakespeare-*"))) == 2


def test_an_interrupted_course_run_resumes(cache):
    config = small_run()
    full, _ = course.course_model(SMALL, config)
    for folder in (cache / "course").glob("shakespeare-*"):
        shutil.rmtree(folder)
    folder = course._run_folder(SMALL, config)
    train(SMALL, replace(config, out_dir=str(folder)), [course.DATA], until_step=2)  # "interrupted" at step 2
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 2
    resumed, history = course.course_model(SMALL, config)
    assert history["step"] == [1, 2, 3, 4]
    x = torch.randint(0, course.VOCAB_SIZE, (1, 8))
    with torch.no_grad():
        assert torch.allclose(full(x), resumed(x), atol=1e-5)


def test_nats_per_char_is_the_summed_loss_over_the_characters():
    """A model that gives every token the same probability loses log(V) per token."""
    tokenizer = BPETokenizer.train(read_text("the-verdict.txt"), 300)
    model = GPT(GPTConfig(vocab_size=tokenizer.n_vocab, context_length=16, emb_dim=16, n_heads=2, n_layers=1))
    with torch.no_grad():
        model.out_head.weight.zero_()  # every logit 0: uniform over the vocabulary
    ids = torch.tensor(tokenizer.encode(read_text("the-verdict.txt")[:3000]))
    n = (len(ids) - 1) // 16
    scored = ids[1: n * 16 + 1]
    expected = len(scored) * math.log(tokenizer.n_vocab) / len(tokenizer.decode(scored.tolist()))
    assert course.nats_per_char(model, tokenizer, ids) == pytest.approx(expected, rel=1e-5)


def test_the_baselines_follow_their_definitions():
    tokenizer = BPETokenizer.train("ab ab ab ba", 258, special_tokens=())
    train_ids = torch.tensor([0, 1, 0, 1, 0, 1])
    val_ids = torch.tensor([0, 1, 0])
    V = tokenizer.n_vocab
    chars = len(tokenizer.decode([1, 0]))
    p0, p1 = (3 + 1) / (6 + V), (3 + 1) / (6 + V)  # add-one unigram
    assert course.unigram_nats_per_char(tokenizer, train_ids, val_ids) == pytest.approx(
        -(math.log(p1) + math.log(p0)) / chars)
    # bigram: P(1 | 0) = 3/3, P(0 | 1) = 2/3, mixed 0.7 / 0.3 with the add-one unigram
    u = 1 / (6 + V) * 4
    expected = -(math.log(0.7 * 1 + 0.3 * u) + math.log(0.7 * 2 / 3 + 0.3 * u)) / chars
    assert course.bigram_nats_per_char(tokenizer, train_ids, val_ids) == pytest.approx(expected)


@pytest.mark.slow
def test_cli_trains_the_course_preset_and_generates_with_its_tokenizer(tmp_path):
    env = {**os.environ, "LLMCOURSE_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    out = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "llmcourse.cli", "train", "--preset", "shakespeare", "--max-steps", "2",
         "--batch-size", "2", "--eval-interval", "2", "--out", str(out), "--no-progress",
         "--set", "eval_steps=1", "--set", "sample_tokens=3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert (out / "tokenizer.json").is_file() and "final validation loss" in run.stdout
    gen = subprocess.run(
        [sys.executable, "-m", "llmcourse.cli", "generate", "--checkpoint", str(out), "--prompt", "ROMEO:",
         "--max-new-tokens", "8", "--seed", "1", "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("ROMEO:") and len(gen.stdout.strip()) > len("ROMEO:")
    bad = subprocess.run([sys.executable, "-m", "llmcourse.cli", "train", "--preset", "shakespeare", "--config", "tiny"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not both" in bad.stderr
