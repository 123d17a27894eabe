"""Fake NCCL (cupy_backends.cuda.libs.nccl, which cupy.cuda.nccl star-imports): communicators
whose collectives run through MPI (mpi4py) on the host memory behind the fake device pointers.

A communicator spans MPI.COMM_WORLD: NcclCommunicator(ndev, commId, rank) needs ndev to be the
world's size and rank this process's MPI rank. It is made collectively, as ncclCommInitRank is:
the ranks must pass the same unique id (the bytes of get_unique_id(), which the caller hands
out, e.g. by an MPI broadcast), and each must sit on its own GPU (host, current device), else
NcclError NCCL_ERROR_INVALID_USAGE, NCCL's "Duplicate GPU detected". The collectives, for op
NCCL_SUM, with counts in elements of `datatype`:

    allReduce(send, recv, count, ...)          recv[i] = sum over ranks r of send_r[i], i < count
    reduceScatter(send, recv, recvcount, ...)  recv = sum over r of send_r[rank c : (rank + 1) c]
    allGather(send, recv, count, ...)          recv[r count : (r + 1) count] = send_r, every r

In place are recv == send (allReduce), recv == send + rank recvcount (reduceScatter) and send ==
recv + rank count (allGather), in elements; any other overlap of the two buffers is undefined
in NCCL and a ValueError here. So is what NCCL cannot see and would silently get wrong: a
pointer outside live device memory, a buffer shorter than the count, memory of another dtype
than `datatype`, misalignment, memory on another GPU than the communicator's. An argument NCCL
itself refuses (an unknown datatype or op, a destroyed communicator) raises NcclError; a real
op or datatype the stand-in lacks (all ops but NCCL_SUM; float16, bfloat16) NotImplementedError.

Each collective counts 1 launch and is logged (state.NcclCall, CUPY_STANDIN_NCCL_LOG).
"""
import itertools
import os
import socket

import numpy as np
from _standin import memory, state
from _standin.cublas import _int
from _standin.names import CONSTANTS, hidden, restrict

ENUM = CONSTANTS["cupy_backends.cuda.libs.nccl"]
UNIQUE_ID_BYTES = 128
VERSION = 22703           # NCCL 2.27.3, as ncclGetVersion encodes it
OPS = {ENUM[n] for n in ("NCCL_SUM", "NCCL_PROD", "NCCL_MAX", "NCCL_MIN", "NCCL_AVG")}
DATATYPES = {ENUM[n] for n in ("NCCL_INT8", "NCCL_UINT8", "NCCL_INT32", "NCCL_UINT32", "NCCL_INT64",
                               "NCCL_UINT64", "NCCL_FLOAT16", "NCCL_FLOAT32", "NCCL_FLOAT64",
                               "NCCL_BFLOAT16")}
DTYPES = {ENUM[n]: np.dtype(t) for n, t in (
    ("NCCL_INT8", np.int8), ("NCCL_UINT8", np.uint8), ("NCCL_INT32", np.int32),
    ("NCCL_UINT32", np.uint32), ("NCCL_INT64", np.int64), ("NCCL_UINT64", np.uint64),
    ("NCCL_FLOAT32", np.float32), ("NCCL_FLOAT64", np.float64))}   # MPI sums these natively
INVALID_ARGUMENT, INVALID_USAGE = 4, 5
ERRORS = {   # status -> (CuPy's name, ncclGetErrorString)
    INVALID_ARGUMENT: ("NCCL_ERROR_INVALID_ARGUMENT", "invalid argument (run with NCCL_DEBUG=WARN for details)"),
    INVALID_USAGE: ("NCCL_ERROR_INVALID_USAGE", "invalid usage (run with NCCL_DEBUG=WARN for details)"),
}
_handles = itertools.count(0x5800_0000, 0x100)   # fake ncclComm_t values


class NcclError(RuntimeError):

    def __init__(self, status):
        self.status = status
        name, text = ERRORS[status]
        super().__init__(f"{name}: {text}")

    def __reduce__(self):
        return type(self), (self.status,)


NcclError.__module__ = "cupy_backends.cuda.libs.nccl"


def check_status(status):
    if status != 0:
        raise NcclError(status)


def get_build_version():
    return VERSION


def get_version():
    return VERSION


def get_unique_id():
    """A fresh NCCL unique id: 128 bytes."""
    return os.urandom(UNIQUE_ID_BYTES)


