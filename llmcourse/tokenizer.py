"""Tokenization with byte-level byte-pair encoding, BPE (chapter 2).

Read top to bottom, this module follows the chapter:

1. ``pair_counts``, ``most_frequent_pair`` and ``merge_pair``: one step of BPE
   on a list of token ids (the chapter 2 exercise grades against these).
2. ``BPETokenizer``: a byte-level BPE tokenizer written from scratch. It can
   learn its own merges (``BPETokenizer.train``) or load GPT-2's
   (``BPETokenizer.from_gpt2``), and then encodes exactly as GPT-2 does.
3. ``gpt2_tokenizer``: GPT-2's tokenizer as a fast ``tiktoken.Encoding``, built
   offline from the same ``gpt2.tiktoken`` file, for the rest of the course.

The scheme is tiktoken's: a token id is the *rank* of a byte string. Ids
0..255 are single bytes; every later id is a byte string made by joining two
earlier tokens, and a lower rank means "learned earlier, merge first".
"""
from __future__ import annotations

import base64
import functools
import json
import operator
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import regex
import tiktoken

from .config import check_int
from .files import atomic_write_bytes, fetch

#: GPT-2's pre-tokenizer: contractions, letter runs, number runs, punctuation
#: runs (each optionally with one leading space) and whitespace. BPE merges
#: never cross the boundaries of these chunks.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"  # a model folder's own tokenizer, when it is not GPT-2's
GPT2_ENDOFTEXT_ID = 50256

_SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)

Pair = tuple[int, int]


# --- One BPE step (the chapter 2 exercise) ------------------------------------------


def pair_counts(ids: Sequence[int]) -> Counter[Pair]:
    """Count each adjacent pair of token ids.

    ``pair_counts([1, 2, 1, 2, 3])`` is ``{(1, 2): 2, (2, 1): 1, (2, 3): 1}``;
    overlapping pairs count separately, so ``[7, 7, 7]`` gives ``{(7, 7): 2}``.
    """
    return Counter(zip(ids, ids[1:]))


