"""Chapter 2 tokenizer: the from-scratch BPE against hand-worked examples and
against tiktoken's GPT-2 encoding (reference ids come from GPT-2 itself)."""
import json
import random
from collections import Counter

import pytest

from llmcourse.files import read_text
from llmcourse.tokenizer import (
    _SPLIT_RE,
    BPETokenizer,
    gpt2_tokenizer,
    merge_pair,
    most_frequent_pair,
    pair_counts,
)

# GPT-2's ids for these strings (as in "Build a Large Language Model (From Scratch)", ch. 2).
HELLO_IDS = [15496, 11, 995, 13]
TEA_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
TEA_IDS = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680, 27271, 13]

SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see, they've gone.",
    "korean": "대규모 언어 모델(LLM)은 다음 단어를 예측하도록 학습됩니다. 한국어 토큰화!",
    "emoji": "I ❤️ 🦀 and 🐍! 👩‍👩‍👧‍👦 🇰🇷 ✨✨✨",
    "code": 'def f(x):\n\tif x >= 10:\n\t\treturn {"a": [1, 2]}  # comment\n    return x**2 != 0x1F\n',
    "whitespace": "a  b   c    d\n\n\nend\t\t\ttabs \t \n mixed   \r\n\r\n     ",
    "numbers": "3.14159 1234567890 -42 1e-9 2024-06-01 100,000 ١٢٣ ½ Ⅻ",
    "special_as_text": "before<|endoftext|>after <|endoftext|>",
    "mixed": "Résumé naïve café — “quotes” ‘single’ … Ωmega ß ﬁ 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "empty": "",
}


def assert_same_ids(got, expected, label):
    if got != expected:
        i = next((k for k, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
        raise AssertionError(
            f"{label}: ids differ first at index {i} (lengths {len(got)} vs {len(expected)}): "
            f"got {got[i:i + 5]}, expected {expected[i:i + 5]}"
        )


def random_unicode(rng: random.Random, length: int) -> str:
    """Random text from a mix of scripts, emoji, combining marks, odd whitespace
    and any code point except surrogates (which a str cannot encode to UTF-8)."""
    whitespace = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2003\u2028\u3000\u200b\ufeff"

    def char():
        k = rng.random()
        if k < 0.3:
            return chr(rng.randrange(32, 127))
        if k < 0.45:
            return rng.choice(whitespace)
        if k < 0.55:
            return chr(rng.randrange(0xAC00, 0xD7A4))  # Hangul syllables
        if k < 0.65:
            return chr(rng.randrange(0x1F300, 0x1FB00))  # emoji and symbols
        if k < 0.7:
            return chr(rng.randrange(0x300, 0x370))  # combining marks
        while True:
            c = rng.randrange(0x110000)
            if not 0xD800 <= c < 0xE000:
                return chr(c)

    return "".join(char() for _ in range(length))


@pytest.fixture(scope="module")
def gpt2_bpe():
    return BPETokenizer.from_gpt2()


# --- gpt2_tokenizer (tiktoken) ------------------------------------------------------


def test_gpt2_tokenizer_known_ids():
    enc = gpt2_tokenizer()
    assert enc.name == "gpt2"
    assert enc.n_vocab == 50257
    assert enc.encode("Hello, world.") == HELLO_IDS
    assert enc.encode(TEA_TEXT, allowed_special={"<|endoftext|>"}) == TEA_IDS
    assert enc.decode(TEA_IDS) == TEA_TEXT


def test_gpt2_tokenizer_is_cached():
    assert gpt2_tokenizer() is gpt2_tokenizer()


# --- one BPE step -------------------------------------------------------------------


def test_pair_counts_hand_example():
    assert pair_counts([1, 2, 1, 2, 3]) == {(1, 2): 2, (2, 1): 1, (2, 3): 1}
    assert pair_counts([7, 7, 7]) == {(7, 7): 2}
    assert pair_counts([5]) == {}
    assert pair_counts([]) == {}


def test_most_frequent_pair_breaks_ties_by_smallest_pair():
    assert most_frequent_pair({(1, 2): 1, (3, 4): 5, (0, 0): 4}) == (3, 4)
    assert most_frequent_pair({(5, 1): 3, (2, 9): 3}) == (2, 9)
    assert most_frequent_pair({(2, 9): 3, (2, 1): 3}) == (2, 1)
    with pytest.raises(ValueError, match="no pairs"):
        most_frequent_pair({})


def test_merge_pair_hand_example():
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 99) == [99, 3, 99]
    assert merge_pair([7, 7, 7], (7, 7), 9) == [9, 7]
    assert merge_pair([7, 7, 7, 7], (7, 7), 9) == [9, 9]
    assert merge_pair([1, 3, 2], (1, 2), 99) == [1, 3, 2]
    ids = [1, 2]
    assert merge_pair(ids, (1, 2), 5) == [5] and ids == [1, 2]  # pure: input untouched


# --- training -----------------------------------------------------------------------


def test_train_hand_example():
    # "aaabdaaabac", worked by hand (a=97, b=98, c=99, d=100):
    #   aa occurs 4 times                          -> (97, 97) = 256 "aa"
    #   [aa a b d aa a b a c]: (256,97) and (97,98) both 2; smaller pair wins -> (97, 98) = 257 "ab"
    #   [aa ab d aa ab a c]: (256, 257) occurs twice -> 258 "aaab"
    #   [aaab d aaab a c]: all pairs once; smallest is (97, 99) -> 259 "ac"
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=260, special_tokens=())
    assert tok.merges == [(97, 97), (97, 98), (256, 257), (97, 99)]
    assert [tok.token_bytes(i) for i in range(256, 260)] == [b"aa", b"ab", b"aaab", b"ac"]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 259]
    assert tok.vocab_size == 260


