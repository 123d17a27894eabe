"""The one place that chooses between NumPy (CPU) and CuPy (CUDA GPU).

Layer code never imports numpy or cupy: it asks `get_array_module(x)` for the module its
inputs live in and calls `xp.<function>` on it, so the same code runs on both devices.
CuPy stays optional: nothing here imports it unless CUDA is asked for or probed.
"""
import ctypes
import os
import sys

import numpy as np

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": np.float32, "float64": np.float64}


class DeviceError(RuntimeError):
    """The requested device cannot be used (no CuPy, no GPU, unknown name)."""


def get_array_module(x):
    """numpy or cupy, whichever `x` belongs to. Never imports cupy on its own."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def _probe_cuda():
    """(True, None) when CuPy imports and a CUDA device answers, else (False, why)."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install cupy-cuda12x)"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy found no CUDA device"
        cupy.zeros(1).sum().item()  # a device that enumerates but cannot run fails here
    except Exception as e:  # CUDA reports a missing driver in several exception types
        return False, f"CuPy cannot use a CUDA device ({str(e).splitlines()[0]})"
    return True, None


def resolve_device(device):
    """'auto' -> 'cuda' when usable else 'cpu'; 'cuda' without a GPU raises DeviceError."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    ok, why = _probe_cuda()
    if device == "cuda" and not ok:
        raise DeviceError(f"--device cuda is not available: {why}; use --device cpu")
    return "cuda" if ok else "cpu"


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    By default glibc serves every block over 128 KiB-32 MiB with its own mmap and unmaps it on
    free, so each large temporary of a training step (activations, their gradients) is
    page-faulted in afresh, every step; that costs more than the arithmetic done on it.
    With mmap off and trimming off, freed blocks stay in the heap and the next step's
    temporaries of the same sizes reuse them. No effect (and no error) off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):
        pass


def _gib(n):
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


OUT_OF_MEMORY_WORDS = ("OutOfMemoryError", "ALLOC_FAILED", "out of memory", "CUDA_ERROR_OUT_OF_MEMORY",
                       "cudaErrorMemoryAllocation")


def is_out_of_memory(error):
    """Whether an exception says that memory ran out: NumPy's or CuPy's MemoryError, a cuBLAS
    allocation failure (CUBLAS_STATUS_ALLOC_FAILED), a CUDA runtime or driver out-of-memory
    error, PyTorch's OutOfMemoryError."""
    text = f"{type(error).__name__}: {error}"
    return isinstance(error, MemoryError) or any(words in text for words in OUT_OF_MEMORY_WORDS)


def out_of_memory_message(error):
    """One line for a MemoryError of NumPy or CuPy: what the failed allocation asked for
    and how much memory the device has."""
    asked = getattr(error, "_size", None) or getattr(error, "_total_size", None)   # CuPy's, NumPy's
    what = f"an allocation of {_gib(asked)} failed" if asked else "an allocation failed"
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(error, cupy.cuda.memory.OutOfMemoryError):
        _, total = cupy.cuda.runtime.memGetInfo()
        held = cupy.get_default_memory_pool().total_bytes()
        return f"the GPU ran out of memory: {what}, with {_gib(held)} of its {_gib(total)} held by this run"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return f"out of memory: {what}; this machine has {_gib(total)}"
    except (ValueError, OSError, AttributeError):
        return f"out of memory: {what}"


class Backend:
    """An array module plus the handful of device operations the trainer needs.

    name: 'cpu' or 'cuda'; xp: numpy or cupy; dtype: the training float type.
    """

    def __init__(self, device="auto", dtype="float32"):
        if dtype not in DTYPES:
            raise DeviceError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.name = resolve_device(device)
        self.dtype = DTYPES[dtype]
        if self.name == "cuda":
            import cupy
            self.xp = cupy
        else:
            self.xp = np
            keep_freed_memory()

    def __repr__(self):
        return f"Backend({self.name}, {np.dtype(self.dtype).name})"

    def asarray(self, x, dtype=None):
        """Host or device data -> an array on this backend (float data gets `dtype`)."""
        return self.xp.asarray(x, dtype=dtype)

    def to_host(self, x):
        """Any array -> numpy.ndarray on the host (no copy when it already is one)."""
        if self.xp is np:
            return np.asarray(x)
        return self.xp.asnumpy(x)

    def synchronize(self):
        """Wait for queued device work (a no-op on CPU); needed for honest timing."""
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()
