"""Fused CuPy kernels for the CUDA path, with the reference signatures.

This is where the CUDA kernels go (RawKernel / ElementwiseKernel / ReductionKernel), each
held to its reference pair by tests. None is written yet, so `minigrad.kernels("cuda",
"fast")` is the reference set, which runs on CuPy as it is.
"""

OPS = {}