def most_frequent_pair(counts: dict[Pair, int]) -> Pair:
    """The pair to merge next: the one with the highest count.

    Ties go to the smallest pair, comparing ``(first id, second id)``, so the
    choice never depends on dictionary order: ``{(5, 1): 3, (2, 9): 3}`` gives
    ``(2, 9)``.
    """
    if not counts:
        raise ValueError("most_frequent_pair needs at least one pair, got no pairs")
    return max(counts, key=lambda pair: (counts[pair], -pair[0], -pair[1]))


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``.

    Scans left to right and never reuses an id that was just merged, so
    ``merge_pair([7, 7, 7], (7, 7), 9)`` is ``[9, 7]``. Returns a new list.
    """
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


# --- The tokenizer ------------------------------------------------------------------


def load_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``<base64 token> <rank>`` per line.

    Parsed here rather than with ``tiktoken.load.load_tiktoken_bpe``, which also
    copies the file into a cache directory of its own.
    """
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class BPETokenizer:
    """Byte-level BPE, from scratch.

    Text is split into chunks with GPT-2's pattern; each chunk is turned into
    its UTF-8 bytes, one token per byte, and adjacent tokens are merged, lowest
    rank first, until no adjacent pair forms a known token. Special tokens such
    as ``<|endoftext|>`` get the ids after the ordinary ones.

    Build one with ``BPETokenizer.train(text, vocab_size)``,
    ``BPETokenizer.from_gpt2()`` or ``BPETokenizer.load(path)``.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        merges: list[Pair] | None = None,
    ):
        """``ranks`` maps every ordinary token's bytes to its id (0..n-1);
        ``special_tokens`` maps each special token's text to its id (n and up);
        ``merges`` is the ordered list of merged pairs, when known (a trained
        tokenizer knows it; GPT-2's is recovered from the ranks on first use).
        """
        self._ranks = dict(ranks)
        self.special_tokens = dict(special_tokens or {})
        self._vocab = [b""] * (len(self._ranks) + len(self.special_tokens))
        for token, rank in self._ranks.items():
            self._vocab[rank] = token
        for text, token_id in self.special_tokens.items():
            self._vocab[token_id] = text.encode("utf-8")
        self._merges = merges
        # Text repeats its words, so each distinct chunk is merged only once.
        self._chunk_cache: dict[str, list[int]] = {}

    # -- construction -----------------------------------------------------------------

    @classmethod
    def train(
        cls, text: str, vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,)
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        Each step merges the most frequent adjacent pair (ties: the smallest
        pair, see ``most_frequent_pair``) in every chunk, and the merged pair
        becomes the next id. Counting runs over the *distinct* chunks, each
        weighted by how often it occurs, and after a merge only the chunks that
        contained the pair are counted again, which is what makes training fast.
        A pair whose bytes already form a token is skipped, so that every byte
        string has one id (ids double as ranks of byte strings).
        """
        _check_text(text)
        special_tokens = list(special_tokens)
        if not all(isinstance(s, str) and s for s in special_tokens) or len(set(special_tokens)) < len(special_tokens):
            raise ValueError(f"special_tokens must be distinct non-empty strs, got {special_tokens!r}")
        smallest = 256 + len(special_tokens)
        check_int("vocab_size", vocab_size, smallest,
                  note=f" (256 byte tokens + {len(special_tokens)} special tokens)")
        n_merges = vocab_size - smallest
        chunk_counts = Counter(_SPLIT_RE.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        weights = list(chunk_counts.values())
        vocab = [bytes([b]) for b in range(256)]
        ranks = {token: i for i, token in enumerate(vocab)}
        merges: list[Pair] = []
        counts: Counter[Pair] = Counter()  # weighted count of every pair still eligible
        holders: dict[Pair, set[int]] = defaultdict(set)  # the words a pair may occur in
        skipped: set[Pair] = set()  # pairs whose bytes already form a token

        def count(i: int, sign: int) -> None:
            for pair, c in pair_counts(words[i]).items():
                if pair in skipped:
                    continue
                counts[pair] += sign * c * weights[i]
                if counts[pair] == 0:
                    del counts[pair]
                elif sign > 0:
                    holders[pair].add(i)

        for i in range(len(words)):
            count(i, +1)
        while len(merges) < n_merges:
            if not counts:
                raise ValueError(
                    f"the text has only enough distinct pairs for {len(merges)} merges, "
                    f"so vocab_size can be at most {256 + len(merges) + len(special_tokens)}, "
                    f"got {vocab_size}"
                )
            pair = most_frequent_pair(counts)
            if vocab[pair[0]] + vocab[pair[1]] in ranks:
                skipped.add(pair)
                del counts[pair]
                continue
            new_id = len(vocab)
            for i in holders.pop(pair):
                count(i, -1)
                words[i] = merge_pair(words[i], pair, new_id)
                count(i, +1)
            merges.append(pair)
            vocab.append(vocab[pair[0]] + vocab[pair[1]])
            ranks[vocab[-1]] = new_id
        specials = {s: len(vocab) + i for i, s in enumerate(special_tokens)}
        return cls(ranks, specials, merges)

    @classmethod
    def from_gpt2(cls) -> BPETokenizer:
        """GPT-2's 50,257-token vocabulary, read from ``gpt2.tiktoken``."""
        ranks = load_tiktoken_ranks(fetch("gpt2.tiktoken"))
        return cls(ranks, {ENDOFTEXT: GPT2_ENDOFTEXT_ID})

    @classmethod
    def _from_merges(
        cls, merges: list[Pair], special_tokens: dict[str, int], byte_order: Sequence[int]
    ) -> BPETokenizer:
        """Rebuild the ranks: id ``i < 256`` is byte ``byte_order[i]``, id ``256 + k``
        joins the two tokens of ``merges[k]``."""
        vocab = [bytes([b]) for b in byte_order]
        for a, b in merges:
            vocab.append(vocab[a] + vocab[b])
        ranks = {token: i for i, token in enumerate(vocab)}
        return cls(ranks, special_tokens, [tuple(p) for p in merges])

    # -- the vocabulary ---------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids: ordinary tokens plus special tokens."""
        return len(self._vocab)

    # What the rest of the package uses of a tokenizer, named as tiktoken's ``Encoding``
    # names it, so that GPT-2's tokenizer and this one are interchangeable.
    n_vocab = vocab_size

    @property
    def eot_token(self) -> int:
        """The id of ``<|endoftext|>``: where a document ends and generation stops."""
        if ENDOFTEXT not in self.special_tokens:
            raise ValueError(f"this tokenizer has no {ENDOFTEXT} token; train it with special_tokens=({ENDOFTEXT!r},)")
        return self.special_tokens[ENDOFTEXT]

    @property
    def merges(self) -> list[Pair]:
        """The merged pairs in the order learned: ``merges[k]`` made id ``256 + k``."""
        if self._merges is None:
            self._merges = self._recover_merges()
        return self._merges

    def _recover_merges(self) -> list[Pair]:
        # A tiktoken file stores ranks, not pairs. The pair that made token t is
        # what BPE leaves of t's bytes when only merges ranked below t may run.
        merges = []
        for rank in range(256, len(self._ranks)):
            parts = self._merge_chunk(self._vocab[rank], max_rank=rank)
            merges.append((parts[0], parts[1]))
        return merges

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text, UTF-8 encoded)."""
        return self._vocab[self._check_id(token_id)]

    # -- encoding ---------------------------------------------------------------------

    def _merge_chunk(self, chunk: bytes, max_rank: int | None = None) -> list[int]:
        """BPE on one chunk: merge the lowest-ranked adjacent pair until none is left.

        ``max_rank`` (used only to recover merges) stops before any merge ranked
        at or above it.
        """
        ids = [self._ranks[bytes([b])] for b in chunk]
        stop = len(self._ranks) if max_rank is None else max_rank
        while len(ids) > 1:
            # The rank of a pair is the rank of its joined bytes (inf if not a token);
            # min() returns the leftmost of equal ranks, as tiktoken does.
            pairs = list(zip(ids, ids[1:]))
            ranks = [self._ranks.get(self._vocab[a] + self._vocab[b], stop) for a, b in pairs]
            best = min(range(len(pairs)), key=ranks.__getitem__)
            if ranks[best] >= stop:
                break
            ids = merge_pair(ids, pairs[best], ranks[best])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token text as plain text."""
        _check_text(text)
        ids = []
        for chunk in _SPLIT_RE.findall(text):
            if chunk not in self._chunk_cache:
                self._chunk_cache[chunk] = self._merge_chunk(chunk.encode("utf-8"))
            ids.extend(self._chunk_cache[chunk])
        return ids

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none") -> list[int]:
        """Text -> token ids.

        ``allowed_special`` says which special tokens become their own id when
        their text appears: ``"all"``, ``"none"`` (the default: encoded as plain
        text, like any other string), or a set such as ``{"<|endoftext|>"}``.
        """
        _check_text(text)
        specials = self._allowed_specials(allowed_special)
        if not specials:
            return self.encode_ordinary(text)
        # Longest first, so that one special token that is a prefix of another never wins.
        pattern = "(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
        ids = []
        # With a capturing group, split() alternates: text, special, text, special, ...
        for i, part in enumerate(regex.split(pattern, text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            else:
                ids.extend(self.encode_ordinary(part))
        return ids

    def _allowed_specials(self, allowed_special: str | Iterable[str]) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        if allowed_special == "none":
            return set()
        if isinstance(allowed_special, str):
            raise ValueError(
                f'allowed_special must be "all", "none" or a set of special tokens, got {allowed_special!r}'
            )
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(
                f"unknown special tokens {sorted(unknown)}; this tokenizer has {sorted(self.special_tokens)}"
            )
        return allowed

    # -- decoding ---------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Token ids -> the bytes they stand for."""
        return b"".join(self._vocab[self._check_id(i)] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. A token can end inside a multi-byte
        character, so bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def _check_id(self, token_id: int) -> int:
        """Return ``token_id`` as an int (numpy and 0-d torch ints are accepted)."""
        try:
            token_id = operator.index(token_id)
        except TypeError:
            raise TypeError(f"token ids must be ints, got {token_id!r}") from None
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(
                f"token id {token_id} is out of range for vocab_size {self.vocab_size} "
                f"(valid ids are 0..{self.vocab_size - 1})"
            )
        return token_id

    # -- saving -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (merges, special tokens, byte order), atomically."""
        byte_order = [self._vocab[i][0] for i in range(256)]
        state = {
            "format": "llmcourse-bpe",
            "version": 1,
            "byte_order": byte_order,
            "merges": [list(p) for p in self.merges],
            "special_tokens": self.special_tokens,
        }
        atomic_write_bytes(path, json.dumps(state, ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a tokenizer written by ``save``."""
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or state.get("format") != "llmcourse-bpe":
            raise ValueError(f"{path} is not a tokenizer saved by BPETokenizer.save")
        return cls._from_merges(state["merges"], state["special_tokens"], state["byte_order"])

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, special_tokens={self.special_tokens})"


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")


# --- GPT-2's tokenizer, fast ----------------------------------------------------------


@functools.lru_cache(maxsize=None)
def gpt2_tokenizer() -> tiktoken.Encoding:
    """GPT-2's tokenizer as a ``tiktoken.Encoding``, built offline.

    Same ids as ``tiktoken.get_encoding("gpt2")`` (which would download its
    files) and as ``BPETokenizer.from_gpt2()``, but written in Rust and fast.
    ``gpt2_tokenizer().encode("Hello, world.")`` is ``[15496, 11, 995, 13]``.
    """
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=load_tiktoken_ranks(fetch("gpt2.tiktoken")),
        special_tokens={ENDOFTEXT: GPT2_ENDOFTEXT_ID},
        explicit_n_vocab=GPT2_ENDOFTEXT_ID + 1,
    )


def load_tokenizer(source: str | os.PathLike | None = None) -> BPETokenizer | tiktoken.Encoding:
    """The tokenizer a model reads: GPT-2's (``None``), a course tokenizer saved with
    ``BPETokenizer.save`` (a file), or a model folder's own: its ``tokenizer.json`` when
    it has one (a model trained with a course tokenizer), GPT-2's otherwise.

    Both kinds share what the package uses: ``encode(text, allowed_special)``,
    ``decode(ids)``, ``eot_token`` and ``n_vocab``.
    """
    if source is None:
        return gpt2_tokenizer()
    path = Path(source)
    if path.is_dir():
        return BPETokenizer.load(path / TOKENIZER_FILE) if (path / TOKENIZER_FILE).is_file() else gpt2_tokenizer()
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file or model folder at {path}")
    return BPETokenizer.load(path)
