"""One-shot report of where the CUDA path stands, on one NVIDIA GPU.

    bench/gpu_report.sh OUT                   # ${PYTHON:-python3} bench/gpu_report.py OUT
    bench/gpu_report.sh OUT --steps 6-8       # only the benchmarks (a rerun of a cut report)
    bench/gpu_report.sh OUT --smoke           # every step on tiny models (the CPU test, under the stand-in)

It runs on a plain checkout with the packages a GPU machine has preinstalled (no install, no
network): the repository root and bench/ go on PYTHONPATH. Each step has a budget (its
timeout) and is printed with its elapsed time; the steps run most essential and cheapest
first, so a report cut short still has those, and the whole report stays within --budget
seconds (first-use kernel compiles included). OUT receives two files: summary.txt, written
as the report goes, and details.tar.gz, every step's full output, rewritten after each step.
Runs, checkpoints and the self-test's cache live in a temporary directory, deleted at the end.

Steps (budget in seconds):
  1 machine       (20)   the GPU, driver, CUDA, CuPy, NumPy, PyTorch, the commit
  2 self-test     (90)   python -m minigrad.cuda.selftest on a fresh cache (its verdict serves the rest)
  3 GPU tests     (100)  the [gpu] variants of tests/minigrad/test_cuda.py and tests/test_cuda_cli.py, the NVRTC
                         compile tests
  4 resume        (45)   20 steps straight against 10 + --resume 10: parameters and moments bitwise
  5 default run   (45)   python train.py --device cuda, the loss falling
  6 char model    (45)   bench/train_step.py --vs-torch: 6/6/384, T = 256, B = 64
  7 GPT-2 124M    (75)   bench/train_step.py --vs-torch: T = 1024, B = 16
  8 largest batch (100)  bench/train_step.py --largest-batch --vs-torch: each framework alone
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
GRACE = 25             # seconds kept back from every step's budget: its SIGTERM, SIGKILL and the archive
PACKAGES = ("numpy", "cupy", "torch", "regex", "tqdm", "threadpoolctl", "pytest", "hypothesis", "transformers",
            "tiktoken", "mpi4py")
# The lines of bench/train_step.py's output that go into the summary (the rest is in the details).
BENCH_LINES = ("config:", "|", "ratio", "GPU TF32", "skipped", "largest batch")


class Report:
    """The output directory, the work directory, the clock and the budget."""

    def __init__(self, out, budget, smoke):
        self.out, self.budget, self.smoke = out, budget, smoke
        self.work = tempfile.mkdtemp(prefix="gpu_report.")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        os.makedirs(out, exist_ok=True)
        self.summary = open(os.path.join(out, "summary.txt"), "w")
        self.start = time.monotonic()
        self.current = None                          # the command running now
        self.env = dict(os.environ, XDG_CACHE_HOME=os.path.join(self.work, "cache"), PYTHONUNBUFFERED="1",
                        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.path.join(ROOT, "bench"),
                                                               os.environ.get("PYTHONPATH")) if p))

    def left(self):
        return self.budget - (time.monotonic() - self.start)

    def write(self, *lines):
        for line in lines:
            print(line, flush=True)
            self.summary.write(line + "\n")
        self.summary.flush()

    def run(self, log, command, timeout):
        """Run a command (its own process group, cwd the repository) with its output appended to
        logs/<log>; past `timeout` seconds the group gets SIGTERM, then SIGKILL 10 s later.
        -> (exit status, or 'timeout', the command's output)."""
        path = os.path.join(self.logs, log)
        with open(path, "a") as f:
            f.write(f"$ {' '.join(command)}\n")
            f.flush()
            start = os.fstat(f.fileno()).st_size              # where this command's output begins
            proc = self.current = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                status = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                status = "timeout"
            finally:
                _kill_group(proc)                        # what it left running (workers) goes too
                self.current = None
            with open(path, "rb") as written:
                written.seek(start)
                output = written.read().decode(errors="replace")
            f.write(f"[exit status: {status}]\n")
        return status, output

    def archive(self):
        """Every log so far into OUT/details.tar.gz (replaced atomically)."""
        partial = os.path.join(self.out, ".details.tar.gz.partial")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(self.logs, arcname="details")
        os.replace(partial, os.path.join(self.out, "details.tar.gz"))

    def close(self):
        self.archive()
        self.summary.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _stop_group(proc):
    """SIGTERM to the command's process group (train.py then saves), SIGKILL 10 s later."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc)
    proc.wait()


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _lines(output, prefixes):
    return [line for line in output.splitlines() if line.startswith(prefixes)]


def _status(status, fine=(0,)):
    """[] for a status in `fine`, else the one line that says how the command ended."""
    return [] if status in fine else ["[timed out]" if status == "timeout" else f"[exit status {status}]"]


# ----------------------------------------------------------------------------- the steps


def machine(r, timeout):
    if shutil.which("nvidia-smi"):
        _, out = r.run("1_machine.txt", ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                         "--format=csv,noheader"], timeout / 2)
        r.write(*out.splitlines())
    else:
        r.write("nvidia-smi: not found")
    probe = ("import sys, numpy, cupy; rt = cupy.cuda.runtime; p = rt.getDeviceProperties(0); "
             "print('python', sys.version.split()[0], '| numpy', numpy.__version__, '| cupy', cupy.__version__, "
             "'| CUDA runtime', rt.runtimeGetVersion(), 'driver', rt.driverGetVersion(), '|', p['name'].decode(), "
             "'sm', p['major'], p['minor'], '|', round(p['totalGlobalMem'] / 2**30, 1), 'GiB')\n"
             "try:\n import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, "
             "'available', torch.cuda.is_available())\n"
             "except ImportError: print('torch: not installed')")
    status, out = r.run("1_machine.txt", [PYTHON, "-c", probe], timeout / 2)
    r.write(*out.splitlines())
    probe = ("import importlib.util as u; print('packages:', ', '.join("
             "f\"{m} {'yes' if u.find_spec(m) else 'MISSING'}\" "
             f"for m in {PACKAGES!r}))")
    _, out = r.run("1_machine.txt", [PYTHON, "-c", probe], timeout / 4)
    r.write(*out.splitlines())
    status, out = r.run("1_machine.txt", ["git", "log", "-1", "--format=commit %h %cd"], 5) if shutil.which("git") \
        else (None, "")
    r.write(*(out.splitlines()[:1] if status == 0 else ["commit: unknown (no git, or not a git checkout)"]))


def selftest(r, timeout):
    status, out = r.run("2_selftest.txt", [PYTHON, "-m", "minigrad.cuda.selftest"], timeout)
    r.write(*out.splitlines(), *_status(status))


def gpu_tests(r, timeout):
    selection = (["tests/minigrad/test_cuda.py", "-k", "gpu and equals_its_reference"] if r.smoke else
                 ["tests/minigrad/test_cuda.py", "tests/test_cuda_cli.py", "tests/minigrad/test_cuda_compile.py", "-k",
                  "gpu or test_every_kernel_compiles or test_a_broken_kernel_fails_to_compile"])
    status, out = r.run("3_gpu_tests.txt", [PYTHON, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
                                            *selection], timeout)
    results = re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", out, re.M)   # as each test ends
    counts = {word: sum(1 for _, w in results if w == word) for word in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
    r.write(*[f"{word} {test}" for test, word in results if word != "PASSED"],
            ", ".join(f"{n} {word.lower()}" for word, n in counts.items() if n) or "no test ran",
            *_status(status, fine=(0, 1)))


def resume(r, timeout):
    import numpy as np
    model = ["--preset", "tiny", "--n-embd", "16", "--n-head", "2", "--block-size", "16"] if r.smoke else []
    run = [PYTHON, "train.py", "--device", "cuda", *model, "--sample-tokens", "0", "--eval-interval", "10",
           "--log-interval", "5", "--max-steps", "20"]
    dirs = {name: os.path.join(r.work, name) for name in ("straight", "resumed")}
    deadline = time.monotonic() + timeout
    for args in ([*run, "--out-dir", dirs["straight"]], [*run, "--out-dir", dirs["resumed"], "--max-steps", "10"],
                 [*run, "--out-dir", dirs["resumed"], "--resume"]):
        status, _ = r.run("4_resume.txt", args, deadline - time.monotonic())
        if status != 0:
            r.write(f"a run failed {' '.join(_status(status))}: {' '.join(args[1:])}")
            return
    a, b = (np.load(os.path.join(d, "ckpt.npz")) for d in dirs.values())
    same = all(np.array_equal(a[k], b[k]) for k in ("params", "adam_m", "adam_v"))
    r.write(f"resume bit-identical (params, adam_m, adam_v after 20 steps): {same}")


def default_run(r, timeout):
    extra = ["--preset", "tiny", "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--max-steps", "30",
             "--eval-interval", "10", "--sample-tokens", "20"] if r.smoke else []
    command = [PYTHON, "train.py", "--device", "cuda", "--out-dir", os.path.join(r.work, "default"), *extra]
    status, out = r.run("5_default_run.txt", command, timeout)
    r.write(*_lines(out, ("device:", "model:", "step ", "done:", "stopped", "error")), *_status(status))


def _bench(r, log, timeout, *args):
    peak = ["--peak-size", "256"] if r.smoke else []
    status, out = r.run(log, [PYTHON, "bench/train_step.py", "--device", "cuda", "--vs-torch", *peak, *args], timeout)
    r.write(*_lines(out, BENCH_LINES), *_status(status))


def char_model(r, timeout):
    size = ["--n-layer", "2", "--n-embd", "32", "--block-size", "32"] if r.smoke else ["--n-layer", "6", "--n-embd",
                                                                                        "384", "--block-size", "256"]
    _bench(r, "6_bench_char.txt", timeout, "--n-head", "2" if r.smoke else "6", *size, "--vocab-size", "65",
           "--batch-size", "8" if r.smoke else "64", "--runs", "3" if r.smoke else "10")


def gpt2(r, timeout):
    size = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--vocab-size", "512"]
    _bench(r, "7_bench_gpt2.txt", timeout, "--preset", "gpt2", *(size if r.smoke else ["--block-size", "1024"]),
           "--batch-size", "4" if r.smoke else "16", "--runs", "3" if r.smoke else "10")


def largest_batch(r, timeout):
    size = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--vocab-size", "512",
            "--max-batch", "32"]
    _bench(r, "8_largest_batch.txt", timeout, "--largest-batch", "--preset", "gpt2",
           *(size if r.smoke else ["--block-size", "1024"]), "--batch-size", "4" if r.smoke else "16",
           "--runs", "2" if r.smoke else "5")


STEPS = [("machine", 20, machine), ("self-test", 90, selftest), ("GPU tests", 100, gpu_tests),
         ("resume", 45, resume), ("default run", 45, default_run), ("char model 6/6/384 vs PyTorch", 45, char_model),
         ("GPT-2 124M, T=1024, B=16 vs PyTorch", 75, gpt2), ("largest batch, each framework alone", 100, largest_batch)]


def _chosen(spec):
    """'1-3,6' -> {1, 2, 3, 6} (an argparse type: a bad list is argparse's one-line error)."""
    chosen = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        if not (low.isdigit() and (high.isdigit() or not high)):
            raise argparse.ArgumentTypeError(f"expects step numbers like 1-3,6, got {spec!r}")
        chosen.update(range(int(low), int(high or low) + 1))
    if not chosen <= set(range(1, len(STEPS) + 1)):
        raise argparse.ArgumentTypeError(f"the steps are 1 to {len(STEPS)}, got {spec!r}")
    return chosen


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench/gpu_report.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="directory for summary.txt and details.tar.gz")
    p.add_argument("--budget", type=float, default=450, help="seconds for the whole report (default: 450)")
    p.add_argument("--steps", type=_chosen, default=f"1-{len(STEPS)}",
                   help="which steps, e.g. 6-8 or 1,2,4 (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny models everywhere: the report's own test")
    args = p.parse_args(argv)
    r = Report(args.out, args.budget, args.smoke)

    def stopped(signum, frame):                      # the device session's own timeout, or Ctrl-C
        if r.current is not None:
            _kill_group(r.current)
        raise SystemExit(f"stopped by {signal.Signals(signum).name}")
    previous = {signum: signal.signal(signum, stopped) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    r.write(f"minigrad GPU report, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
            f"{' (smoke: tiny models)' if args.smoke else ''}; budget {args.budget:.0f} s")
    try:
        for number, (name, budget, step) in enumerate(STEPS, 1):
            if number not in args.steps:
                continue
            timeout = min(budget, r.left() - GRACE)
            if timeout < 5:
                r.write(f"== {number}. {name}: skipped, the report's budget is spent")
                continue
            r.write(f"== {number}. {name} (budget {timeout:.0f} s)")
            started = time.monotonic()
            try:
                step(r, timeout)
            except Exception as e:                       # one step's failure never ends the report
                r.write(f"step failed: {type(e).__name__}: {e}")
            except SystemExit as e:
                r.write(f"-- {number}. {name}: {e}")
                raise
            r.write(f"-- {number}. {name}: {time.monotonic() - started:.1f} s "
                    f"(report at {time.monotonic() - r.start:.0f} s)")
            r.archive()
    finally:
        r.write(f"== done in {time.monotonic() - r.start:.0f} s: {os.path.join(args.out, 'summary.txt')}, "
                "details.tar.gz")
        r.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
