"""Generation speed with and without the KV cache (a benchmark, not a test).

    python bench/generate_speed.py                          # small and gpt2 presets, 256 new tokens
    python bench/generate_speed.py --presets tiny small --new-tokens 128 --device cuda

For each preset (random weights) it generates --new-tokens tokens after a one-token prompt,
once with the KV cache and once recomputing the whole window per token, and prints
tokens/s plus the median time of a token among the first and among the last 32 tokens
(medians, so that a busy machine's hiccups do not swamp them; --repeat keeps the fastest
of several runs). With the cache a token costs the weights of one position plus attention
over t cached keys, so the per-token time stays nearly flat as t grows; without it every
token re-runs the model on all t tokens.
"""
import argparse
import os
import sys
import time

import numpy as np

from gpt.config import GPTConfig
from gpt.generate import generate
from gpt.model import GPT
from minigrad import KERNELS, Backend, kernels

VOCAB = {"gpt2": 50257}       # presets benchmarked with the GPT-2 vocabulary; the rest byte-level (256)
WINDOW = 32                   # tokens summarized at the start and at the end


def token_times(model, n, use_cache):
    """Seconds each of n generated tokens took (device work included), after a 1-token prompt."""
    times, last = [], time.perf_counter()
    for _ in generate(model, [0], n, temperature=1.0, seed=0, use_cache=use_cache):
        model.backend.synchronize()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return np.array(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["small", "gpt2"])
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--skip-uncached", action="store_true", help="only time the KV-cache path")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration; the fastest is reported")
    p.add_argument("--kernels", default="fast", choices=KERNELS, help="layer implementations (default: fast)")
    args = p.parse_args(argv)
    backend = Backend(args.device, "float32")
    n = args.new_tokens
    print(f"device: {backend.name} ({backend.xp.__name__} {backend.xp.__version__}), {os.cpu_count()} CPUs, "
          f"{n} new tokens after a 1-token prompt, temperature 1.0, fastest of {args.repeat} run(s)\n")
    print(f"| preset | vocab | KV cache | tokens/s | ms/token, tokens 1-{WINDOW} "
          f"| ms/token, tokens {n - WINDOW + 1}-{n} |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        cfg = GPTConfig.preset(preset, vocab_size=VOCAB.get(preset, 256))
        if n > cfg.block_size:
            print(f"note: {preset} has a {cfg.block_size}-token window; tokens past it re-prefill the window",
                  file=sys.stderr)
        model = GPT(cfg, backend, seed=0, ops=kernels(backend.name, args.kernels))
        list(generate(model, [0], 2))                                  # warm-up (BLAS threads, kernels)
        for use_cache in ([True] if args.skip_uncached else [True, False]):
            t = min((token_times(model, n, use_cache) for _ in range(args.repeat)), key=np.sum)
            print(f"| {preset} | {cfg.vocab_size} | {'yes' if use_cache else 'no'} | {n / t.sum():,.1f} | "
                  f"{1e3 * np.median(t[:WINDOW]):.1f} | {1e3 * np.median(t[-WINDOW:]):.1f} |", flush=True)


if __name__ == "__main__":
    main()
