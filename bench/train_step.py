"""Training-step throughput: tokens/s, forward/backward/optimizer split, peak memory and MFU,
optionally raced against the same model in PyTorch eager, run for run.

    python bench/train_step.py --preset medium --vocab-size 65 --block-size 256 --batch-size 16 --vs-torch
    python bench/train_step.py --preset gpt2 --block-size 64 --batch-size 4 --vs-torch
    python bench/train_step.py --device cuda --preset gpt2 --block-size 1024 --batch-size 16 --vs-torch
    python bench/train_step.py --device cuda --preset gpt2 --block-size 1024 --largest-batch --vs-torch

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

--largest-batch finds, for each framework alone (one process at a time, nothing else on the
device), the largest batch whose training step fits in device memory: doubling from
--batch-size until a step runs out of memory, then bisecting to within an eighth; then it
times --runs steps of each at its own largest batch. A framework that cannot run here (no
CUDA build of PyTorch) is skipped with one line.
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from gpt.config import PRESETS, GPTConfig
from gpt.model import GPT
from gpt.parallel.workers import DataParallel, model_buffers, usable_workers
from gpt.run.options import POSITIVE_INT
from minigrad import KERNELS, AdamW, Backend, kernels
from minigrad.backend import is_out_of_memory


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


def gpu_tf32_peak_gflops(n=8192):
    """(datasheet dense TF32 peak or None, measured TF32 GEMM GFLOP/s of n x n x n) of this GPU."""
    import cupy

    from minigrad.cuda.gemm import gemm
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    sheet = next((v * 1e3 for k, v in TF32_PEAK_TFLOPS.items() if k in name), None)
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
        self.workers = DataParallel(self.model, n_workers)
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

    def close(self):
        self.workers.close()

    def device_peak_mib(self):
        """What CuPy's pool holds: it keeps every block it ever allocated (until freed by
        hand), so after the steps this is their peak, fragmentation included."""
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

    def close(self):
        pass

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


def make_runner(framework, cfg, batch_size, kind, device):
    if framework.startswith("pytorch"):
        return TorchStep(cfg, batch_size, kind, device, precision="bf16" if framework.endswith("bf16") else "fp32")
    return OursStep(cfg, batch_size, kind, device)


def free_device_memory(framework, device):
    """Return every cached block of this framework's allocator to the device."""
    gc.collect()
    if device != "cuda":
        return
    if framework.startswith("pytorch"):
        import torch
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()


def try_batch(framework, cfg, batch_size, kind, device, runs):
    """Build the framework's step at batch_size and run a warm-up and `runs` steps ->
    {"fits": True, "times": [...], "peak_mib": ...} or {"fits": False} when it runs out of
    device memory; everything is freed again afterwards."""
    free_device_memory(framework, device)
    runner = None
    try:
        runner = make_runner(framework, cfg, batch_size, kind, device)
        times = [runner.step() for _ in range(runs + 1)][1:]
        peak = runner.device_peak_mib() if device == "cuda" else peak_mib(runner)   # CPU: the process's peak RSS
        reply = {"fits": True, "times": times, "peak_mib": peak}
    except Exception as e:                   # the traceback would keep the failed step's arrays alive
        if not is_out_of_memory(e):
            raise
        reply = {"fits": False}
    finally:
        if runner is not None:
            runner.close()
    runner = None
    free_device_memory(framework, device)
    return reply


