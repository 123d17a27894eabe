"""nanoGPT's CPU recipe for shakespeare-char, trained here and (optionally) in PyTorch eager.

nanoGPT's README trains this on a CPU and reports a validation loss of about 1.88:
4 layers, 4 heads, 128 wide, block 64, batch 12, 2,000 iterations, lr 1e-3 decaying to 1e-4
over 2,000 iterations, warm-up 100, beta2 0.99, dropout 0, a 90/10 split. On this ASCII text
byte-level tokens are characters. Ours runs through train.py itself; the PyTorch run uses the
same model (bench/torch_gpt.py), the same batches, schedule, clipping and evaluation windows.

    python bench/shakespeare_char.py              # ours
    python bench/shakespeare_char.py --vs-torch   # and PyTorch eager, for the wall time

With --repeat N the runs alternate (ours, PyTorch, ours, PyTorch, ...), so a machine whose
speed drifts over minutes slows both alike; every run's wall time is printed.
"""
import argparse
import json
import os
import tempfile
import time
from functools import partial

import numpy as np

import train
from gpt.config import GPTConfig
from gpt.data.batches import BatchSampler, split_tokens
from gpt.data.corpus import load_byte_corpus
from minigrad import KERNELS, lr_at

RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000, lr=1e-3,
              min_lr=1e-4, warmup=100, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0)


def run_ours(max_iters, eval_steps, seed, kernels="fast"):
    r = RECIPE
    with tempfile.TemporaryDirectory() as out:
        argv = ["--n-layer", r["n_layer"], "--n-head", r["n_head"], "--n-embd", r["n_embd"],
                "--block-size", r["block_size"], "--batch-size", r["batch_size"], "--max-steps", max_iters,
                "--lr", r["lr"], "--min-lr", r["min_lr"], "--warmup-steps", r["warmup"], "--beta2", r["beta2"],
                "--weight-decay", r["weight_decay"], "--grad-clip", r["grad_clip"], "--dropout", 0,
                "--eval-interval", max_iters, "--eval-steps", eval_steps, "--log-interval", 100,
                "--sample-tokens", 0, "--seed", seed, "--out-dir", out, "--kernels", kernels]
        t = time.perf_counter()
        assert train.main([str(a) for a in argv]) == 0
        wall = time.perf_counter() - t
        with open(os.path.join(out, "loss_curve.json")) as f:
            curve = json.load(f)
    return curve[-1]["val_loss"], wall


def run_torch(max_iters, eval_steps, seed):
    import torch
    from torch_gpt import TorchGPT
    r = RECIPE
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=r["n_layer"], n_head=r["n_head"], n_embd=r["n_embd"], block_size=r["block_size"],
                    vocab_size=256)
    tokens = load_byte_corpus(train.DEFAULT_DATA)
    train_part, val_part = split_tokens(tokens, 0.1, cfg.block_size)
    train_data = BatchSampler(train_part, r["batch_size"], cfg.block_size, seed=seed)
    val_data = BatchSampler(val_part, r["batch_size"], cfg.block_size, seed=seed)
    model = TorchGPT(cfg)
    opt = model.optimizer(weight_decay=r["weight_decay"], betas=(r["beta1"], r["beta2"]))
    t = time.perf_counter()
    for step in range(max_iters):
        lr = lr_at(step, r["lr"], r["min_lr"], r["warmup"], max_iters)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = (torch.from_numpy(a) for a in train_data.get(step))
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        opt.step()
    with torch.no_grad():
        val = float(np.mean([model(torch.from_numpy(x), torch.from_numpy(y)).item()
                             for x, y in val_data.eval_batches(eval_steps)]))
    return val, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-iters", type=int, default=RECIPE["max_iters"])
    p.add_argument("--eval-steps", type=int, default=200, help="validation batches for the final loss")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--vs-torch", action="store_true")
    p.add_argument("--repeat", type=int, default=1, help="alternating runs of each framework")
    p.add_argument("--kernels", default="fast", choices=KERNELS, help="our layer implementations (default: fast)")
    args = p.parse_args()
    runners = ([("minigrad", partial(run_ours, kernels=args.kernels))]
               + ([("pytorch", run_torch)] if args.vs_torch else []))
    results = {name: [] for name, _ in runners}
    for _ in range(args.repeat):
        for name, run in runners:
            results[name].append(run(args.max_iters, args.eval_steps, args.seed))
    print(f"\nshakespeare-char, nanoGPT CPU recipe, {args.max_iters} iterations "
          f"(validation loss over {args.eval_steps} batches of 12 x 64; nanoGPT reports ~1.88)")
    print("| framework | val loss | wall s, each run |")
    print("|---|---|---|")
    for name, runs in results.items():
        print(f"| {name} | {runs[0][0]:.4f} | {' / '.join(f'{wall:.1f}' for _, wall in runs)} |")


if __name__ == "__main__":
    main()
