"""Learn byte-level BPE merges from a corpus: ``python -m bpe.train``.

    python -m bpe.train --input FILE_OR_DIR --vocab-size N --out DIR

writes ``DIR/vocab.json`` and ``DIR/merges.txt``, which ``GPT2Tokenizer.from_files`` reads.

The algorithm (Sennrich et al. 2016, on bytes as in GPT-2):

1. Pre-tokenize the corpus with GPT-2's regex and count each distinct piece ("word").
   Merges never cross piece boundaries, so from here on only the distinct words and
   their counts matter. Each word starts as its sequence of bytes (ids 0..255).
2. Count every pair of neighbouring symbols, weighted by the word's count (overlapping
   pairs count: "aaa" holds ("a", "a") twice).
3. Repeatedly take the most frequent pair, make it a new token (the next id), and
   replace it in every word that holds it, left to right.

Step 3 is incremental: ``where[pair]`` lists the words holding a pair, so a merge touches
only those words, and only the counts of pairs in them change. The most frequent pair
comes from a heap of (-count, pair) entries; a count change pushes a fresh entry, and
popped entries whose count is out of date are skipped.

Ties: among pairs with the same count, the one whose (left bytes, right bytes) is
smallest in byte order wins, e.g. (b" ", b"t") before (b"e", b" "). Results therefore do
not depend on dict order, file order or the number of processes.

Ids: 0..255 are the bytes themselves, then one id per merge in order, then
``<|endoftext|>`` as the last id; ``--vocab-size`` counts all of them (GPT-2: 256 +
50,000 merges + 1 = 50,257), so it must be at least 257. Text equal to ``<|endoftext|>``
in the corpus separates documents and is not learned from.
"""

import argparse
import heapq
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from .corpus import read_text
from .errors import CorpusError
from .files import write_bpe_files
from .gpt2 import GPT2Tokenizer
from .pretokenize import pretokenize, split_at_safe_cuts
from .special import ENDOFTEXT

MIN_VOCAB_SIZE = 256 + 1  # every byte, plus <|endoftext|>

Pair = tuple[int, int]


def count_words(texts: list[str], show_progress: bool = False) -> Counter[bytes]:
    """How often each pre-token occurs, as UTF-8 bytes. ``<|endoftext|>`` separates text."""
    counts: Counter[str] = Counter()
    with tqdm(total=sum(map(len, texts)), unit="char", unit_scale=True, desc="counting pieces",
              disable=not show_progress) as bar:
        for text in texts:
            for document in text.split(ENDOFTEXT):
                for chunk in split_at_safe_cuts(document, 1 << 20):
                    counts.update(pretokenize(chunk))
                    bar.update(len(chunk))
            bar.update(text.count(ENDOFTEXT) * len(ENDOFTEXT))
    words: Counter[bytes] = Counter()
    for piece, count in counts.items():
        words[piece.encode("utf-8", errors="replace")] += count  # a lone surrogate encodes as "?"
    return words


def learn_merges(word_counts: dict[bytes, int], num_merges: int,
                 show_progress: bool = True) -> list[tuple[bytes, bytes]]:
    """Up to ``num_merges`` merges, most frequent first (fewer if no pairs are left)."""
    token_bytes = [bytes([b]) for b in range(256)]  # id -> bytes
    id_of = {t: i for i, t in enumerate(token_bytes)}
    words = [list(w) for w in word_counts if len(w) > 1]
    counts = [word_counts[bytes(w)] for w in words]

    pair_counts: Counter[Pair] = Counter()
    where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> words that held it (maybe no longer)
    for w, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[w]
            where[pair].add(w)

    heap = [(-n, token_bytes[a], token_bytes[b], a, b) for (a, b), n in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[bytes, bytes]] = []
    bar = tqdm(total=num_merges, unit="merge", desc="learning merges", disable=not show_progress)
    while len(merges) < num_merges and heap:
        neg_count, left, right, a, b = heapq.heappop(heap)
        if pair_counts.get((a, b)) != -neg_count:
            continue  # out of date: the pair's count changed since this entry was pushed
        merged = left + right
        new = id_of.setdefault(merged, len(token_bytes))  # (the same bytes made twice keep one id)
        if new == len(token_bytes):
            token_bytes.append(merged)
        merges.append((left, right))
        bar.update()

        delta: Counter[Pair] = Counter()
        for w in where.pop((a, b)):
            before = words[w]
            after = _merge_word(before, a, b, new)
            if len(after) == len(before):
                continue  # this word no longer holds the pair
            for pair in zip(before, before[1:]):
                delta[pair] -= counts[w]
            for pair in zip(after, after[1:]):
                delta[pair] += counts[w]
                where[pair].add(w)
            words[w] = after
        for pair, change in delta.items():
            if change:
                n = pair_counts[pair] = pair_counts[pair] + change
                if n > 0:
                    heapq.heappush(heap, (-n, token_bytes[pair[0]], token_bytes[pair[1]], *pair))
                else:
                    del pair_counts[pair]
    bar.close()
    return merges


