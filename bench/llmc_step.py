"""Training-step throughput of llm.c's CPU reference trainer (train_gpt2.c) for GPT-2 124M,
measured on this machine, as a yardstick for bench/train_step.py.

    git clone https://github.com/karpathy/llm.c /path/to/llm.c
    python bench/llmc_step.py --llmc-dir /path/to/llm.c

llm.c is not part of this repository: you provide its sources (train_gpt2.c and the llmc/
headers it includes) and the script compiles them as llm.c's Makefile does for the CPU build
(gcc -Ofast -fopenmp -DOMP -march=native). None of llm.c's Python scripts, no PyTorch and no
download are needed: in a temporary directory the script writes what train_gpt2.c's main()
reads, at the relative paths it hardcodes:

  gpt2_124M.bin  a GPT-2 124M checkpoint in llm.c's format (version 3): a header of 256 int32
                 (magic 20240326, version 3, maxT 1024, V 50257, L 12, NH 12, C 768, padded
                 V 50304), then float32 parameters in llm.c's tensor order, matmul weights
                 stored (out, in). Random GPT-2-style init (N(0, 0.02), LayerNorm 1 and 0):
                 the values do not matter for speed.
  dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin
                 token files (256 int32 header: magic 20240520, version 1, token count; then
                 uint16 ids): data/tiny_shakespeare.txt encoded with our GPT-2 tokenizer, the
                 first 32,768 tokens for validation and the rest for training (llm.c's own
                 split; its preprocessing also puts <|endoftext|> before each paragraph).

No gpt2_tokenizer.bin is written; train_gpt2.c then prints a warning and shows its generated
samples as token ids. B and T are fixed in train_gpt2.c's main() (4 and 64 in the versions
this was written against; the script reads them from the source). main() runs steps 0..40 and
also evaluates the validation loss (5 forward passes) every 10 steps and samples 64 tokens
(63 full forward passes) at steps 20 and 40, but it times each training step alone
(data batch, forward, backward, AdamW), printing "step N: train loss L (took X ms)". This
script parses those lines, drops step 0 (warm-up: first-touch allocation of gradients and
optimizer state) and reports the median.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bpe import GPT2Tokenizer
from gpt.parallel.workers import available_cores

# GPT-2 124M as llm.c describes it
MAX_T, VOCAB, PADDED_VOCAB, N_LAYER, N_HEAD, N_EMBD = 1024, 50257, 50304, 12, 12, 768
MODEL_MAGIC, MODEL_VERSION = 20240326, 3
DATA_MAGIC, DATA_VERSION = 20240520, 1
VAL_TOKENS = 32768

REQUIRED_SOURCES = ["train_gpt2.c", "llmc/utils.h", "llmc/tokenizer.h", "llmc/dataloader.h",
                    "llmc/rand.h"]
STEP_LINE = re.compile(r"^step (\d+): train loss (\S+) \(took ([0-9.]+) ms\)")


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def llmc_batch_shape(source):
    """(B, T) as hardcoded in train_gpt2.c's main(), or None where they are not literals."""
    main = source[source.find("int main("):]
    b = re.search(r"\bint B = (\d+);", main)
    t = re.search(r"\bint T = (\d+);", main)
    return (int(b.group(1)), int(t.group(1))) if b and t else None


