"""Classification and instruction fine-tuning (llmcourse.finetune, chapter 5) and their CLI."""
import functools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from llmcourse.config import GPTConfig
from llmcourse.files import read_text
from llmcourse.finetune import (
    ALPACA_PREAMBLE,
    PAD_ID,
    BagOfWords,
    ClassificationDataset,
    InstructionDataset,
    accuracy,
    add_classification_head,
    balance_classes,
    classification_accuracy,
    classification_loss,
    classify,
    digit_rule,
    evaluate_loss,
    finetune,
    format_instruction,
    format_prompt,
    freeze_for_finetuning,
    generate_responses,
    instruction_collate,
    instruction_dataloader,
    instruction_loss,
    instruction_splits,
    judge_prompt,
    judge_responses,
    last_token_logits,
    lcs_length,
    load_classifier,
    mean_rouge_l,
    rouge_l_f1,
    save_classifier,
    save_responses,
    seeded_split,
    spam_dataloaders,
    spam_splits,
    words,
)
from llmcourse.generate import generate_text
from llmcourse.model import GPT
from llmcourse.tokenizer import BPETokenizer, gpt2_tokenizer
from llmcourse.weights import load_gpt

pytestmark = pytest.mark.xdist_group("finetune")

REPO = Path(__file__).resolve().parents[1]
SMALL = GPTConfig(context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0)

WITH_INPUT = {
    "instruction": "Rewrite the sentence using a simile.",
    "input": "The car is very fast.",
    "output": "The car is as fast as lightning.",
}
WITHOUT_INPUT = {
    "instruction": "What is the capital of Italy?",
    "input": "",
    "output": "The capital of Italy is Rome.",
}


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def small_model(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = GPTConfig(**{**SMALL.to_dict(), **overrides})
    return GPT(config).eval()


# --- Splits --------------------------------------------------------------------------


def test_seeded_split_sizes_and_determinism():
    items = list(range(20))
    split = seeded_split(items, (0.7, 0.1, 0.2), seed=5)
    assert [len(split[k]) for k in ("train", "val", "test")] == [14, 2, 4]
    assert sorted(split["train"] + split["val"] + split["test"]) == items, "a split must use every item once"
    assert seeded_split(items, (0.7, 0.1, 0.2), seed=5) == split, "the same seed must give the same split"
    assert seeded_split(items, (0.7, 0.1, 0.2), seed=6) != split
    with pytest.raises(ValueError, match="summing to 1"):
        seeded_split(items, (0.7, 0.1, 0.1))


def test_balance_classes_undersamples_to_the_smallest_class():
    examples = [(f"ham {i}", 0) for i in range(10)] + [("spam a", 1), ("spam b", 1), ("spam c", 1)]
    balanced = balance_classes(examples, seed=1)
    assert Counter(label for _, label in balanced) == {0: 3, 1: 3}
    assert [e for e in balanced if e[1] == 1] == examples[10:], "the smallest class is kept whole"
    assert set(balanced) <= set(examples)
    assert balance_classes(examples, seed=1) == balanced


def test_spam_splits_are_balanced_deterministic_and_sized():
    splits = spam_splits(seed=123)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1045, "val": 149, "test": 300}
    everything = splits["train"] + splits["val"] + splits["test"]
    assert Counter(label for _, label in everything) == {0: 747, 1: 747}, "undersampled to 747 ham, 747 spam"
    in_file = Counter((text, ("ham", "spam").index(label))
                      for label, text in (line.split("\t", 1) for line in read_text("SMSSpamCollection").splitlines()))
    assert Counter(everything) <= in_file, "every example comes from the file, none used more often than it appears"
    assert spam_splits(seed=123) == splits, "the same seed must give the same split"
    assert spam_splits(seed=7)["train"] != splits["train"]
    assert 450 < sum(label for _, label in splits["train"]) < 600, "about half of train is spam"


# --- Baselines -----------------------------------------------------------------------


def test_digit_rule_and_bag_of_words_on_the_balanced_split():
    assert digit_rule("Call 09061 now") == 1 and digit_rule("see you at 1230") == 0
    assert words("FREE entry: txt WIN to 87121!") == ["free", "entry", "txt", "win", "to", "87121"]
    splits = spam_splits(seed=123)
    rule = accuracy([digit_rule(text) for text, _ in splits["test"]], splits["test"])
    assert rule == 280 / 300, "chapter 1's one-line rule: 93.3% on the test split"
    bag = BagOfWords(splits["train"])
    assert len(bag.vocabulary) == 1751, "words seen at least twice in the 1,045 training messages"
    test = accuracy(bag.predict([text for text, _ in splits["test"]]), splits["test"])
    assert 0.94 <= test < 0.97, f"logistic regression on word counts: {test:.3f} on the test split"
    with pytest.raises(ValueError, match="one prediction per example"):
        accuracy([1], splits["test"])