def _merge_word(symbols: list[int], a: int, b: int, new: int) -> list[int]:
    """``symbols`` with every (a, b), scanned left to right without overlaps, made ``new``."""
    out = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train(texts: list[str], vocab_size: int, out_dir: str | Path, show_progress: bool = True) -> GPT2Tokenizer:
    """Learn a vocabulary of ``vocab_size`` ids (fewer if the corpus runs out of pairs)
    from ``texts``, write ``vocab.json`` and ``merges.txt`` into ``out_dir``, and return
    the tokenizer loaded back from them."""
    check_vocab_size(vocab_size)
    merges = learn_merges(count_words(texts, show_progress), vocab_size - MIN_VOCAB_SIZE, show_progress)
    tokens = [bytes([b]) for b in range(256)]
    tokens += dict.fromkeys(left + right for left, right in merges)  # in order, without repeats
    return GPT2Tokenizer.from_files(*write_bpe_files(out_dir, tokens, merges, {ENDOFTEXT: len(tokens)}))


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + <|endoftext|>), "
                         f"got {vocab_size}")


def read_corpus(path: str | Path) -> list[str]:
    """The text of a file, or of every file under a directory (recursively, sorted, hidden
    ones skipped). Bytes that are not UTF-8 become U+FFFD, with a warning on stderr."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise CorpusError(f"--input directory '{path}' holds no files; "
                              "give a text file or a directory of text files")
    elif path.exists():
        files = [path]
    else:
        raise CorpusError(f"--input '{path}' does not exist; give a text file or a directory of text files")
    texts = [read_text(p) for p in files]
    if not any(texts):
        raise CorpusError(f"corpus '{path}' is empty; give a text file or a directory of text files "
                          "with some text in it")
    return texts


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, instead of usage + message
        print(f"error: {message} (see python -m bpe.train --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m bpe.train", description="Learn byte-level BPE merges (GPT-2 style) from a corpus.")
    parser.add_argument("--input", required=True,
                        help="a UTF-8 text file, or a directory of them (each file a document)")
    parser.add_argument("--vocab-size", type=int, required=True,
                        help=f"ids in all, including <|endoftext|> (at least {MIN_VOCAB_SIZE})")
    parser.add_argument("--out", required=True, help="directory to write vocab.json and merges.txt into")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        check_vocab_size(args.vocab_size)
        texts = read_corpus(args.input)
    except ValueError as e:  # CorpusError, or a bad --vocab-size
        parser.error(str(e))
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)  # fail before the work, not after
        tokenizer = train(texts, args.vocab_size, args.out, show_progress=not args.quiet)
    except OSError as e:
        parser.error(f"cannot write to --out '{args.out}': {e.strerror or e}")
    if tokenizer.vocab_size < args.vocab_size:
        print(f"warning: the corpus ran out of pairs to merge; the vocabulary has {tokenizer.vocab_size} ids, "
              f"not {args.vocab_size}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'vocab.json'} and merges.txt: {tokenizer.vocab_size} ids, "
          f"{tokenizer.vocab_size - MIN_VOCAB_SIZE} merges, in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
