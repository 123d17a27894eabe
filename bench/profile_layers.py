"""Where one worker's training step goes, layer by layer, forward and backward.

    python bench/profile_layers.py --preset medium --vocab-size 65 --block-size 256 --batch-size 8

Runs forward + backward of one data-parallel shard (the whole given batch) in this process with
single-threaded BLAS, as a worker does, timing every call of each minigrad layer function the
model makes. Attention's figures include its two projections, which are also listed apart.
Medians over --runs steps after one warm-up step; the step total is the sum of whole steps.
"""
import argparse
import collections
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import minigrad.attention
import minigrad.cpu.attention
from gpt.config import PRESETS, GPTConfig
from gpt.model import GPT
from minigrad import KERNELS, Backend, kernels

LAYER_FUNCTIONS = ["embedding", "layernorm", "attention", "linear", "gelu", "dropout", "cross_entropy"]


def timed(name, function, totals):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        result = function(*args, **kwargs)
        totals[name] += time.perf_counter() - t
        return result
    return wrapper


def instrument(ops, totals):
    """Wrap the ops the model calls and the projections attention calls, accumulating seconds per name."""
    for layer in LAYER_FUNCTIONS:
        for direction in ("forward", "backward"):
            name = f"{layer}_{direction}"
            setattr(ops, name, timed(name, getattr(ops, name), totals))
    attention = minigrad.cpu.attention if ops.kind == "fast" else minigrad.attention
    for direction in ("forward", "backward"):
        name = f"linear_{direction}"
        setattr(attention, name, timed(f"  attention's projections, {direction}", getattr(attention, name), totals))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="medium", choices=list(PRESETS))
    p.add_argument("--vocab-size", type=int, default=65)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--kernels", default="fast", choices=KERNELS, help="layer implementations (default: fast)")
    args = p.parse_args()
    cfg = GPTConfig.preset(args.preset, block_size=args.block_size, vocab_size=args.vocab_size)
    ops = kernels("cpu", args.kernels)
    model = GPT(cfg, Backend("cpu", "float32"), ops=ops)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, cfg.vocab_size, (args.batch_size, cfg.block_size)) for _ in range(2))
    totals = collections.defaultdict(float)
    instrument(ops, totals)
    per_step, steps = collections.defaultdict(list), []
    with threadpool_limits(limits=1, user_api="blas"):
        for run in range(args.runs + 1):
            totals.clear()
            t = time.perf_counter()
            model.zero_grad()
            model.forward(x, y, return_logits=False)
            model.backward()
            if run:                                   # run 0 warms up
                steps.append(time.perf_counter() - t)
                for name, seconds in totals.items():
                    per_step[name].append(seconds)
    step = statistics.median(steps)
    print(f"{cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, vocab {cfg.vocab_size}, "
          f"B={args.batch_size}, T={cfg.block_size}, one core: step {step * 1000:.0f} ms "
          f"({args.batch_size * cfg.block_size / step:,.0f} tokens/s)")
    print("| layer function | ms per step | share |")
    print("|---|---|---|")
    for name, values in sorted(per_step.items(), key=lambda kv: -statistics.median(kv[1])):
        ms = statistics.median(values) * 1000
        print(f"| {name} | {ms:.1f} | {ms / (step * 1000):.0%} |")


if __name__ == "__main__":
    main()