def test_bag_of_words_learns_which_words_mark_a_class():
    examples = [("win cash now", 1), ("cash prize win", 1), ("lunch at noon", 0), ("see you at lunch", 0)] * 3
    bag = BagOfWords(examples, min_count=1)
    assert bag.predict(["win a prize", "lunch with you", "cash"]) == [1, 0, 1]
    assert bag.features(["cash cash", "unknown"]).tolist()[1] == [0.0] * len(bag.vocabulary)


# --- Classification ------------------------------------------------------------------


def test_classification_dataset_pads_and_truncates(tokenizer):
    examples = [("Hello, world.", 1), ("Hello", 0)]  # GPT-2 ids [15496, 11, 995, 13] and [15496]
    assert PAD_ID == tokenizer.eot_token == 50256, "padding is GPT-2's end-of-text token"
    longest = ClassificationDataset(examples, tokenizer)
    assert longest.max_length == 4
    assert longest[0][0].tolist() == [15496, 11, 995, 13] and longest[0][1].item() == 1
    assert longest[1][0].tolist() == [15496, PAD_ID, PAD_ID, PAD_ID] and longest[1][1].item() == 0
    cut = ClassificationDataset(examples, tokenizer, max_length=2)
    assert cut[0][0].tolist() == [15496, 11]
    assert cut[1][0].tolist() == [15496, PAD_ID]
    with pytest.raises(ValueError, match="empty text"):
        ClassificationDataset([("", 0)], tokenizer)


def test_classification_pads_with_the_tokenizers_end_of_text():
    """The course tokenizer's <|endoftext|> is id 1023, not GPT-2's 50256: the data are padded
    with the tokenizer's own, and a loss told the wrong pad id says so."""
    tokenizer = BPETokenizer.train("spam spam ham eggs " * 20, 266)
    dataset = ClassificationDataset([("spam eggs", 1), ("ham", 0)], tokenizer)
    assert dataset.pad_id == tokenizer.eot_token == 265
    assert dataset.input_ids[1].tolist()[-1] == 265
    model = add_classification_head(small_model(vocab_size=266), num_classes=2)
    batch = (dataset.input_ids, dataset.labels)
    loss = classification_loss(model, batch, pad_id=dataset.pad_id)
    expected = torch.nn.functional.cross_entropy(last_token_logits(model, dataset.input_ids, 265), dataset.labels)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="pad_id 50256 is not a token of this model's 266-token vocabulary"):
        classification_loss(model, batch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    assert classification_accuracy(model, loader, pad_id=265) in (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="tokenizer.eot_token"):
        classification_accuracy(model, loader)


def test_last_token_logits_do_not_depend_on_padding():
    model = add_classification_head(small_model(), num_classes=3)
    ids = torch.tensor([[5, 17, 300, 2]])
    alone = model(ids)[0, -1]  # the unpadded text's last position
    short = torch.tensor([[5, 17, 300, 2, PAD_ID]])
    long = torch.tensor([[5, 17, 300, 2] + [PAD_ID] * 9, [8] * 13])
    for padded in (short, long):
        got = last_token_logits(model, padded)[0]
        torch.testing.assert_close(got, alone, rtol=0, atol=1e-6)
    # The un-padded row of the batch reads its very last position.
    torch.testing.assert_close(last_token_logits(model, long)[1], model(long)[1, -1], rtol=0, atol=1e-6)


def test_add_classification_head_and_freeze_flags():
    model = add_classification_head(small_model(), num_classes=2)
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 2)
    assert model.out_head.weight.data_ptr() != model.tok_emb.weight.data_ptr(), "the new head must not be tied"
    assert model.config.tie_embeddings is False

    freeze_for_finetuning(model, trainable_blocks=1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected_prefixes = ("blocks.1.", "final_norm.", "out_head.")
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(expected_prefixes)}

    freeze_for_finetuning(model, trainable_blocks=0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"final_norm.weight", "final_norm.bias", "out_head.weight", "out_head.bias"}

    for bad in (-1, 3, 1.0):
        with pytest.raises(ValueError, match="trainable_blocks"):
            freeze_for_finetuning(model, bad)
    with pytest.raises(ValueError, match="num_classes"):
        add_classification_head(small_model(), num_classes=1)


@pytest.fixture
def trained_spam_classifier():
    return _train_spam_classifier()


