"""One-off timings for chapter 2's tokenizers and next-token windows (not a test).

Run: LLMCOURSE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_tokenizer.py
"""
import time

from llmcourse.data import NextTokenDataset
from llmcourse.files import read_text
from llmcourse.tokenizer import BPETokenizer, gpt2_tokenizer


def timed(label, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label:<48} {time.perf_counter() - start:8.3f} s")
    return result


def main():
    verdict = read_text("the-verdict.txt")
    shakespeare = read_text("tinyshakespeare.txt")
    bpe = timed("BPETokenizer.from_gpt2()", BPETokenizer.from_gpt2)
    timed("from_gpt2 encode the-verdict (cold cache)", lambda: bpe.encode(verdict))
    timed("from_gpt2 encode the-verdict (warm cache)", lambda: bpe.encode(verdict))
    timed("from_gpt2 encode tinyshakespeare", lambda: bpe.encode(shakespeare))
    enc = timed("gpt2_tokenizer() (tiktoken)", gpt2_tokenizer)
    timed("tiktoken encode the-verdict", lambda: enc.encode_ordinary(verdict))
    ids = timed("tiktoken encode tinyshakespeare", lambda: enc.encode_ordinary(shakespeare))
    timed("from_gpt2 merges (recovered from ranks)", lambda: bpe.merges)
    timed("BPETokenizer.train(the-verdict, 512)", lambda: BPETokenizer.train(verdict, 512))
    ds = timed(f"NextTokenDataset({len(ids):,} tokens, 256, 128)", lambda: NextTokenDataset(ids, 256, 128))
    print(f"  -> {len(ds)} windows")


if __name__ == "__main__":
    main()
