"""Data parallelism across processes and machines: MPI (mpi4py) between ranks, NCCL on GPUs.

    mpirun -np 4 python train.py ...          # or srun --mpi=pmix, or mpirun --hostfile hosts

Every rank holds the whole model and reads the same batches (they are a pure function of
(seed, step, micro-step)); rank r trains its share of each batch's B rows, the rows
[r B / N, (r + 1) B / N) (its CPU worker processes split that share further). With n_r rows on
rank r, the single-process loss is

    loss = sum_r (n_r / B) loss_r,   so   d loss / d params = sum_r (n_r / B) d loss_r / d params,

which each rank's backward(dloss * n_r / B) computes its term of; one all-reduce (a sum) over
the flat gradient buffer then gives every rank the single-process gradient, and every rank
takes the same AdamW step. On the CPU the all-reduce is MPI's Allreduce on the NumPy buffer; on
GPUs it is NCCL's allReduce on the CuPy buffer (one rank per GPU), with the NCCL unique id
handed out over MPI. The losses are summed the same way, and so is a stop flag each step, so
that a signal to any rank stops every rank after the same step.

How the gradient is summed, and ZeRO stage 1 (`--zero 1`), is gpt.parallel.sync.

Without mpirun (no launcher variables in the environment), `world()` is `Solo`: one rank, every
collective a no-op, and mpi4py is never imported.
"""
import os
import socket
import sys

import numpy as np

from ..errors import UsageError, UserError

# Set by the launchers in every rank's environment: Open MPI, MPICH / Intel MPI (Hydra), Slurm.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")


def launched_size():
    """The number of ranks a launcher started, from the environment (1 when none did)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


class AllRanksError(UserError):
    """An error every rank raises at the same point, after a collective (so no rank is left
    waiting in one): rank 0 prints it, and every rank exits. Any other error on a rank ends
    the whole job through MPI_Abort (run_on_every_rank), since the others would wait for it forever."""


class Solo:
    """One process: rank 0 of 1, every collective a no-op."""
    rank, size, local_size = 0, 1, 1
    host = "localhost"

    def rows(self, n):
        """This rank's rows of n: [r n / N, (r + 1) n / N)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def allreduce(self, array):
        """Sum `array` over the ranks, in place (a flat host or device array) -> array."""
        return array

    def max_int(self, value):
        return value

    def allgather(self, obj):
        return [obj]

    def bcast(self, obj):
        return obj

    def use_gpu(self):
        """Make this rank's GPU the current device (one rank per GPU)."""

    def abort(self, status):
        """End every rank at once (after this rank's error), with `status`."""

    def reduce_scatter(self, full, shard, counts):
        """shard := this rank's slice of the sum over the ranks of `full` (slices of `counts`)."""
        shard[...] = full

    def allgather_slices(self, full, counts):
        """Every rank's slice of `full` (in place) from the rank that owns it."""

    def gather_slices(self, shard, counts):
        """The ranks' host slices -> the whole array on rank 0 (None on the others)."""
        return shard


class MPIWorld(Solo):
    """The ranks of MPI.COMM_WORLD. Host arrays are summed with MPI; device (CuPy) arrays with
    NCCL, through a communicator made on first use."""

    def __init__(self, MPI):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.host = socket.gethostname()
        self._nccl = None

    def allreduce(self, array):
        if isinstance(array, np.ndarray):
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        else:
            self.nccl().allreduce(array)
        return array

    def max_int(self, value):
        return self.comm.allreduce(int(value), op=self.MPI.MAX)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def reduce_scatter(self, full, shard, counts):
        if isinstance(full, np.ndarray):
            self.comm.Reduce_scatter(full, shard, recvcounts=counts, op=self.MPI.SUM)
        else:
            self.nccl().reduce_scatter(full, shard, counts)

    def allgather_slices(self, full, counts):
        if isinstance(full, np.ndarray):
            self.comm.Allgatherv(self.MPI.IN_PLACE, [full, (counts, _offsets(counts))])
        else:
            self.nccl().allgather(full, counts)

    def gather_slices(self, shard, counts):
        full = np.empty(sum(counts), shard.dtype) if self.rank == 0 else None
        self.comm.Gatherv(shard, [full, (counts, _offsets(counts))] if self.rank == 0 else None, root=0)
        return full

    def abort(self, status):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(status)

    def use_gpu(self):
        """GPU `local rank` of this machine, before anything touches a GPU: NCCL needs one rank
        per GPU. Nothing when CuPy or a GPU is missing (the backend then says so, or runs on
        the CPU for --device auto)."""
        try:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:                           # no CuPy, no driver, no device: not ours to judge
            return
        if self.local_size > count:
            raise UsageError(f"{self.local_size} ranks on {self.host}, which has {count} GPU(s); start one rank "
                             f"per GPU (mpirun -np {count} per machine, or --device cpu)")
        cupy.cuda.Device(self.local_rank).use()

    def nccl(self):
        if self._nccl is None:
            self._nccl = NCCLSum(self)
        return self._nccl