class _Comm:
    """A communicator's state: mpi4py's MPI, its MPI communicator (None once destroyed), rank,
    size, GPU, fake ncclComm_t."""
    __slots__ = ("MPI", "mpi", "rank", "size", "device", "handle")


class NcclCommunicator:
    """An NCCL communicator of one GPU per process over MPI.COMM_WORLD (see the module)."""
    __slots__ = ("_comm",)

    def __init__(self, ndev, commId, rank, config=None):
        ndev, rank = _int(ndev, "ndev"), _int(rank, "rank")
        if not isinstance(commId, bytes):
            raise TypeError(f"Argument 'commId' has incorrect type (expected bytes, got {type(commId).__name__})")
        if len(commId) != UNIQUE_ID_BYTES:
            raise ValueError(f"commId length {len(commId)} != {UNIQUE_ID_BYTES}.")
        if config is not None:
            raise NotImplementedError("cupy stand-in: NcclCommunicator(config=) is not implemented")
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError("cupy stand-in: NcclCommunicator runs its collectives through MPI and needs "
                              "mpi4py (pip install mpi4py)") from None
        world, device = MPI.COMM_WORLD, state.current_device()
        # Every rank sees what every rank passed, so all of them raise, or none does.
        everyone = world.allgather((ndev, rank, commId, socket.gethostname(), device))
        _check_members(everyone, world.Get_size())
        comm = _Comm()
        comm.MPI, comm.mpi, comm.rank, comm.size, comm.device = MPI, world.Dup(), rank, ndev, device
        comm.handle = next(_handles)
        _set_comm(self, comm)

    @property
    def comm(self):
        return _live(self).handle

    def device_id(self):
        return _live(self).device

    def rank_id(self):
        return _live(self).rank

    def size(self):
        return _live(self).size

    def destroy(self):
        """Drops the communicator (locally, as ncclCommDestroy: no MPI call that could wait)."""
        _get_comm(self).mpi = None

    abort = destroy

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        comm, dtype, count, sendbuf, recvbuf = _collective(self, sendbuf, recvbuf, count, datatype, op, stream)
        send, recv = _buffers(comm, "allReduce", sendbuf, count, recvbuf, count, dtype, in_place=("recv", sendbuf))
        _run(comm, "allReduce", count, dtype, comm.mpi.Allreduce,
             comm.MPI.IN_PLACE if sendbuf == recvbuf else send, recv, op=comm.MPI.SUM)

    def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
        comm, dtype, count, sendbuf, recvbuf = _collective(self, sendbuf, recvbuf, recvcount, datatype, op, stream)
        at = sendbuf + comm.rank * count * dtype.itemsize
        send, recv = _buffers(comm, "reduceScatter", sendbuf, comm.size * count, recvbuf, count, dtype,
                              in_place=("recv", at))
        _run(comm, "reduceScatter", count, dtype, comm.mpi.Reduce_scatter_block,
             send.copy() if recvbuf == at else send, recv, op=comm.MPI.SUM)

    def allGather(self, sendbuf, recvbuf, count, datatype, stream):
        comm, dtype, count, sendbuf, recvbuf = _collective(self, sendbuf, recvbuf, count, datatype, None, stream)
        at = recvbuf + comm.rank * count * dtype.itemsize
        send, recv = _buffers(comm, "allGather", sendbuf, count, recvbuf, comm.size * count, dtype,
                              in_place=("send", at))
        _run(comm, "allGather", count, dtype, comm.mpi.Allgather, comm.MPI.IN_PLACE if sendbuf == at else send, recv)


_get_comm, _set_comm = hidden(NcclCommunicator, "_comm")
restrict(NcclCommunicator, "cupy.cuda.nccl.NcclCommunicator", module="cupy_backends.cuda.libs.nccl")


def _check_members(everyone, world_size):
    """Refuses a communicator the ranks' (ndev, rank, commId, host, device) cannot form."""
    for mpi_rank, (ndev, rank, commId, _, _) in enumerate(everyone):
        if ndev != world_size or rank != mpi_rank:
            raise ValueError(f"cupy stand-in: MPI rank {mpi_rank} made NcclCommunicator(ndev={ndev}, rank={rank}) "
                             f"in an MPI world of {world_size}: the stand-in's communicators span "
                             "MPI.COMM_WORLD, with NCCL rank = MPI rank")
        if commId != everyone[0][2]:
            raise ValueError(f"cupy stand-in: MPI rank {mpi_rank} passed another unique id than rank 0 "
                             "(real NCCL would wait for ranks that never come)")
    gpus = [(host, device) for *_, host, device in everyone]
    for rank, gpu in enumerate(gpus):
        if gpus.index(gpu) != rank:
            raise NcclError(INVALID_USAGE)     # NCCL: "Duplicate GPU detected: rank r and rank s both on ..."


