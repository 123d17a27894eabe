"""Shared by the tests of train.py under mpirun: where mpirun is, the environment it needs,
a tiny run's flags, running it, and a run's final state."""
import os
import shutil
import subprocess
import sys

from runs import ROOT

from gpt.files.checkpoint import load_checkpoint

MPIRUN = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
try:
    import mpi4py  # noqa: F401
except ImportError:
    mpi4py = None
NEEDS_MPI = dict(condition=MPIRUN is None or mpi4py is None, reason="needs mpirun and mpi4py: pip install -e '.[mpi]'")

# Tiny float64 runs; one worker process per rank, so two ranks use the two cores.
RUN = ["--preset", "tiny", "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--batch-size", "6",
       "--sample-tokens", "0", "--eval-steps", "2", "--log-interval", "1", "--warmup-steps", "2",
       "--workers", "1", "--eval-interval", "2"]
# Open MPI refuses to run as root (containers, CI) unless told that it is meant.
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")


def mpirun(n, *args, timeout=180):
    return subprocess.run([MPIRUN, "-np", str(n), sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=MPI_ENV)


def final(out):
    c = load_checkpoint(str(out / "ckpt.npz"))
    return c.meta["step"], c.arrays, [r["train_loss"] for r in c.history], [r["val_loss"] for r in c.history]
