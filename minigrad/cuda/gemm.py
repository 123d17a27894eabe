"""Matrix products on cuBLAS, called directly so that nothing is copied.

CuPy's matmul copies every non-contiguous operand of a batched product and ignores TF32
there. These calls take any operand whose last two axes are row-major or column-major
(a transposed view), batched over leading axes with one uniform stride, and accumulate
into `out` when beta = 1, as a gradient buffer needs.

cuBLAS is column-major: a row-major (M, N) matrix is its column-major transpose. So
out = a @ b is computed as out^T = b^T a^T, which cuBLAS sees as plain column-major
operands: no data moves, only the transpose flags and leading dimensions change.
"""
import cupy
import numpy as np
from cupy_backends.cuda.libs import cublas

ALLOW_TF32 = True                # float32 products on TF32 tensor cores; fast_ops(tf32=) sets it

CUDA_R = {np.dtype(np.float32): cupy.cuda.runtime.CUDA_R_32F, np.dtype(np.float64): cupy.cuda.runtime.CUDA_R_64F}


def compute_type(dtype, tf32=None):
    """cuBLAS compute type: TF32 tensor cores for float32 when allowed (tf32=None: ALLOW_TF32),
    else full precision."""
    if np.dtype(dtype) == np.float64:
        return cublas.CUBLAS_COMPUTE_64F
    if ALLOW_TF32 if tf32 is None else tf32:
        return cublas.CUBLAS_COMPUTE_32F_FAST_TF32
    return cublas.CUBLAS_COMPUTE_32F_PEDANTIC           # never TF32, whatever the handle's math mode


def _layout(matrix_strides, rows, cols, itemsize):
    """(transpose flag, leading dimension) of a (rows, cols) matrix as cuBLAS sees its
    column-major transpose; ValueError when neither layout fits (it would need a copy)."""
    s_row, s_col = (s // itemsize for s in matrix_strides)
    if (cols == 1 or s_col == 1) and (rows == 1 or s_row >= cols):
        return cublas.CUBLAS_OP_N, s_row if rows > 1 else max(cols, 1)   # row-major
    if (rows == 1 or s_row == 1) and (cols == 1 or s_col >= rows):
        return cublas.CUBLAS_OP_T, s_col if cols > 1 else max(rows, 1)   # column-major
    raise ValueError(f"gemm operand with strides {matrix_strides} is neither row- nor column-major")


def _batch_stride(x, batch):
    """The element stride between consecutive matrices of x (..., r, c), over `batch` of them."""
    lead = x.shape[:-2]
    if batch == 1 or not lead:
        return 0
    strides = [s // x.itemsize for s, n in zip(x.strides[:-2], lead) if n > 1]
    sizes = [n for n in lead if n > 1]
    for i in range(len(sizes) - 1):
        if strides[i] != strides[i + 1] * sizes[i + 1]:
            raise ValueError(f"gemm operand's batch axes {x.shape[:-2]} have no single stride")
    return strides[-1] if strides else 0


def gemm(a, b, out, alpha=1.0, beta=0.0, tf32=None):
    """out = alpha * a @ b + beta * out, batched over leading axes (a (..., M, K), b (..., K, N),
    out (..., M, N), leading axes equal or absent on a and b). out must not be a transposed
    view unless 2-D (then out^T = b^T a^T is computed instead)."""
    if out.ndim == 2 and out.strides[0] < out.strides[1] and out.shape[0] > 1:
        return gemm(b.T, a.T, out.T, alpha, beta, tf32)                  # column-major out
    M, N = out.shape[-2:]
    K = a.shape[-1]
    if a.shape[-2] != M or b.shape[-2] != K or b.shape[-1] != N or not (a.dtype == b.dtype == out.dtype):
        raise ValueError(f"gemm shapes {a.shape} @ {b.shape} -> {out.shape} or dtypes do not match")
    batch = int(np.prod(out.shape[:-2], dtype=np.int64))
    op_a, ld_a = _layout(a.strides[-2:], M, K, a.itemsize)
    op_b, ld_b = _layout(b.strides[-2:], K, N, b.itemsize)
    op_out, ld_out = _layout(out.strides[-2:], M, N, out.itemsize)
    if op_out != cublas.CUBLAS_OP_N:
        raise ValueError("a batched gemm's out must be row-major")
    scalar = np.float64 if a.dtype == np.float64 else np.float32
    alpha_host, beta_host = np.array(alpha, scalar), np.array(beta, scalar)   # host pointers
    dtype, compute = CUDA_R[a.dtype], compute_type(a.dtype, tf32)
    handle = cupy.cuda.device.get_cublas_handle()
    # out^T (N, M) = op(b^T) (N, K) @ op(a^T) (K, M), all column-major
    if batch == 1:
        cublas.gemmEx(handle, op_b, op_a, N, M, K, alpha_host.ctypes.data, b.data.ptr, dtype, ld_b,
                      a.data.ptr, dtype, ld_a, beta_host.ctypes.data, out.data.ptr, dtype, ld_out,
                      compute, cublas.CUBLAS_GEMM_DEFAULT)
    else:
        cublas.gemmStridedBatchedEx(
            handle, op_b, op_a, N, M, K, alpha_host.ctypes.data,
            b.data.ptr, dtype, ld_b, _batch_stride(b, batch),
            a.data.ptr, dtype, ld_a, _batch_stride(a, batch),
            beta_host.ctypes.data, out.data.ptr, dtype, ld_out, _batch_stride(out, batch),
            batch, compute, cublas.CUBLAS_GEMM_DEFAULT)
    return out