def _live(communicator):
    comm = _get_comm(communicator)
    if comm.mpi is None:
        raise NcclError(INVALID_ARGUMENT)      # NCCL: "comm argument is NULL"
    return comm


def _collective(communicator, sendbuf, recvbuf, count, datatype, op, stream):
    """(the live communicator, the dtype of `datatype`, count, sendbuf, recvbuf), the arguments
    converted as Cython does and checked as NCCL does (op None: a collective without one)."""
    comm = _live(communicator)
    sendbuf, recvbuf, count = _int(sendbuf, "sendbuf", 64), _int(recvbuf, "recvbuf", 64), _int(count, "count", 64)
    datatype, op = _int(datatype, "datatype"), ENUM["NCCL_SUM"] if op is None else _int(op, "op")
    _int(stream, "stream", 64)
    if count < 0:
        raise OverflowError("can't convert negative value to size_t")
    if datatype not in DATATYPES or op not in OPS:
        raise NcclError(INVALID_ARGUMENT)
    if op != ENUM["NCCL_SUM"]:
        raise NotImplementedError(f"cupy stand-in: NCCL op {op} is not implemented (only NCCL_SUM)")
    if datatype not in DTYPES:
        raise NotImplementedError(f"cupy stand-in: NCCL datatype {datatype} is not implemented")
    return comm, DTYPES[datatype], count, sendbuf, recvbuf


def _buffers(comm, function, sendbuf, send_count, recvbuf, recv_count, dtype, in_place):
    """(send, recv) NumPy views of the two buffers, checked; they may overlap only in NCCL's
    in-place form of `function`, in_place = ("recv" or "send", where that buffer then starts)."""
    send = _view(comm, f"{function} sendbuf", sendbuf, dtype, send_count)
    recv = _view(comm, f"{function} recvbuf", recvbuf, dtype, recv_count)
    size, (which, at) = dtype.itemsize, in_place
    overlap = sendbuf < recvbuf + recv_count * size and recvbuf < sendbuf + send_count * size
    if overlap and (recvbuf if which == "recv" else sendbuf) != at:
        raise ValueError(f"cupy stand-in: {function}'s send and receive buffers overlap, and not in NCCL's "
                         f"in-place form ({which}buf at {at:#x}): the result is undefined")
    return send, recv


def _view(comm, name, ptr, dtype, count):
    """The (count,) view of device memory at `ptr`, after the checks NCCL cannot make."""
    try:
        alloc, offset = memory.resolve(ptr)
    except ValueError:
        raise ValueError(f"cupy stand-in: NCCL {name} ({ptr:#x}) is not a pointer into live device memory") from None
    held = alloc.get_root().dtype
    if held != dtype:
        raise ValueError(f"cupy stand-in: NCCL {name} points into {held} memory but the call treats it as {dtype}")
    if offset % dtype.itemsize:
        raise ValueError(f"cupy stand-in: NCCL {name} ({ptr:#x}) is not aligned to its {dtype.itemsize}-byte elements")
    if offset + count * dtype.itemsize > alloc.nbytes:
        raise ValueError(f"cupy stand-in: NCCL {name} out of bounds: {count} elements from byte {offset} of a "
                         f"{alloc.nbytes}-byte allocation")
    if alloc.device_id != comm.device:
        raise ValueError(f"cupy stand-in: NCCL {name} is memory on GPU {alloc.device_id}, the communicator's "
                         f"GPU is {comm.device}")
    return memory.buffer_view(alloc, dtype, offset, (count,), (dtype.itemsize,))


def _run(comm, function, count, dtype, mpi_call, *args, **kwargs):
    state.record_nccl(function, count, dtype, comm.rank)
    mpi_call(*args, **kwargs)


TABLE = {**ENUM, "available": True, "NcclError": NcclError, "NcclCommunicator": NcclCommunicator,
         **{f.__name__: f for f in (check_status, get_build_version, get_version, get_unique_id)}}