def write_checkpoint(path, seed=0):
    """GPT-2 124M in llm.c's version-3 checkpoint format, GPT-2-style random init."""
    C, L = N_EMBD, N_LAYER
    header = np.zeros(256, np.int32)
    header[:8] = [MODEL_MAGIC, MODEL_VERSION, MAX_T, VOCAB, L, N_HEAD, C, PADDED_VOCAB]
    rng = np.random.default_rng(seed)

    def normal(shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    proj_std = 0.02 / (2 * L) ** 0.5  # GPT-2's scaled init of the residual projections
    wte = normal((PADDED_VOCAB, C))
    wte[VOCAB:] = 0  # llm.c pads the vocabulary rows with zeros
    # llm.c's order: wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b,
    # fcw, fcb, fcprojw, fcprojb, lnfw, lnfb; matmul weights are (out, in)
    tensors = [
        lambda: wte,
        lambda: normal((MAX_T, C)),
        lambda: np.ones((L, C), np.float32), lambda: np.zeros((L, C), np.float32),
        lambda: normal((L, 3 * C, C)), lambda: np.zeros((L, 3 * C), np.float32),
        lambda: normal((L, C, C), proj_std), lambda: np.zeros((L, C), np.float32),
        lambda: np.ones((L, C), np.float32), lambda: np.zeros((L, C), np.float32),
        lambda: normal((L, 4 * C, C)), lambda: np.zeros((L, 4 * C), np.float32),
        lambda: normal((L, C, 4 * C), proj_std), lambda: np.zeros((L, C), np.float32),
        lambda: np.ones(C, np.float32), lambda: np.zeros(C, np.float32),
    ]
    n_params = 0
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for make in tensors:
            t = make()
            n_params += t.size
            f.write(np.ascontiguousarray(t, np.float32).tobytes())
    return n_params


def write_tokens(path, ids):
    header = np.zeros(256, np.int32)
    header[:3] = [DATA_MAGIC, DATA_VERSION, len(ids)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(ids, np.uint16).tobytes())


def write_data(workdir, text_path, min_train_tokens):
    """-> (train tokens, val tokens) written under workdir/dev/data/tinyshakespeare/."""
    with open(text_path, encoding="utf-8") as f:
        ids = GPT2Tokenizer.default().encode_ordinary(f.read())
    if len(ids) < VAL_TOKENS + min_train_tokens:
        fail(f"{text_path} encodes to only {len(ids)} tokens")
    out = os.path.join(workdir, "dev", "data", "tinyshakespeare")
    os.makedirs(out)
    write_tokens(os.path.join(out, "tiny_shakespeare_val.bin"), ids[:VAL_TOKENS])
    write_tokens(os.path.join(out, "tiny_shakespeare_train.bin"), ids[VAL_TOKENS:])
    return len(ids) - VAL_TOKENS, VAL_TOKENS


def compile_llmc(cc, llmc_dir, exe):
    cmd = [cc, "-Ofast", "-fopenmp", "-DOMP", "-march=native", "-I", llmc_dir,
           os.path.join(llmc_dir, "train_gpt2.c"), "-lm", "-o", exe]
    print("compiling:", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        fail(f"compiling llm.c failed (exit {r.returncode})")


def run_llmc(exe, workdir, threads, timeout, log_path, echo):
    """Runs train_gpt2 in workdir; -> (exit code or None on timeout, [(step, ms)])."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    steps = []
    # llm.c's printf output is block-buffered into a pipe; stdbuf (GNU coreutils) makes it
    # line-buffered so that progress shows and a timed-out run still leaves its log
    cmd = ["stdbuf", "-oL", exe] if shutil.which("stdbuf") else [exe]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                log.write(line)
                m = STEP_LINE.match(line)
                if m:
                    steps.append((int(m.group(1)), float(m.group(3))))
                if echo and (m or line.startswith("val loss")):
                    print("  llm.c:", line.rstrip(), flush=True)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted (e.g. Ctrl-C): don't leave llm.c running
            proc.kill()
            proc.wait()
    return (None if timed_out.is_set() else rc), steps


def tail(path, n=25):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llmc-dir", required=True,
                   help="directory with llm.c's train_gpt2.c and llmc/ headers (a clone of "
                        "https://github.com/karpathy/llm.c)")
    p.add_argument("--threads", type=int, default=available_cores(),
                   help="OMP_NUM_THREADS for llm.c (default: all cores, %(default)s here)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds for the llm.c run (default 900; it took ~600 s on 2 cores)")
    p.add_argument("--cc", default="gcc", help="C compiler (default gcc)")
    p.add_argument("--text", default=os.path.join(ROOT, "data", "tiny_shakespeare.txt"),
                   help="text to tokenize for the train/val token files")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--quiet", action="store_true", help="don't echo llm.c's step lines")
    args = p.parse_args()

    llmc_dir = os.path.abspath(args.llmc_dir)
    missing = [s for s in REQUIRED_SOURCES if not os.path.isfile(os.path.join(llmc_dir, s))]
    if missing:
        fail(f"llm.c sources not found in {llmc_dir} (missing {', '.join(missing)}); "
             "git clone https://github.com/karpathy/llm.c and pass --llmc-dir")
    if shutil.which(args.cc) is None:
        fail(f"C compiler {args.cc!r} not found")
    with open(os.path.join(llmc_dir, "train_gpt2.c"), encoding="utf-8", errors="replace") as f:
        source = f.read()
    shape = llmc_batch_shape(source)
    if shape is None:
        fail("could not find B and T in train_gpt2.c's main() (int B = ...; int T = ...;)")
    B, T = shape

    workdir = tempfile.mkdtemp(prefix="llmc_step_")
    try:
        exe = os.path.join(workdir, "train_gpt2")
        compile_llmc(args.cc, llmc_dir, exe)
        t0 = time.perf_counter()
        n_params = write_checkpoint(os.path.join(workdir, "gpt2_124M.bin"))
        n_train, n_val = write_data(workdir, args.text, min_train_tokens=41 * B * T + 1)
        print(f"wrote gpt2_124M.bin ({n_params:,} parameters, padded vocab) and "
              f"{n_train:,} train / {n_val:,} val tokens in {time.perf_counter() - t0:.1f} s",
              flush=True)

        print(f"running llm.c train_gpt2 (B={B}, T={T}, OMP_NUM_THREADS={args.threads}, "
              f"timeout {args.timeout:.0f} s) in {workdir}", flush=True)
        log_path = os.path.join(workdir, "train_gpt2.log")
        t0 = time.perf_counter()
        rc, steps = run_llmc(exe, workdir, args.threads, args.timeout, log_path,
                             echo=not args.quiet)
        wall = time.perf_counter() - t0
        if rc is None:
            print(tail(log_path), file=sys.stderr)
            fail(f"llm.c timed out after {args.timeout:.0f} s ({len(steps)} steps done)")
        if rc != 0:
            print(tail(log_path), file=sys.stderr)
            fail(f"llm.c exited with code {rc} after {len(steps)} steps")
        timed = [ms for step, ms in steps if step > 0]  # step 0 is the warm-up
        if not timed:
            print(tail(log_path), file=sys.stderr)
            fail("no 'step N: ... (took X ms)' lines after step 0 in llm.c's output")

        median = statistics.median(timed)
        print(f"llm.c train_gpt2.c, GPT-2 124M, B={B} T={T}, {args.threads} threads: "
              f"{len(timed)} steps parsed (step 0 dropped), whole run {wall:.0f} s")
        print(f"  ms/step: median {median:.1f}, min {min(timed):.1f}, max {max(timed):.1f}")
        print(f"  tokens/s: {B * T / (median / 1000):,.1f} (B*T / median step)")
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
