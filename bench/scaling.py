"""Data-parallel scaling: tokens/s of train.py on 1 and 2 MPI ranks, against one process using
its in-machine worker processes, run for run on this machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/scaling.py
    python bench/scaling.py --preset small --batch-size 16 --steps 40 --repeats 3

Each configuration is a real `train.py` run (no sampling, no evaluation until the end) of the
same model and global batch; its tokens/s is taken from the loss curve the checkpoint holds:
the tokens of the steps after the first --warmup ones over the training seconds they took. The
configurations run in turn, --repeats times, and the table gives medians:

    1 process, 1 worker      the serial baseline
    1 process, N workers     the forked in-machine workers (gpt/parallel.py), N = the cores
    mpirun -np 1             one MPI rank with 1 worker: what MPI itself costs
    mpirun -np N             N ranks with 1 worker each: the all-reduce path

efficiency = tokens/s on N ranks / (N x tokens/s on 1 rank). The BLAS kernel that NumPy uses
is printed (threadpoolctl), since a machine's OpenBLAS settings change every figure.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bpe.corpus import available_cores  # noqa: E402
from gpt.files.checkpoint import load_checkpoint  # noqa: E402

# Open MPI refuses to run as root (containers) unless told that it is meant.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def tokens_per_second(out_dir, warmup):
    history = load_checkpoint(os.path.join(out_dir, "ckpt.npz"), moments=False).history
    first, last = history[warmup - 1], history[-1]
    return (last["tokens"] - first["tokens"]) / (last["elapsed"] - first["elapsed"])


def run(label, launcher, flags, scratch):
    out = os.path.join(scratch, label.replace(" ", "_").replace(",", ""))
    shutil.rmtree(out, ignore_errors=True)
    command = [*launcher, sys.executable, os.path.join(ROOT, "train.py"), *flags, "--out-dir", out]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **MPI_ENV})
    if result.returncode != 0:
        sys.exit(f"{label} failed:\n{result.stderr[-2000:]}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="mini")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the rate (start-up, first allocations)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ranks", type=int, default=available_cores())
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if mpirun is None:
        sys.exit("needs mpirun: pip install -e '.[mpi]'")
    from threadpoolctl import threadpool_info
    blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads")) for i in threadpool_info()]
    print(f"BLAS: {blas}; cores: {available_cores()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    n = args.ranks
    flags = ["--preset", args.preset, "--batch-size", str(args.batch_size), "--block-size", str(args.block_size),
             "--max-steps", str(args.steps), "--eval-interval", str(args.steps), "--eval-steps", "1",
             "--sample-tokens", "0", "--log-interval", "1"]
    configs = {"1 process, 1 worker": ([], ["--workers", "1"]),
               f"1 process, {n} workers": ([], ["--workers", str(n)]),
               "mpirun -np 1": ([mpirun, "-np", "1"], ["--workers", "1"]),
               f"mpirun -np {n}": ([mpirun, "-np", str(n)], ["--workers", "1"])}
    rates = {label: [] for label in configs}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for label, (launcher, extra) in configs.items():
                out = run(label, launcher, flags + extra, scratch)
                rates[label].append(tokens_per_second(out, args.warmup))
    medians = {label: statistics.median(r) for label, r in rates.items()}
    one_rank, n_ranks, workers = medians["mpirun -np 1"], medians[f"mpirun -np {n}"], medians[f"1 process, {n} workers"]
    print(f"\n{args.preset}, {args.batch_size} x {args.block_size} tokens per step, {args.steps} steps, "
          f"median of {args.repeats}")
    print(f"{'configuration':<24} {'tokens/s':>10}   runs")
    for label, value in medians.items():
        print(f"{label:<24} {value:>10,.0f}   {', '.join(f'{r:,.0f}' for r in rates[label])}")
    print(f"\nefficiency of {n} ranks: {n_ranks / (n * one_rank):.2f}; "
          f"{n} ranks / {n} in-machine workers: {n_ranks / workers:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rates": rates, "medians": medians}, f, indent=1)


if __name__ == "__main__":
    main()
