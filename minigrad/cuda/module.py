"""Launching minigrad's CUDA kernels: one CuPy RawModule per float type.

CuPy compiles the source (sources.py) with NVRTC on first use and caches the binary on
disk. Launch arguments are CuPy arrays (C-contiguous: a kernel sees a raw pointer) and
NumPy scalars of the exact C type of the parameter (i32, i64, u32, or the dtype's own).
"""
import functools

import cupy
import numpy as np

from .sources import OPTIONS, source, templated_kernels

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
BLOCK = 256                      # threads per block of the one-thread-per-element kernels

i32, i64, u32 = np.int32, np.int64, np.uint32


@functools.cache
def _module(c_type):
    names = [f"{name}<{c_type}>" for name in templated_kernels()]
    return cupy.RawModule(code=source(), options=OPTIONS, name_expressions=names)


@functools.cache
def kernel(name, dtype):
    """The compiled kernel `name` for float type `dtype` (raises CuPy's CompileException)."""
    c_type = C_TYPES[np.dtype(dtype)]
    return _module(c_type).get_function(f"{name}<{c_type}>" if name in templated_kernels() else name)


def launch(name, dtype, grid, block, *args):
    """Run kernel `name` on a 1-D grid of `grid` blocks of `block` threads."""
    kernel(name, dtype)((int(grid),), (int(block),), args)


def launch_elementwise(name, dtype, n, *args):
    """Run a one-thread-per-element kernel over n elements."""
    launch(name, dtype, (n + BLOCK - 1) // BLOCK, BLOCK, *args)


def real(dtype, value):
    """A host scalar of the float type `dtype`, as a kernel's T parameter takes it."""
    return np.dtype(dtype).type(value)