def worker(framework, cfg, batch_size, kind, device, peak_size):
    """One framework in its own process: a step per 'step' line on stdin, a JSON line back
    ('try B': a fresh step at batch B, see try_batch).

    Separate processes keep each framework's thread pools and heap from disturbing the other."""
    if framework.startswith("pytorch"):
        try:
            import torch
        except ImportError:
            torch = None
        if torch is None or (device == "cuda" and not torch.cuda.is_available()):
            print(json.dumps({"error": "PyTorch is not installed" if torch is None else
                              f"torch {torch.__version__} has no CUDA device here"}), flush=True)
            return
    base = status_mib("VmRSS")
    runner = None
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "try":
            print(json.dumps(try_batch(framework, cfg, int(command[1]), kind, device, int(command[2]))), flush=True)
            continue
        if runner is None and command[0] != "peak":
            runner = make_runner(framework, cfg, batch_size, kind, device)
        if command[0] == "step":
            reply = {"times": runner.step()}
        elif command[0] == "peak":
            if device == "cuda":
                sheet, measured = gpu_tf32_peak_gflops(peak_size)
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
    """A framework's worker process; .error says why it cannot run here (None when it can)."""

    def __init__(self, framework, argv):
        self.name = framework
        self.proc = subprocess.Popen([sys.executable, __file__, *argv, "--worker", framework],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.error = json.loads(line).get("error") if line else "its worker process died at start"

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died on {command!r}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def start_workers(names, argv):
    """The workers that can run here, with one line for each that cannot."""
    workers = []
    for name in names:
        w = Worker(name, argv)
        if w.error:
            print(f"skipped {name}: {w.error}")
            w.close()
        else:
            workers.append(w)
    return workers


def largest_batch(fits, start, cap):
    """The largest B <= cap with fits(B), to within an eighth: doubling from `start` until a
    batch does not fit (or halving until one does), then bisecting. -> B, or 0 if not even 1
    fits."""
    good, b = 0, min(start, cap)
    while b <= cap and fits(b):
        good, b = b, 2 * b
    bad = min(b, cap + 1)                      # the smallest batch known (or, past cap, taken) not to fit
    while good == 0 and bad > 1:
        b = bad // 2
        good, bad = (b, bad) if fits(b) else (0, b)
    while good and bad - good > max(1, good // 8):
        b = (good + bad) // 2
        good, bad = (b, bad) if fits(b) else (good, b)
    return good


def print_header(cfg, device, peak, batch):
    print(f"config: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, vocab {cfg.vocab_size}, "
          f"T={cfg.block_size}, B={batch}; {device}, {os.cpu_count()} cores; matmul peak {peak:.0f} GFLOP/s")
    header = "| framework | tokens/s | step s | fwd s | bwd s | opt s | MFU | MFU+head | peak MiB | step MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1), flush=True)


def print_row(cfg, peak, label, batch_size, steps, mem):
    """One framework's row from its steps' [(fwd, bwd or None, opt)] and its memory -> tokens/s."""
    f_model, f_head = flops_per_token(cfg)
    total = statistics.median(sum(x for x in t if x is not None) for t in steps)
    fwd, bwd, opt = (statistics.median(t[i] for t in steps) if steps[0][i] is not None else None for i in range(3))
    fwd_bwd = f"{fwd:.3f} | {bwd:.3f}" if bwd is not None else f"{fwd:.3f} (fwd+bwd) | -"
    rate = batch_size * cfg.block_size / total
    print(f"| {label} | {rate:,.0f} | {total:.3f} | {fwd_bwd} | {opt:.3f} | {f_model * rate / (peak * 1e9):.2f} | "
          f"{f_head * rate / (peak * 1e9):.2f} | {mem['peak_mib']:,.0f} | {mem['step_mib']:,.0f} |", flush=True)
    return rate


def print_ratios(rates, rivals, what):
    for name in rivals:
        if name in rates and "minigrad" in rates:
            print(f"ratio minigrad / {name} tokens/s: {rates['minigrad'] / rates[name]:.2f} ({what})")


def race(args, cfg, argv, rivals):
    """Every framework at --batch-size, one step each in turn."""
    workers = start_workers(["minigrad", *rivals], argv)
    if not workers or workers[0].name != "minigrad":
        raise SystemExit("error: minigrad cannot run here")
    answer = workers[0].ask("peak")
    peak = answer["matmul_gflops"]
    if "measured_gflops" in answer:
        print(f"GPU TF32 peak for MFU: {peak / 1e3:.0f} TFLOP/s "
              f"(measured TF32 GEMM: {answer['measured_gflops'] / 1e3:.0f})")
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
    print_header(cfg, args.device, peak, args.batch_size)
    rates = {w.name: print_row(cfg, peak, w.name, args.batch_size, times[w.name], memory[w.name]) for w in workers}
    print_ratios(rates, rivals, f"medians of {args.runs} interleaved steps each")


def largest_batches(args, cfg, argv, rivals):
    """Each framework alone (its own process, nothing else on the device): the largest batch
    whose step fits, probed with one step each, then --runs steps at it; each row printed as
    soon as it is measured, so a run cut short keeps what it found."""
    rates, peak = {}, None
    for name in ["minigrad", *rivals]:
        for w in start_workers([name], argv):
            try:
                if peak is None:
                    peak = w.ask("peak")["matmul_gflops"] if args.device == "cuda" else matmul_peak_gflops(reps=4)

                def fits(b):
                    fit = w.ask(f"try {b} 0")["fits"]
                    print(f"{name}: B={b} {'fits' if fit else 'does not fit (out of memory)'}", flush=True)
                    return fit
                best = largest_batch(fits, args.batch_size, args.max_batch)
                timed = w.ask(f"try {best} {args.runs}") if best else None
            except RuntimeError as e:                        # its worker died: the next framework goes on
                print(f"{name}: {e}", flush=True)
                continue
            finally:
                w.close()
            capped = " (the --max-batch cap)" if best == args.max_batch else ""
            print(f"largest batch of {name} alone: {best or 'none fits'}{capped}", flush=True)
            if timed and timed["fits"]:
                if not rates:
                    print_header(cfg, args.device, peak, "each framework's largest")
                rates[name] = print_row(cfg, peak, f"{name} B={best}", best, timed["times"],
                                        {"peak_mib": timed["peak_mib"], "step_mib": timed["peak_mib"]})
            elif timed:
                print(f"{name}: B={best} ran out of memory when timed; no row")
    print_ratios(rates, rivals, f"each at its largest batch, medians of {args.runs} steps")


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
    p.add_argument("--largest-batch", action="store_true",
                   help="find each framework's largest batch alone (from --batch-size up) and time it there")
    p.add_argument("--max-batch", type=POSITIVE_INT, default=4096,
                   help="--largest-batch looks no further (default: 4096)")
    p.add_argument("--peak-size", type=POSITIVE_INT, default=8192,
                   help="n of the n x n x n GEMM that measures the GPU's peak")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    cfg = config_from(args)
    if args.worker:
        return worker(args.worker, cfg, args.batch_size, args.kernels, args.device, args.peak_size)
    argv = [a for a in sys.argv[1:] if a not in ("--vs-torch", "--largest-batch")]
    rivals = (["pytorch"] if args.device == "cpu" else ["pytorch-tf32", "pytorch-bf16"]) if args.vs_torch else []
    (largest_batches if args.largest_batch else race)(args, cfg, argv, rivals)


if __name__ == "__main__":
    main()