@functools.cache  # trained once per process, however pytest-xdist orders the tests
def _train_spam_classifier():
    """A 2-layer model from random init, its last block + norm + head trained for one epoch."""
    tokenizer = gpt2_tokenizer()
    torch.manual_seed(123)
    model = add_classification_head(GPT(SMALL), num_classes=2)
    freeze_for_finetuning(model, trainable_blocks=1)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    loaders = spam_dataloaders(tokenizer, batch_size=16, max_length=64, context_length=SMALL.context_length, seed=123)
    history = finetune(model, loaders["train"], classification_loss, epochs=1, lr=2e-3, weight_decay=0.1,
                       val_loader=loaders["val"])
    return model, before, loaders, history


def test_spam_classifier_beats_chance_on_held_out_messages(trained_spam_classifier):
    model, _, loaders, history = trained_spam_classifier
    assert len(history) == 1 and history[0]["steps"] == 1045 // 16
    assert history[0]["val_loss"] < 0.6931, "validation loss should be below chance, ln 2"
    test_accuracy = classification_accuracy(model, loaders["test"])
    assert test_accuracy >= 0.75, f"test accuracy {test_accuracy:.3f} on the balanced split (chance: 0.5)"


def test_freezing_really_freezes(trained_spam_classifier):
    model, before, _, _ = trained_spam_classifier
    for name, p in model.named_parameters():
        if name.startswith(("blocks.1.", "final_norm.", "out_head.")):
            assert p.requires_grad, name
            assert not torch.equal(p, before[name]), f"trainable {name} did not change"
        else:
            assert not p.requires_grad, name
            assert torch.equal(p, before[name]), f"frozen {name} changed"


def test_classify_agrees_with_the_batched_prediction(trained_spam_classifier, tokenizer):
    model, _, loaders, _ = trained_spam_classifier
    texts = [text for text, _ in spam_splits(seed=123)["test"][:8]]
    input_ids = loaders["test"].dataset.input_ids[:8]
    batched = last_token_logits(model, input_ids).argmax(dim=-1).tolist()
    assert [classify(model, tokenizer, t, max_length=64) for t in texts] == [("ham", "spam")[i] for i in batched]
    assert classify(model, tokenizer, texts[0], labels=("no", "yes"), max_length=64) in ("no", "yes")
    with pytest.raises(ValueError, match="2 classes but 3 labels"):
        classify(model, tokenizer, "hi", labels=("a", "b", "c"))
    with pytest.raises(TypeError):
        classify(model, tokenizer, 42)


def test_save_and_load_classifier_round_trip(tmp_path):
    model = add_classification_head(small_model(), num_classes=3)
    save_classifier(model, tmp_path / "clf", labels=("a", "b", "c"), max_length=20)
    loaded, info = load_classifier(tmp_path / "clf", device="cpu")
    assert info == {"num_classes": 3, "labels": ["a", "b", "c"], "max_length": 20}
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    # The folder is a classifier, not a language model: load_gpt says the head does not fit.
    with pytest.raises(ValueError, match="out_head.weight"):
        load_gpt(tmp_path / "clf", device="cpu")
    (tmp_path / "clf" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="valid classifier"):
        load_classifier(tmp_path / "clf", device="cpu")
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        load_classifier(tmp_path, device="cpu")


# --- Instruction data ----------------------------------------------------------------


def test_format_instruction_with_and_without_input():
    assert format_instruction(WITH_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite the sentence using a simile."
        "\n\n### Input:\nThe car is very fast.\n\n### Response:\nThe car is as fast as lightning."
    )
    assert format_instruction(WITHOUT_INPUT) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nWhat is the capital of Italy?"
        "\n\n### Response:\nThe capital of Italy is Rome."
    )
    assert format_prompt(WITHOUT_INPUT) + WITHOUT_INPUT["output"] == format_instruction(WITHOUT_INPUT)
    assert format_prompt({"instruction": "Say hi."}).endswith("### Instruction:\nSay hi.\n\n### Response:\n")
    with pytest.raises(ValueError, match="'output'"):
        format_instruction({"instruction": "x"})
    with pytest.raises(TypeError, match="dict"):
        format_prompt("just a string")


def test_instruction_splits_sizes_and_determinism():
    splits = instruction_splits(seed=123)
    assert {k: len(v) for k, v in splits.items()} == {"train": 935, "val": 55, "test": 110}
    assert instruction_splits(seed=123) == splits
    assert all(set(r) >= {"instruction", "input", "output"} for part in splits.values() for r in part)


