"""The CUDA source of minigrad's kernels (minigrad/cuda/src/*.cu), as one compilation unit.

The .cu files are concatenated in SOURCES order (common.cuh first). Kernels declared as
`template <typename T> __global__` are instantiated for float and double. This module
imports no CuPy, so tests can compile the source with NVRTC on machines without a GPU.
"""
import functools
import pathlib
import re

SOURCE_DIR = pathlib.Path(__file__).parent / "src"
SOURCES = ("common.cuh", "elementwise.cu", "layernorm.cu", "attention.cu", "crossentropy.cu", "embedding.cu",
           "optim.cu")
OPTIONS = ("-std=c++17",)


@functools.cache
def source():
    """The whole CUDA source, as compiled."""
    return "\n".join((SOURCE_DIR / name).read_text() for name in SOURCES)


@functools.cache
def templated_kernels():
    """Names of the kernels that are templates over the float type."""
    return tuple(re.findall(r"template <typename T>\s*__global__ void (\w+)", source()))


def plain_kernels():
    """Names of the extern "C" kernels (no template)."""
    return tuple(re.findall(r'extern "C" __global__ void (\w+)', source()))
