"""Training-step throughput: tokens/s, forward/backward/optimizer split, peak memory and MFU,
optionally raced against the same model in PyTorch eager, run for run.

    python bench/train_step.py --preset medium --vocab-size 65 --block-size 256 --batch-size 16 --vs-torch
    python bench/train_step.py --preset gpt2 --block-size 64 --batch-size 4 --vs-torch
    python bench/train_step.py --device cuda --preset gpt2 --block-size 1024 --batch-size 16 --vs-torch

On CUDA, --vs-torch races two PyTorch configurations: float32 with TF32 matmuls (the precision
ours runs in) and bf16 autocast (what a nanoGPT user runs, for comparison); both use
scaled_dot_product_attention. Steps are timed to a device synchronize; MFU is against the
GPU's dense TF32 peak (its datasheet figure when the GPU is known, else the TF32 GEMM peak
measured in the run), peak memory is the device memory each framework's allocator held.

A step is what train.py does per optimizer step: zero grads, forward, backward, clip the
global norm, AdamW. Each framework uses all cores. MFU = model FLOPs per second / the float32
matmul peak measured here in the same run, with model FLOPs per token = 6 N + 12 L T C
(N = non-embedding parameters; PaLM's accounting). The lm-head matmul (6 V C per token) is
real work that formula leaves out, so the table also gives MFU with the head counted.
Each framework runs in its own process (so neither's thread pool or heap disturbs the other),
and the two take turns, one step each, with a short pause between steps; peak memory is each
process's peak RSS (VmHWM) over all its steps, plus each of our data-parallel worker processes'
peak RSS less the shared memory (parameters, gradients) already counted; "step MiB" is the part
above the process's RSS before the model was built.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from gpt.config import PRESETS, GPTConfig
from gpt.model import GPT
from gpt.parallel import CPUWorkers, model_buffers, usable_workers
from minigrad import KERNELS, AdamW, Backend, kernels


def matmul_peak_gflops(n=2048, reps=7):
    """Median float32 GFLOP/s of an n x n x n NumPy matmul (OpenBLAS, all cores)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times[1:]) / 1e9


def flops_per_token(cfg):
    """(6 N_non_embedding + 12 L T C, the same plus the lm head's 6 V C)."""
    C, L, T = cfg.n_embd, cfg.n_layer, cfg.block_size
    n_non_embedding = L * (12 * C * C + 13 * C) + 2 * C
    model = 6 * n_non_embedding + 12 * L * T * C
    return model, model + 6 * cfg.vocab_size * C


# Dense (non-sparse) TF32 tensor-core peaks from NVIDIA's datasheets, TFLOP/s (SXM parts).
TF32_PEAK_TFLOPS = {"H200": 494.7, "H100": 494.7, "A100": 156.0, "L40S": 183.0, "A10": 62.5, "L4": 60.0}


def gpu_tf32_peak_gflops():
    """(datasheet dense TF32 peak or None, measured TF32 GEMM GFLOP/s) of this GPU."""
    import cupy
    from minigrad.cuda.gemm import gemm
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    sheet = next((v * 1e3 for k, v in TF32_PEAK_TFLOPS.items() if k in name), None)
    n = 8192
    a, b = cupy.ones((n, n), cupy.float32), cupy.ones((n, n), cupy.float32)
    out = cupy.empty((n, n), cupy.float32)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(6):
        start.record()
        gemm(a, b, out, tf32=True)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return sheet, 2 * n ** 3 / statistics.median(times[1:]) / 1e9


class OursStep:
    name = "minigrad"

    def __init__(self, cfg, batch_size, kind, device="cpu", seed=0):
        backend = Backend(device, "float32")
        self.backend = backend
        n_workers = usable_workers(backend)
        ops = kernels(backend.name, kind, threads=n_workers)
        self.model = GPT(cfg, backend, seed=seed, ops=ops, **model_buffers(cfg, backend, n_workers))
        self.workers = CPUWorkers(self.model, n_workers)
        self.opt = AdamW(self.model.params, self.model.grads, self.model.decay_mask(), ops=ops)
        rng = np.random.default_rng(seed)
        self.x = rng.integers(0, cfg.vocab_size, (batch_size, cfg.block_size))
        self.y = rng.integers(0, cfg.vocab_size, (batch_size, cfg.block_size))

    def step(self):
        """-> (forward + backward s, None, optimizer s): the data-parallel workers overlap
        forward and backward, so they are timed together."""
        sync = self.backend.synchronize
        t0 = time.perf_counter()
        self.model.zero_grad()
        self.workers.forward_backward(self.x, self.y)
        sync()
        t1 = time.perf_counter()
        self.model.ops.clip_grad_norm(self.model.grads, 1.0)
        self.opt.step(1e-4)
        sync()
        return t1 - t0, None, time.perf_counter() - t1

    def device_peak_mib(self):
        import cupy
        return cupy.get_default_memory_pool().total_bytes() / 2**20


class TorchStep:
    """PyTorch eager; `precision` 'fp32' (TF32 matmuls on CUDA) or 'bf16' (CUDA autocast)."""

    def __init__(self, cfg, batch_size, kind, device="cpu", seed=0, precision="fp32"):
        import contextlib
        import torch
        from torch_gpt import TorchGPT
        torch.set_num_threads(os.cpu_count())
        torch.manual_seed(seed)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self.torch, self.device = torch, device
        self.model = TorchGPT(cfg).to(device)
        self.opt = self.model.optimizer()
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
                         else contextlib.nullcontext())
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.integers(0, cfg.vocab_size, (batch_size, cfg.block_size))).to(device)
        self.y = torch.from_numpy(rng.integers(0, cfg.vocab_size, (batch_size, cfg.block_size))).to(device)

    def _sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def step(self):
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.model(self.x, self.y)
        self._sync()
        t1 = time.perf_counter()
        loss.backward()
        self._sync()
        t2 = time.perf_counter()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self._sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def device_peak_mib(self):
        return self.torch.cuda.max_memory_reserved() / 2**20