def test_train_weights_repeated_chunks_and_puts_specials_last():
    # Chunks: "xy" once, " xy" three times, so " x" (32, 120) is counted 3 times
    # and "xy" (120, 121) 4 times: "xy" is merged first.
    tok = BPETokenizer.train("xy xy xy xy", vocab_size=259)
    assert tok.merges == [(120, 121), (32, 256)]
    assert tok.special_tokens == {"<|endoftext|>": 258}
    assert tok.encode("xy xy<|endoftext|>", allowed_special="all") == [256, 257, 258]


def test_train_never_merges_across_chunks():
    # "a b" splits into "a" and " b": the only pair inside a chunk is (" ", "b").
    tok = BPETokenizer.train("a b", vocab_size=257, special_tokens=())
    assert tok.merges == [(32, 98)]


def test_train_on_the_verdict_round_trips_and_compresses():
    text = read_text("the-verdict.txt")
    tok = BPETokenizer.train(text, vocab_size=400)
    assert tok.vocab_size == 400
    assert len(tok.merges) == 400 - 256 - 1
    token_strings = [tok.token_bytes(i) for i in range(399)]
    assert len(set(token_strings)) == 399, "two ids share one byte string"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    n_bytes = len(text.encode("utf-8"))
    assert len(ids) < 0.6 * n_bytes, f"{len(ids)} tokens for {n_bytes} bytes"
    assert max(ids) < 399


def naive_bpe_merges(text: str, n_merges: int) -> list[tuple[int, int]]:
    """The lesson's loop, written plainly: count every pair in every chunk, merge the most
    frequent one (skipping pairs whose bytes are already a token), repeat."""
    chunks = Counter(_SPLIT_RE.findall(text))
    words = {tuple(chunk.encode("utf-8")): n for chunk, n in chunks.items()}
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(merges) < n_merges:
        counts = Counter()
        for word, n in words.items():
            for pair, c in pair_counts(word).items():
                counts[pair] += c * n
        pair = most_frequent_pair({p: c for p, c in counts.items() if vocab[p[0]] + vocab[p[1]] not in vocab})
        words = {tuple(merge_pair(w, pair, len(vocab))): n for w, n in words.items()}
        merges.append(pair)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
    return merges


@pytest.mark.parametrize("text, n_merges", [
    ("aaabdaaabac " * 3 + "aaaa bbbb aaaa", 13),  # overlapping runs and ties, up to the last possible merge
    ("the-verdict", 150),
    ("héllo wörld, 안녕하세요 세계! " * 5 + "1234 12 1234", 30),  # multi-byte characters, digits
])
def test_train_learns_the_same_merges_as_the_plain_loop(text, n_merges):
    """Training recounts only the chunks a merge touched; the merges must be exactly the
    plain loop's, order and ties included."""
    if text == "the-verdict":
        text = read_text("the-verdict.txt")[:6000]
    tok = BPETokenizer.train(text, vocab_size=256 + n_merges, special_tokens=())
    assert tok.merges == naive_bpe_merges(text, n_merges)


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 257 \(256 byte tokens \+ 1 special tokens\), got 256"):
        BPETokenizer.train("hello", vocab_size=256)
    with pytest.raises(ValueError, match="at most 260"):
        BPETokenizer.train("abcde", vocab_size=300, special_tokens=())
    with pytest.raises(ValueError, match="vocab_size must be an int"):
        BPETokenizer.train("hello", vocab_size="300")
    with pytest.raises(ValueError, match="special_tokens must be distinct"):
        BPETokenizer.train("hello", vocab_size=300, special_tokens=("<|a|>", "<|a|>"))
    with pytest.raises(TypeError, match="str"):
        BPETokenizer.train(b"bytes", vocab_size=300)


# --- GPT-2's merges in the from-scratch tokenizer -------------------------------------


