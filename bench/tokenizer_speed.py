"""Encode throughput of bpe.GPT2Tokenizer beside tiktoken's "gpt2", on the same text.

    python bench/tokenizer_speed.py [--path ../shared/corpus/large.txt] [--mb N]

Four runs, each from a cold start (a fresh tokenizer with an empty cache):
ours in one process (encode_ordinary), ours on all cores (encode_corpus, pool start-up
included), tiktoken on one thread (encode_ordinary) and on all threads
(encode_ordinary_batch over 1 MB chunks). MB/s counts UTF-8 bytes of input. The ids of
all four runs are checked to be identical; the exit code is 1 if they are not. CPU
seconds (this process, its threads and its finished worker processes) are printed beside
wall-clock seconds: on a busy machine they still show the work done.
"""

import argparse
import importlib.util
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from bpe import GPT2Tokenizer
from bpe.pretokenize import split_at_safe_cuts


def load_tiktoken_reference():
    """tests/support/tiktoken_ref.py (tiktoken's gpt2 encoding built offline), loaded from its file."""
    spec = importlib.util.spec_from_file_location("tiktoken_ref", ROOT / "tests" / "tiktoken_ref.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_text(path: Path, mb: float | None) -> str:
    with path.open("rb") as f:
        data = f.read(int(mb * 1e6) if mb else -1)
    return data.decode("utf-8", errors="ignore")  # only a character cut at the end is lost


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(encode, text: str) -> tuple[np.ndarray, float, float]:
    """ids, wall-clock seconds, CPU seconds."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    ids = encode(text)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    return np.asarray(ids, dtype=np.uint32), wall, cpu


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def parallel_speedup(processes: int, n: int = 10_000_000) -> float:
    """The speedup the machine gives right now: ``processes`` equal pure-Python loops in
    as many processes, against one loop in this process (ideal: ``processes``)."""
    start = time.perf_counter()
    _spin(n)
    one = time.perf_counter() - start
    with multiprocessing.Pool(processes) as pool:
        pool.map(_spin, [1] * processes)  # start the workers before timing
        start = time.perf_counter()
        pool.map(_spin, [n] * processes)
        many = time.perf_counter() - start
    return processes * one / many


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=ROOT.parent / "shared" / "corpus" / "large.txt")
    parser.add_argument("--mb", type=float, default=None, help="use only the first N MB (default: the whole file)")
    args = parser.parse_args()
    if not args.path.exists():
        print(f"error: {args.path} does not exist; pass --path to a UTF-8 text file", file=sys.stderr)
        return 2
    text = read_text(args.path, args.mb)
    megabytes = len(text.encode("utf-8")) / 1e6
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.path}: {megabytes:.1f} MB, {len(text):,} characters; {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"parallel capacity now: {cores} processes of a pure-Python loop run {parallel_speedup(cores):.2f}x "
          f"as fast as one (ideal {cores}x; less means other work shares the cores)")

    runs = {
        "bpe, 1 process": lambda t: GPT2Tokenizer.default().encode_ordinary(t),
        f"bpe, encode_corpus ({cores} processes)":
            lambda t: GPT2Tokenizer.default().encode_corpus(t, show_progress=False),
    }
    try:
        gpt2_encoding = load_tiktoken_reference().gpt2_encoding

        reference = gpt2_encoding()
        runs["tiktoken, 1 thread"] = reference.encode_ordinary
        runs[f"tiktoken, encode_ordinary_batch ({cores} threads)"] = lambda t: np.concatenate(
            [np.asarray(ids, dtype=np.uint32) for ids in
             reference.encode_ordinary_batch(list(split_at_safe_cuts(t, 1 << 20)), num_threads=cores)])
    except ImportError:
        print("tiktoken is not installed: measuring this tokenizer only")

    results = {}
    print(f"  {'':<45} {'wall s':>7} {'MB/s':>7} {'CPU s':>7}  tokens")
    for name, encode in runs.items():
        ids, seconds, cpu = timed(encode, text)
        results[name] = (ids, seconds)
        print(f"  {name:<45} {seconds:7.2f} {megabytes / seconds:7.2f} {cpu:7.2f}  {len(ids):,}", flush=True)

    names = list(results)
    if "tiktoken, 1 thread" in results:
        ours, theirs = results[names[0]][1], results["tiktoken, 1 thread"][1]
        print(f"one core: tiktoken is {ours / theirs:.1f}x faster than bpe")
        ours, theirs = results[names[1]][1], results[names[3]][1]
        print(f"all cores: tiktoken is {ours / theirs:.1f}x faster than bpe")
    first = results[names[0]][0]
    same = all(np.array_equal(first, ids) for ids, _ in results.values())
    print("ids identical in all runs:", "yes" if same else "NO")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