def config_from(args):
    return GPTConfig.preset(args.preset, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                            block_size=args.block_size, vocab_size=args.vocab_size)


def status_mib(field, pid="self"):
    """VmRSS (now), VmHWM (peak; reset by exec, unlike ru_maxrss) or RssShmem (shared memory
    resident now) of a process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def peak_mib(runner):
    """Peak RSS of this process plus, for each data-parallel worker process, its peak RSS less
    the shared memory it maps (parameters and gradients, already counted here): shared pages
    are counted once."""
    workers = getattr(getattr(runner, "workers", None), "processes", [])
    return status_mib("VmHWM") + sum(status_mib("VmHWM", w.pid) - status_mib("RssShmem", w.pid) for w in workers)


def worker(framework, cfg, batch_size, kind, device):
    """One framework in its own process: a step per 'step' line on stdin, a JSON line back.

    Separate processes keep each framework's thread pools and heap from disturbing the other."""
    if framework.startswith("pytorch"):
        import torch  # noqa: F401  (the import's memory belongs to the baseline)
    base = status_mib("VmRSS")
    if framework.startswith("pytorch"):
        runner = TorchStep(cfg, batch_size, kind, device, precision="bf16" if framework.endswith("bf16") else "fp32")
    else:
        runner = OursStep(cfg, batch_size, kind, device)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            reply = {"times": runner.step()}
        elif line.strip() == "peak":
            if device == "cuda":
                sheet, measured = gpu_tf32_peak_gflops()
                reply = {"matmul_gflops": sheet or measured, "measured_gflops": measured}
            else:
                reply = {"matmul_gflops": matmul_peak_gflops(reps=4)}
        elif device == "cuda":
            reply = {"peak_mib": runner.device_peak_mib(), "step_mib": runner.device_peak_mib()}
        else:
            peak = peak_mib(runner)
            reply = {"peak_mib": peak, "step_mib": peak - base}
        print(json.dumps(reply), flush=True)
        if "peak_mib" in reply:
            return


class Worker:
    def __init__(self, framework, argv):
        self.name = framework
        self.proc = subprocess.Popen([sys.executable, __file__, *argv, "--worker", framework],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc.stdout.readline()

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gpt2", choices=list(PRESETS))
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--runs", type=int, default=5, help="timed steps per framework (after one warm-up step)")
    p.add_argument("--vs-torch", action="store_true", help="race PyTorch eager, interleaved step for step")
    p.add_argument("--pause", type=float, default=0.0, help="seconds of idle before each step")
    p.add_argument("--kernels", default="fast", choices=KERNELS, help="our layer implementations (default: fast)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    cfg = config_from(args)
    if args.worker:
        return worker(args.worker, cfg, args.batch_size, args.kernels, args.device)
    argv = [a for a in sys.argv[1:] if a != "--vs-torch"]

    rivals = ["pytorch"] if args.device == "cpu" else ["pytorch-tf32", "pytorch-bf16"]
    workers = [Worker("minigrad", argv)] + ([Worker(name, argv) for name in rivals] if args.vs_torch else [])
    answer = workers[0].ask("peak")
    peak = answer["matmul_gflops"]
    if "measured_gflops" in answer:
        print(f"GPU TF32 peak for MFU: {peak / 1e3:.0f} TFLOP/s (measured TF32 GEMM: {answer['measured_gflops'] / 1e3:.0f})")
    times = {w.name: [] for w in workers}
    for run in range(args.runs + 1):                      # run 0 warms up
        for w in workers:
            time.sleep(args.pause)
            t = w.ask("step")["times"]
            if run:
                times[w.name].append(t)
    if args.device == "cpu":
        peak = max(peak, workers[0].ask("peak")["matmul_gflops"])
    memory = {w.name: w.ask("quit") for w in workers}

    tokens = args.batch_size * cfg.block_size
    f_model, f_head = flops_per_token(cfg)
    print(f"config: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, vocab {cfg.vocab_size}, "
          f"T={cfg.block_size}, B={args.batch_size}; {args.device}, {os.cpu_count()} cores; matmul peak {peak:.0f} GFLOP/s")
    header = "| framework | tokens/s | step s | fwd s | bwd s | opt s | MFU | MFU+head | peak MiB | step MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rates = {}
    for w in workers:
        steps = times[w.name]
        total = statistics.median(sum(x for x in t if x is not None) for t in steps)
        fwd, bwd, opt = (statistics.median(t[i] for t in steps) if steps[0][i] is not None else None
                         for i in range(3))
        fwd_bwd = f"{fwd:.3f} | {bwd:.3f}" if bwd is not None else f"{fwd:.3f} (fwd+bwd) | -"
        rates[w.name] = tokens / total
        mem = memory[w.name]
        print(f"| {w.name} | {rates[w.name]:,.0f} | {total:.3f} | {fwd_bwd} | {opt:.3f} | "
              f"{f_model * rates[w.name] / (peak * 1e9):.2f} | {f_head * rates[w.name] / (peak * 1e9):.2f} | "
              f"{mem['peak_mib']:,.0f} | {mem['step_mib']:,.0f} |")
    for name in rivals if args.vs_torch else []:
        print(f"ratio minigrad / {name} tokens/s: {rates['minigrad'] / rates[name]:.2f} "
              f"(medians of {args.runs} interleaved steps each)")


if __name__ == "__main__":
    main()
