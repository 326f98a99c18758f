"""The course's data files (llmcourse.files: verified fetching, never over the network
here) and next-token (input, target) windows (llmcourse.data, chapters 1-2), checked
against hand-written tensors."""
import hashlib
import io
import urllib.error
import urllib.request
import zipfile

import pytest
import torch

from llmcourse.data import NextTokenDataset, create_dataloader
from llmcourse.files import (
    DATA_FILES,
    ChecksumError,
    atomic_write_bytes,
    cache_dir,
    fetch,
    read_text,
    sha256_of,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache of its own, never ~/.cache."""
    monkeypatch.setenv("LLMCOURSE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


def serve(monkeypatch, payload: bytes) -> list:
    """Make urlopen answer every request with ``payload``; returns the list of requested URLs."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


# --- registry and local files ---------------------------------------------------------


def test_registry_matches_the_data_readme(data_dir):
    # Hashes of the byte-exact copies in shared/data, as its README lists them.
    assert DATA_FILES["the-verdict.txt"].sha256 == "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"
    assert DATA_FILES["gpt2.tiktoken"].sha256 == "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
    assert DATA_FILES["SMSSpamCollection"].zip_member == "SMSSpamCollection"
    assert DATA_FILES["SMSSpamCollection"].url.endswith(".zip")
    for name, entry in DATA_FILES.items():
        assert entry.url.startswith("https://"), name
        assert entry.license, name
        actual = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        assert actual == entry.sha256, f"{name}: registry {entry.sha256}, file {actual}"


def test_fetch_from_data_dir_verifies(data_dir, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for name in DATA_FILES:
        assert fetch(name) == data_dir / name
    text = read_text("the-verdict.txt")
    assert text.startswith("I HAD always thought Jack Gisburn")
    assert len(text) == 20479


def test_fetch_rejects_corrupted_copy(tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    (local / "the-verdict.txt").write_text("not the story", encoding="utf-8")
    monkeypatch.setenv("LLMCOURSE_DATA_DIR", str(local))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    actual = hashlib.sha256(b"not the story").hexdigest()
    with pytest.raises(ChecksumError) as err:
        fetch("the-verdict.txt")
    message = str(err.value)
    assert "the-verdict.txt" in message
    assert DATA_FILES["the-verdict.txt"].sha256 in message
    assert actual in message


def test_sha256_sees_a_changed_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"one")
    assert sha256_of(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"three")
    assert sha256_of(path) == hashlib.sha256(b"three").hexdigest()


def test_unknown_name_lists_known_files():
    with pytest.raises(ValueError, match="unknown data file 'verdict.txt'.*the-verdict.txt"):
        fetch("verdict.txt")


# --- cache and download -----------------------------------------------------------------


def test_offline_error_says_where_it_looked(tmp_path, monkeypatch, private_cache):
    monkeypatch.setenv("LLMCOURSE_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(FileNotFoundError) as err:
        fetch("the-verdict.txt")
    message = str(err.value)
    for part in ("the-verdict.txt", str(tmp_path / "empty"), str(private_cache), "LLMCOURSE_DATA_DIR",
                 DATA_FILES["the-verdict.txt"].url):
        assert part in message, f"{part!r} missing from: {message}"
    assert not private_cache.exists() or list(private_cache.iterdir()) == []


def test_download_is_verified_and_cached(data_dir, monkeypatch, private_cache):
    payload = (data_dir / "the-verdict.txt").read_bytes()
    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    requested = serve(monkeypatch, payload)
    path = fetch("the-verdict.txt")
    assert path == private_cache / "the-verdict.txt" == cache_dir() / "the-verdict.txt"
    assert path.read_bytes() == payload
    assert requested == [DATA_FILES["the-verdict.txt"].url]
    assert [p.name for p in private_cache.iterdir()] == ["the-verdict.txt"]
    # The second fetch is served from the cache.
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert fetch("the-verdict.txt") == path


def test_damaged_cache_copy_is_downloaded_again(data_dir, monkeypatch, private_cache):
    payload = (data_dir / "the-verdict.txt").read_bytes()
    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    private_cache.mkdir()
    (private_cache / "the-verdict.txt").write_bytes(payload[:100])
    requested = serve(monkeypatch, payload)
    assert fetch("the-verdict.txt").read_bytes() == payload
    assert len(requested) == 1


def test_wrong_download_leaves_nothing(monkeypatch, private_cache):
    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    serve(monkeypatch, b"an error page")
    with pytest.raises(ChecksumError, match="the-verdict.txt"):
        fetch("the-verdict.txt")
    assert list(private_cache.iterdir()) == []


def test_interrupted_download_leaves_nothing(monkeypatch, private_cache):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset (test)")
            return super().read(10)

    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken(b"x" * 100))
    with pytest.raises(FileNotFoundError, match="connection reset"):
        fetch("the-verdict.txt")
    assert list(private_cache.iterdir()) == []


def make_zip(path, members: dict) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return path.read_bytes()


def test_zip_member_is_extracted_and_verified(tmp_path, data_dir, monkeypatch, private_cache):
    corpus = (data_dir / "SMSSpamCollection").read_bytes()
    payload = make_zip(tmp_path / "sms.zip", {"readme": b"about the corpus", "SMSSpamCollection": corpus})
    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    requested = serve(monkeypatch, payload)
    path = fetch("SMSSpamCollection")
    assert requested == ["https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"]
    assert path.read_bytes() == corpus
    assert [p.name for p in private_cache.iterdir()] == ["SMSSpamCollection"]
    lines = read_text("SMSSpamCollection").splitlines()
    labels = [line.split("\t")[0] for line in lines]
    assert (len(lines), labels.count("ham"), labels.count("spam")) == (5574, 4827, 747)


def test_zip_with_wrong_member_leaves_nothing(tmp_path, monkeypatch, private_cache):
    payload = make_zip(tmp_path / "sms.zip", {"SMSSpamCollection": b"ham\thello\n"})
    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    serve(monkeypatch, payload)
    with pytest.raises(ChecksumError, match="SMSSpamCollection"):
        fetch("SMSSpamCollection")
    assert list(private_cache.iterdir()) == []


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "new" / "f.bin"
    atomic_write_bytes(path, b"one")  # makes the folder
    assert path.read_bytes() == b"one"

    def fail(*args):
        raise OSError("disk full (test)")

    monkeypatch.setattr("os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"one"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"], "no temporary file left behind"


# --- next-token windows -----------------------------------------------------------------


def test_next_token_dataset_hand_example():
    ds = NextTokenDataset(list(range(10)), max_length=4, stride=2)
    expected_inputs = torch.tensor([[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]])
    expected_targets = torch.tensor([[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8]])
    assert len(ds) == 3
    for k in range(3):
        x, y = ds[k]
        assert x.dtype == y.dtype == torch.long
        assert torch.equal(x, expected_inputs[k]), f"input {k}: {x.tolist()}"
        assert torch.equal(y, expected_targets[k]), f"target {k}: {y.tolist()}"


def test_next_token_dataset_edge_cases():
    ds = NextTokenDataset(torch.arange(5), max_length=4, stride=1)  # exactly one window
    assert len(ds) == 1
    assert ds[0][1].tolist() == [1, 2, 3, 4]
    ds = NextTokenDataset([5, 6, 7, 8, 9], max_length=1, stride=3)
    assert [(x.tolist(), y.tolist()) for x, y in ds] == [([5], [6]), ([8], [9])]


def test_next_token_dataset_errors():
    with pytest.raises(ValueError, match="got 4 tokens.*needs 5"):
        NextTokenDataset([1, 2, 3, 4], max_length=4, stride=1)
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 0"):
        NextTokenDataset([1, 2, 3], max_length=0, stride=1)
    with pytest.raises(ValueError, match="stride must be an int >= 1, got 0"):
        NextTokenDataset([1, 2, 3], max_length=1, stride=0)
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        NextTokenDataset([[1, 2], [3, 4]], max_length=1, stride=1)
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        NextTokenDataset([0.5, 1.5, 2.5], max_length=1, stride=1)


def test_dataloader_on_the_verdict():
    text = read_text("the-verdict.txt")
    loader = create_dataloader(text, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    # GPT-2 ids of "I HAD always thought Jack Gisburn rather a cheap genius" (as in the source book, ch. 2).
    assert inputs.tolist()[:2] == [[40, 367, 2885, 1464], [1807, 3619, 402, 271]]
    assert targets.tolist()[0] == [367, 2885, 1464, 1807]
    assert inputs.shape == targets.shape == (8, 4)

    loader = create_dataloader(text, batch_size=4, max_length=256, stride=128, seed=0)
    n_windows = (5145 - 1 - 256) // 128 + 1  # 5,145 GPT-2 tokens
    assert len(loader.dataset) == n_windows
    assert len(loader) == n_windows // 4
    for inputs, targets in loader:
        assert inputs.shape == targets.shape == (4, 256)
        assert inputs.dtype == torch.long
        assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_dataloader_seed_is_reproducible():
    ids = list(range(1000))

    def order(seed):
        return [x[:, 0].tolist() for x, _ in create_dataloader(ids, batch_size=4, max_length=8, stride=8, seed=seed)]
    assert order(7) == order(7)
    assert order(7) != order(8)
    # (1000 - 1 - 8) // 8 + 1 = 124 windows, starting at 0, 8, ..., 984: each exactly once per epoch.
    assert sorted(sum(order(7), [])) == list(range(0, 124 * 8, 8))


def test_dataloader_with_ids_and_custom_tokenizer():
    loader = create_dataloader(torch.arange(20), batch_size=2, max_length=3, stride=3, shuffle=False)
    x, y = next(iter(loader))
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert y.tolist() == [[1, 2, 3], [4, 5, 6]]

    class CharTokenizer:
        def encode(self, text, allowed_special="none"):
            return [ord(c) for c in text]

    loader = create_dataloader("abcdefg", tokenizer=CharTokenizer(), batch_size=1, max_length=2, stride=2, shuffle=False)
    assert [x.tolist() for x, _ in loader] == [[[97, 98]], [[99, 100]], [[101, 102]]]


def test_dataloader_errors():
    with pytest.raises(TypeError, match="expected a str or a sequence of token ids, got int"):
        create_dataloader(42)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        create_dataloader(list(range(100)), batch_size=0, max_length=4, stride=4)
    with pytest.raises(ValueError, match="only 2 windows for batch_size=4"):
        create_dataloader(list(range(9)), batch_size=4, max_length=4, stride=4)


def test_download_that_is_not_a_zip_leaves_nothing(monkeypatch, private_cache):
    monkeypatch.delenv("LLMCOURSE_DATA_DIR")
    serve(monkeypatch, b"<html>moved</html>")
    with pytest.raises(ValueError, match="SMSSpamCollection: the download from .* is not a zip archive"):
        fetch("SMSSpamCollection")
    assert list(private_cache.iterdir()) == []