def test_instruction_dataset_carries_the_prompt_length(tokenizer):
    dataset = InstructionDataset([WITH_INPUT, WITHOUT_INPUT], tokenizer)
    for (ids, prompt_length), entry in zip(dataset, [WITH_INPUT, WITHOUT_INPUT]):
        assert tokenizer.decode(ids) == format_instruction(entry)
        assert ids[:prompt_length] == tokenizer.encode(format_prompt(entry))
        assert tokenizer.decode(ids[prompt_length:]) == entry["output"]
    short = InstructionDataset([WITH_INPUT], tokenizer, preamble="")
    ids, prompt_length = short[0]
    assert tokenizer.decode(ids) == format_instruction(WITH_INPUT, preamble="")
    assert format_prompt(WITH_INPUT, preamble="").startswith("### Instruction:\n")
    assert format_prompt(WITH_INPUT) == f"{ALPACA_PREAMBLE}\n\n" + format_prompt(WITH_INPUT, preamble="")


def test_collate_pads_shifts_and_keeps_the_first_end_of_text():
    # The three sequences of the book's chapter 7 example and the tensors it prints.
    batch = [([0, 1, 2, 3, 4], 2), ([5, 6], 1), ([7, 8, 9], 2)]
    inputs, targets = instruction_collate(batch)
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]


def test_collate_masks_prompts_and_truncates():
    batch = [([0, 1, 2, 3, 4], 2), ([5, 6], 1), ([7, 8, 9], 2)]
    _, masked = instruction_collate(batch, mask_prompt=True)
    # Prompt tokens 1..P-1 are the targets of positions 0..P-2: for P = 2 that is position 0.
    assert masked.tolist() == [[-100, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [-100, 9, 50256, -100, -100]]
    inputs, targets = instruction_collate(batch, pad_id=0, ignore_index=-1, max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, 0], [7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3], [6, 0, -1], [8, 9, 0]]
    with pytest.raises(ValueError, match="empty batch"):
        instruction_collate([])
    with pytest.raises(ValueError, match="prompt_length"):
        instruction_collate([([], 0)])
    with pytest.raises(ValueError, match="prompt_length"):
        instruction_collate([([1, 2], 3)])


# --- Instruction training, generation and scoring ------------------------------------


def test_short_instruction_training_lowers_the_held_out_loss(tokenizer):
    splits = instruction_splits(seed=123)
    model = small_model(seed=1)  # context 64: longer examples are cut, as the collate allows
    train = instruction_dataloader(splits["train"][:32], tokenizer, batch_size=8, shuffle=True,
                                   max_length=64)
    val = instruction_dataloader(splits["val"][:16], tokenizer, batch_size=8, max_length=64)
    before = evaluate_loss(model, val, instruction_loss)
    history = finetune(model, train, instruction_loss, epochs=2, lr=5e-3, val_loader=val)
    after = history[-1]["val_loss"]
    assert [h["steps"] for h in history] == [4, 8]
    assert before > 10.0, f"a random model over 50,257 tokens starts near ln 50257 = 10.8, got {before:.3f}"
    assert after < before - 1.0, f"validation loss went from {before:.3f} to {after:.3f}"
    assert after == pytest.approx(evaluate_loss(model, val, instruction_loss), abs=1e-6)


def test_generate_responses_stop_at_end_of_text_and_save_as_json(tmp_path, tokenizer):
    model = small_model(tie_embeddings=False)
    # Make every position predict <|endoftext|>: the final norm outputs ones, and only the
    # head's end-of-text row responds to them.
    with torch.no_grad():
        model.final_norm.weight.zero_()
        model.final_norm.bias.fill_(1.0)
        model.out_head.weight.zero_()
        model.out_head.weight[PAD_ID] = 1.0
    records = [WITH_INPUT, WITHOUT_INPUT, {**WITHOUT_INPUT, "instruction": "Name a color."}]
    results = generate_responses(model, tokenizer, records, max_new_tokens=5, batch_size=2)
    assert [r["model_response"] for r in results] == ["", "", ""]
    assert [r["ended"] for r in results] == [True, True, True], "each answer ended with <|endoftext|>"
    assert [{k: v for k, v in r.items() if k not in ("model_response", "ended")} for r in results] == records

    # A random model's answers, batched, are its greedy continuations of each prompt alone.
    model = small_model()
    answered = generate_responses(model, tokenizer, records, max_new_tokens=3, batch_size=2)
    for entry, result in zip(records, answered):
        assert result["model_response"] == generate_text(model, tokenizer, format_prompt(entry), 3).strip()
        assert result["ended"] is False, "a random model does not say <|endoftext|> within 3 tokens"

    path = save_responses(answered, tmp_path / "out" / "responses.json")
    assert json.loads(path.read_text(encoding="utf-8")) == answered
    assert [p.name for p in path.parent.iterdir()] == ["responses.json"], "no temporary file left behind"