def test_from_gpt2_known_ids(gpt2_bpe):
    assert gpt2_bpe.vocab_size == 50257
    assert gpt2_bpe.encode("Hello, world.") == HELLO_IDS
    assert gpt2_bpe.encode(TEA_TEXT, allowed_special="all") == TEA_IDS
    assert gpt2_bpe.encode(TEA_TEXT, allowed_special={"<|endoftext|>"}) == TEA_IDS
    assert gpt2_bpe.decode(TEA_IDS) == TEA_TEXT
    assert gpt2_bpe.token_bytes(15496) == b"Hello"
    assert gpt2_bpe.token_bytes(50256) == b"<|endoftext|>"


def test_from_gpt2_merges_match_gpt2_vocab_bpe(gpt2_bpe):
    # GPT-2's vocab.bpe begins "Ġ t", "Ġ a", "h e", "i n": ids 220 (" "), 83 ("t"), 64 ("a"), ...
    merges = gpt2_bpe.merges
    assert len(merges) == 50000
    assert merges[:4] == [(220, 83), (220, 64), (71, 68), (72, 77)]
    for k in (0, 1000, 49999):
        a, b = merges[k]
        assert gpt2_bpe.token_bytes(a) + gpt2_bpe.token_bytes(b) == gpt2_bpe.token_bytes(256 + k)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_from_gpt2_matches_tiktoken_on_samples(gpt2_bpe, name):
    text = SAMPLES[name]
    assert_same_ids(gpt2_bpe.encode(text), gpt2_tokenizer().encode_ordinary(text), name)
    expected = gpt2_tokenizer().encode(text, allowed_special="all")
    assert_same_ids(gpt2_bpe.encode(text, allowed_special="all"), expected, name + " (specials allowed)")
    assert gpt2_bpe.decode(gpt2_bpe.encode(text)) == text


def test_from_gpt2_matches_tiktoken_on_the_verdict(gpt2_bpe):
    text = read_text("the-verdict.txt")
    ids = gpt2_bpe.encode(text)
    assert len(ids) == 5145  # the count the source book reports for this story
    assert_same_ids(ids, gpt2_tokenizer().encode_ordinary(text), "the-verdict.txt")
    assert gpt2_bpe.decode(ids) == text


def test_from_gpt2_matches_tiktoken_on_random_unicode(gpt2_bpe):
    rng = random.Random(1234)
    for k in range(500):
        text = random_unicode(rng, rng.randrange(0, 80))
        assert_same_ids(gpt2_bpe.encode(text), gpt2_tokenizer().encode_ordinary(text), f"random string {k}: {text!r}")
        assert gpt2_bpe.decode(gpt2_bpe.encode(text)) == text, f"round trip of random string {k}: {text!r}"


def test_decode_replaces_split_characters(gpt2_bpe):
    ids = gpt2_bpe.encode("한")  # one Hangul syllable, 3 bytes, several tokens
    assert gpt2_bpe.decode_bytes(ids) == "한".encode("utf-8")
    assert len(ids) > 1
    assert gpt2_bpe.decode(ids[:1]) == "\ufffd"


# --- saving -------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    text = read_text("the-verdict.txt")
    tok = BPETokenizer.train(text[:5000], vocab_size=300)
    path = tmp_path / "tok.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == "llmcourse-bpe"
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"], "temporary file left behind"
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tok.merges
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_save_load_keeps_gpt2_byte_order(tmp_path, gpt2_bpe):
    # GPT-2's single-byte ids are not the byte values ("!" is 0), so the saved file records them.
    path = tmp_path / "gpt2.json"
    gpt2_bpe.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.encode(TEA_TEXT, allowed_special="all") == TEA_IDS


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a tokenizer saved by BPETokenizer.save"):
        BPETokenizer.load(path)


# --- bad input ----------------------------------------------------------------------


def test_encode_rejects_non_str(gpt2_bpe):
    with pytest.raises(TypeError, match="expected text as a str, got bytes"):
        gpt2_bpe.encode(b"Hello")
    with pytest.raises(TypeError, match="expected text as a str, got list"):
        gpt2_bpe.encode(["Hello"])


def test_encode_rejects_unknown_specials(gpt2_bpe):
    with pytest.raises(ValueError, match=r"unknown special tokens \['<\|im_start\|>'\]"):
        gpt2_bpe.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match='"all", "none" or a set'):
        gpt2_bpe.encode("x", allowed_special="some")


def test_decode_rejects_out_of_range_ids(gpt2_bpe):
    with pytest.raises(ValueError, match="token id 50257 is out of range for vocab_size 50257"):
        gpt2_bpe.decode([15496, 50257])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        gpt2_bpe.decode([-1])
    with pytest.raises(TypeError, match="token ids must be ints"):
        gpt2_bpe.decode([1.5])
