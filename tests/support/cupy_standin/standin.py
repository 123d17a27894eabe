"""Test-facing API of the CuPy stand-in (not part of the fake `cupy` namespace).

With tests/support/cupy_standin first on sys.path, `import cupy` gets a strict, NumPy-backed CuPy on a
fake machine of one H200 (CUPY_STANDIN_GPUS=n: n of them, for one process per GPU under mpirun),
with NCCL communicators whose collectives run through MPI (`from cupy.cuda import nccl`, needs
mpi4py), and `import standin` this module:

    counts            global Counts since import or reset() (totals, kernels, gemm_log; by_site
                      stays empty: sites are looked up only inside counting())
    counting()        context manager yielding a fresh Counts of what runs inside it (nested
                      contexts all count), with by_site {"path:line": {kind: n}} at the first
                      frame outside the stand-in
    reset()           zero the global counts
    Counts            .launches .syncs .h2d .d2h (ints), .by_site, .kernels (Counter of custom
                      kernel launches by twin name), .gemm_log (list of GemmCall), .nccl_log
                      (list of NcclCall), .as_dict()
    GemmCall          (function, m, n, k, batch, compute_type, site) of one cuBLAS GEMM call
    NcclCall          (function, count, dtype, rank, site) of one NCCL collective; with
                      CUPY_STANDIN_NCCL_LOG=path every process also appends each as a JSON line
                      (plus "callers": the qualified names of the calling functions) to path
    TWINS             {kernel base name: NumPy twin}, filled from twins.py (if present) on first
                      use; tests may add entries. Calling conventions: see _standin/kernels.py
    fail_compile(name=None)   the next compilation of kernel `name` (None: any) raises
                      cupy.cuda.compiler.CompileException
    clear_compile_failures()  drop pending injected failures
    set_memory_limit(nbytes)  device memory size (None: 141 GB); allocating past it raises
                      cupy.cuda.memory.OutOfMemoryError
    live_bytes()      bytes of fake device memory alive now
    device_pointer_info(ptr)  (base numpy array, byte offset) behind a device address
"""
import contextlib

from _standin import memory, state
from _standin.state import TWINS, Counts, GemmCall, NcclCall, fail_compile, reset

counts = state.counts
clear_compile_failures = state.clear_failures


@contextlib.contextmanager
def counting():
    """Counts what runs inside the block: `with standin.counting() as c: ...; c.launches`."""
    c = Counts()
    state.active.append(c)
    try:
        yield c
    finally:
        state.active.remove(c)


def set_memory_limit(nbytes):
    """Makes the fake device `nbytes` large (None: back to 141 GB). An allocation that would
    bring live device memory past it raises cupy.cuda.memory.OutOfMemoryError."""
    memory.device_limit = None if nbytes is None else int(nbytes)


def live_bytes():
    """Bytes of fake device memory held by live arrays."""
    return memory.live_bytes


def device_pointer_info(ptr):
    """(the NumPy array owning the memory at device address `ptr`, byte offset into it)."""
    alloc, offset = memory.resolve(ptr)
    return alloc.get_root(), offset


state.load_twins()

__all__ = ["Counts", "GemmCall", "NcclCall", "TWINS", "clear_compile_failures", "counting", "counts",
           "device_pointer_info", "fail_compile", "live_bytes", "reset", "set_memory_limit"]