class NCCLSum:
    """NCCL all-reduce (sum) of CuPy arrays, in place, on the current stream: one rank per GPU
    (the rank's GPU is its local rank). Rank 0 makes the unique id; MPI broadcasts it."""

    def __init__(self, world):
        import cupy
        from cupy.cuda import nccl
        if not nccl.available:
            raise UsageError("NCCL is not available to CuPy (it needs libnccl): pip install nvidia-nccl-cu12, "
                             "or train with --device cpu")
        self.cupy, self.nccl = cupy, nccl
        self.rank = world.rank
        uid = world.bcast(nccl.get_unique_id() if world.rank == 0 else None)
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)
        self.types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def allreduce(self, array):
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self.types[array.dtype],
                            self.nccl.NCCL_SUM, self._stream())

    def reduce_scatter(self, full, shard, counts):
        """NCCL's reduce-scatter takes equal slices: the buffer goes through a padded copy."""
        padded = self._padded(full, counts)
        out = self.cupy.empty(counts[0], full.dtype)
        self.comm.reduceScatter(padded.data.ptr, out.data.ptr, counts[0], self.types[full.dtype],
                                self.nccl.NCCL_SUM, self._stream())
        shard[...] = out[:shard.size]

    def allgather(self, full, counts):
        padded = self._padded(full, counts)
        rank_slice = padded[self.rank * counts[0]:(self.rank + 1) * counts[0]]
        self.comm.allGather(rank_slice.data.ptr, padded.data.ptr, counts[0], self.types[full.dtype], self._stream())
        if padded is not full:
            full[...] = padded[:full.size]

    def _padded(self, full, counts):
        """full (n,) as equal slices of counts[0]: itself when n splits evenly, else a copy
        padded with zeros."""
        if full.size == len(counts) * counts[0]:
            return full
        padded = self.cupy.zeros(len(counts) * counts[0], full.dtype)
        padded[:full.size] = full
        return padded

    def _stream(self):
        return self.cupy.cuda.get_current_stream().ptr


def _offsets(counts):
    return [sum(counts[:r]) for r in range(len(counts))]


def world():
    """The ranks this process is one of: MPIWorld under a launcher, else Solo."""
    size = launched_size()
    if size == 1:
        return Solo()
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError(f"train.py was started as {size} ranks (mpirun or srun) but mpi4py is not installed; "
                         "install it with: pip install -e '.[mpi]'") from None
    except (RuntimeError, OSError) as e:                # mpi4py without a loadable MPI library
        raise UsageError(f"mpi4py cannot load an MPI library ({str(e)[:80]}); reinstall with "
                         "pip install -e '.[mpi]', or point mpi4py at the system MPI") from None
    found = MPIWorld(MPI)
    if found.size != size:
        raise UsageError(f"the launcher started {size} ranks but MPI sees {found.size}: each one is alone; "
                         "with Slurm use srun --mpi=pmix (see srun --mpi=list), or mpirun")
    return found


def collectively(world, step):
    """step() on every rank -> its result; if it raised a UserError on any rank, every rank
    raises AllRanksError with the first failing rank's message (a setup error on one node, like
    data missing there, then ends every rank with one line instead of leaving them waiting).
    step() must make no collective call itself."""
    try:
        result, error = step(), None
    except UserError as e:
        result, error = None, e
    if world.size == 1:
        if error is not None:
            raise error
        return result
    for rank, message in enumerate(world.allgather(None if error is None else str(error))):
        if message is not None:
            raise AllRanksError(message if rank == 0 else f"rank {rank}: {message}") from None
    return result


def check_agreement(world, facts):
    """AllRanksError on every rank unless all ranks have the same `facts` (a JSON-able dict:
    options, data, seed), naming the first rank and fact that differ from rank 0's."""
    everyone = world.allgather(facts)
    for rank, theirs in enumerate(everyone):
        for key, value in everyone[0].items():
            if theirs.get(key) != value:
                raise AllRanksError(f"the ranks disagree: rank {rank} has {key} = {theirs.get(key)!r}, rank 0 has "
                                    f"{value!r}; start every rank with the same command, files and data")


class EndedAlone(Exception):
    """This rank's run ended on its own (a second signal, Ctrl-C outside the loop): under mpirun
    the other ranks must be ended too (MPI_Abort); code is the exit status."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def run_on_every_rank(body, run_main, ends_together=(), **run_main_options):
    """The exit protocol of a command under mpirun: body(world) -> exit status, run on this
    rank through run_main (gpt.run.cli: one line for a UserError) -> this rank's exit status.

    Errors in `ends_together` (and AllRanksError) are raised alike on every rank: rank 0 says
    them, the others end quietly with 2. Any other UserError is this rank's alone and names it.
    A rank that ends alone, with an error or an EndedAlone, calls MPI_Abort: the other ranks
    would otherwise wait for it in their next collective forever."""
    ranks = []                # the world, once found
    together = []             # true once every rank is known to end the same way

    def this_rank():
        world_ = world()
        ranks.append(world_)
        if world_.rank != 0:
            sys.stdout = open(os.devnull, "w")  # rank 0 prints; the others print only their own errors
        try:
            status = body(world_)
        except EndedAlone as e:
            return e.code
        except (AllRanksError, *ends_together):
            together.append(True)
            if world_.rank == 0:
                raise
            return 2
        except UserError as e:
            if world_.rank == 0:
                raise
            raise UserError(f"rank {world_.rank} on {world_.host}: {e}") from None
        together.append(True)                    # the loop's stops are collective decisions
        return status

    status = run_main(this_rank, **run_main_options)
    if ranks and ranks[0].size > 1 and status != 0 and not together:
        ranks[0].abort(status)                   # this rank alone failed: the others would wait for it
    return status