def test_lcs_and_rouge_l_on_hand_examples():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example (CLRS 15.4)
    assert lcs_length([], [1, 2]) == 0
    # LCS "the cat on the mat" = 5 of 6 words each way: P = R = F1 = 5/6.
    assert rouge_l_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-12)
    # LCS 2: P = 2/4, R = 2/2, F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    assert rouge_l_f1("a b c d", "a c") == pytest.approx(2 / 3, abs=1e-12)
    assert rouge_l_f1("The Cat.", "the cat") == 1.0, "lowercased, punctuation ignored"
    assert rouge_l_f1("", "the cat") == 0.0
    assert rouge_l_f1("dog", "the cat") == 0.0
    records = [{"output": "the cat", "model_response": "the cat"}, {"output": "a c", "model_response": "a b c d"}]
    assert mean_rouge_l(records) == pytest.approx((1 + 2 / 3) / 2, abs=1e-12)
    with pytest.raises(TypeError):
        rouge_l_f1(None, "x")


def test_judge_sends_a_well_formed_chat_request():
    sent = []

    def fake_request(url, payload):
        sent.append((url, payload))
        return ["Score: 87", "I cannot tell"][len(sent) - 1]

    records = [{**WITH_INPUT, "model_response": "The car is like a rocket."}, {**WITHOUT_INPUT, "model_response": "Rome."}]
    scores = judge_responses(records, url="http://judge.test/api/chat", model="some-model", request_fn=fake_request)
    assert scores == [87, None]
    url, payload = sent[0]
    assert url == "http://judge.test/api/chat"
    assert json.loads(json.dumps(payload)) == payload, "the payload must be plain JSON"
    assert payload["model"] == "some-model" and payload["stream"] is False
    assert payload["messages"] == [{"role": "user", "content": judge_prompt(records[0])}]
    content = payload["messages"][0]["content"]
    for part in (format_prompt(WITH_INPUT), WITH_INPUT["output"], "The car is like a rocket.", "0 to 100"):
        assert part in content


# --- Command line --------------------------------------------------------------------


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "llmcourse.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def cli_config(tmp_path) -> Path:
    """A one-layer model for the end-to-end runs (smaller than the CLI's default "tiny")."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SMALL.to_dict(), "emb_dim": 32, "n_layers": 1}))
    return path


@pytest.mark.slow
def test_cli_finetune_classifier_end_to_end(tmp_path, tokenizer, cli_config):
    result = run_cli("finetune-classifier", "--config", cli_config, "--out", tmp_path / "clf", "--epochs", 1,
                     "--max-steps", 2, "--batch-size", 16,
                     "--max-train-examples", 32, "--max-length", 24, "--trainable-blocks", 1,
                     "--lr", 1e-3, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "epoch 1 (step 2)" in result.stdout
    assert "accuracy: train" in result.stdout and "test" in result.stdout
    model, info = load_classifier(tmp_path / "clf", device="cpu")
    assert info["labels"] == ["ham", "spam"] and info["max_length"] == 24
    assert classify(model, tokenizer, "WINNER! Claim your free prize now") in ("ham", "spam")


@pytest.mark.slow
def test_cli_finetune_instruct_end_to_end(tmp_path, cli_config):
    result = run_cli("finetune-instruct", "--config", cli_config, "--out", tmp_path / "inst", "--epochs", 1, "--max-steps", 2,
                     "--max-train-examples", 8, "--max-test-examples", 2, "--max-new-tokens", 3,
                     "--batch-size", 4, "--lora-rank", 2, "--mask-prompt", "--lr", 1e-3, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for expected in ("LoRA: training", "epoch 1 (step 2)", "perplexity", "ROUGE-L F1"):
        assert expected in result.stdout, f"{expected!r} missing from:\n{result.stdout}"
    responses = json.loads((tmp_path / "inst" / "test-responses.json").read_text())
    assert len(responses) == 2 and all(isinstance(r["model_response"], str) for r in responses)
    model = load_gpt(tmp_path / "inst", device="cpu")  # merged back to a plain GPT
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_cli_rejects_checkpoint_with_config(tmp_path):
    result = run_cli("finetune-instruct", "--out", tmp_path, "--checkpoint", tmp_path, "--config", "tiny")
    assert result.returncode == 2
    assert "either --checkpoint" in result.stderr
