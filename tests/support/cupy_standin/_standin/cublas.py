"""Fake cuBLAS (cupy_backends.cuda.libs.cublas): handles, modes and the GEMMs, computed by NumPy
on the fake device memory that the pointers address.

GEMM semantics are cuBLAS's: column-major matrices, C = alpha op(A) op(B) + beta C, where A, B, C
are device pointers resolved through the allocation registry and alpha, beta are host pointers
(read with ctypes) in CUBLAS_POINTER_MODE_HOST or device pointers in _DEVICE. What cuBLAS itself
reports (bad sizes or leading dimensions, unsupported type combinations) raises CUBLASError with
its status; what it cannot see and would silently get wrong (a pointer outside live memory, an
access past an allocation's end, memory of another dtype, misalignment, an output overlapping an
input, a host pointer where a device one belongs) raises ValueError.

Each call counts 1 launch and is logged (state.GemmCall) with its computeType.

Reduced-precision compute types round the operands A and B as tensor cores do, so that CI sees
what a GPU computes: CUBLAS_COMPUTE_32F_FAST_TF32 (or CUBLAS_COMPUTE_32F under the handle's
CUBLAS_TF32_TENSOR_OP_MATH) to TF32, _FAST_16BF to bfloat16 and _FAST_16F to float16; the
products are then summed in float32. _PEDANTIC never rounds.
"""
import ctypes
import itertools
import operator

import numpy as np
from _standin import memory, state
from _standin.array import extent
from _standin.names import CONSTANTS

ENUM = CONSTANTS["cupy_backends.cuda.libs.cublas"]
R = CONSTANTS["cupy.cuda.runtime"]
STATUS = {1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
          7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH",
          11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED",
          14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
          16: "CUBLAS_STATUS_LICENSE_ERROR"}
NOT_INITIALIZED, INVALID_VALUE, NOT_SUPPORTED = 1, 7, 15
DATA_TYPES = {R["CUDA_R_32F"]: np.dtype(np.float32), R["CUDA_R_64F"]: np.dtype(np.float64),
              R["CUDA_R_16F"]: np.dtype(np.float16)}
_F32_COMPUTE = {ENUM[n] for n in ("CUBLAS_COMPUTE_32F", "CUBLAS_COMPUTE_32F_PEDANTIC",
                               "CUBLAS_COMPUTE_32F_FAST_16F", "CUBLAS_COMPUTE_32F_FAST_16BF",
                               "CUBLAS_COMPUTE_32F_FAST_TF32")}
_F64_COMPUTE = {ENUM["CUBLAS_COMPUTE_64F"], ENUM["CUBLAS_COMPUTE_64F_PEDANTIC"]}
_F16_COMPUTE = {ENUM["CUBLAS_COMPUTE_16F"], ENUM["CUBLAS_COMPUTE_16F_PEDANTIC"]}
# (A/B type, C type) -> {computeType: dtype the products and alpha/beta are in}
SUPPORTED = {
    (np.float32, np.float32): dict.fromkeys(_F32_COMPUTE, np.float32),
    (np.float64, np.float64): dict.fromkeys(_F64_COMPUTE, np.float64),
    (np.float16, np.float16): {**dict.fromkeys(_F16_COMPUTE, np.float16),
                               ENUM["CUBLAS_COMPUTE_32F"]: np.float32,
                               ENUM["CUBLAS_COMPUTE_32F_PEDANTIC"]: np.float32},
    (np.float16, np.float32): {ENUM["CUBLAS_COMPUTE_32F"]: np.float32,
                               ENUM["CUBLAS_COMPUTE_32F_PEDANTIC"]: np.float32},
}
TF32_TENSOR_OP_MATH = 3        # cublasMath_t CUBLAS_TF32_TENSOR_OP_MATH (not among CuPy 14.2's names)
_LEGACY_COMPUTE = {R["CUDA_R_32F"]: ENUM["CUBLAS_COMPUTE_32F"], R["CUDA_R_64F"]: ENUM["CUBLAS_COMPUTE_64F"],
                   R["CUDA_R_16F"]: ENUM["CUBLAS_COMPUTE_16F"]}   # computeType given as a data type
_HOST_SCALARS = {np.float32: ctypes.c_float, np.float64: ctypes.c_double, np.float16: ctypes.c_uint16}


class CUBLASError(RuntimeError):

    def __init__(self, status):
        self.status = status
        super().__init__(STATUS[status])

    def __reduce__(self):
        return type(self), (self.status,)


CUBLASError.__module__ = "cupy_backends.cuda.libs.cublas"


def check_status(status):
    if status != 0:
        raise CUBLASError(status)


class _Handle:
    __slots__ = ("pointer_mode", "math_mode", "stream")

    def __init__(self):
        self.pointer_mode, self.math_mode, self.stream = ENUM["CUBLAS_POINTER_MODE_HOST"], 0, 0


_handles = {}
_handle_ids = itertools.count(0x6100_0000, 0x100)
_default = []


def default_handle():
    """The handle cupy.cuda.device.get_cublas_handle() returns (created once)."""
    if not _default:
        _default.append(create())
    return _default[0]


def _int(value, name, bits=32):
    """A C integer argument as Cython converts it: TypeError for non-integers, OverflowError
    out of range."""
    value = operator.index(value)
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise OverflowError(f"value too large to convert to {'int' if bits == 32 else 'long long'} ({name})")
    return value


def _get(handle):
    h = _handles.get(_int(handle, "handle", 64))
    if h is None:
        raise CUBLASError(NOT_INITIALIZED)
    return h


def create():
    handle = next(_handle_ids)
    _handles[handle] = _Handle()
    return handle


def destroy(handle):
    _get(handle)
    del _handles[handle]


def getVersion(handle):
    _get(handle)
    return 120900


def getPointerMode(handle):
    return _get(handle).pointer_mode


def setPointerMode(handle, mode):
    if mode not in (ENUM["CUBLAS_POINTER_MODE_HOST"], ENUM["CUBLAS_POINTER_MODE_DEVICE"]):
        raise CUBLASError(INVALID_VALUE)
    _get(handle).pointer_mode = mode


def getMathMode(handle):
    return _get(handle).math_mode


def setMathMode(handle, mode):
    _get(handle).math_mode = _int(mode, "mode")


def setStream(handle, stream):
    _get(handle).stream = _int(stream, "stream", 64)


def getStream(handle):
    return _get(handle).stream


# ---- GEMM -------------------------------------------------------------------------------

def round_to_tf32(x):
    """float32 -> the nearest TF32 value (1 sign, 8 exponent, 10 mantissa bits), ties away from
    zero, as PTX's cvt.rna.tf32.f32: add half of the 13 dropped bits' range to the magnitude's
    bit pattern, then clear them. Infinities and NaNs pass through; finite values past TF32's
    largest round to infinity."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return np.where(np.isfinite(x), rounded, bits).view(np.float32)


def round_to_bfloat16(x):
    """float32 -> the nearest bfloat16 value (8 mantissa bits), ties to even; NaNs pass through."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), bits, rounded).view(np.float32)


def _operand_rounding(h, compute):
    """The rounding the tensor cores apply to A and B for this compute type, or None."""
    if compute == ENUM["CUBLAS_COMPUTE_32F_FAST_TF32"] or (
            compute == ENUM["CUBLAS_COMPUTE_32F"] and h.math_mode & 0xF == TF32_TENSOR_OP_MATH):
        return round_to_tf32
    if compute == ENUM["CUBLAS_COMPUTE_32F_FAST_16BF"]:
        return round_to_bfloat16
    if compute == ENUM["CUBLAS_COMPUTE_32F_FAST_16F"]:
        return lambda x: x.astype(np.float16).astype(np.float32)
    return None


def _scalar(h, ptr, dtype, name):
    """alpha or beta: read from host memory (pointer mode host) or device memory."""
    ptr = _int(ptr, name, 64)
    if h.pointer_mode == ENUM["CUBLAS_POINTER_MODE_DEVICE"]:
        return _matrix(name, ptr, np.dtype(dtype), 1, 1, 1, 0, 1)[0, 0, 0]
    if ptr == 0:
        raise ValueError(f"cupy stand-in: {name} is a null pointer")
    if memory.BASE_ADDRESS <= ptr < memory._next_address:
        raise ValueError(f"cupy stand-in: {name} ({ptr:#x}) is a device pointer, but the pointer "
                         "mode is CUBLAS_POINTER_MODE_HOST (pass e.g. numpy.array(1, dtype).ctypes.data)")
    value = _HOST_SCALARS[dtype].from_address(ptr).value
    return np.uint16(value).view(np.float16) if dtype is np.float16 else dtype(value)


def _matrix(name, ptr, dtype, rows, cols, ld, stride, batch):
    """The (batch, rows, cols) view of column-major matrices at device address `ptr` (element
    (i, j) of matrix b at ptr + (b*stride + i + j*ld) elements), bounds- and type-checked."""
    try:
        alloc, offset = memory.resolve(ptr)
    except ValueError:
        raise ValueError(f"cupy stand-in: {name} ({ptr:#x}) is not a pointer into live device "
                         "memory") from None
    held = alloc.get_root().dtype
    if held != dtype:
        raise ValueError(f"cupy stand-in: {name} points into {held} memory but the call reads it "
                         f"as {dtype}")
    size = dtype.itemsize
    if offset % size:
        raise ValueError(f"cupy stand-in: {name} ({ptr:#x}) is not aligned to its {size}-byte elements")
    strides = ((stride if batch > 1 else 0) * size, size, ld * size)
    low, high = extent((batch, rows, cols), strides, size)
    if offset + low < 0 or offset + high > alloc.nbytes:
        raise ValueError(
            f"cupy stand-in: {name} out of bounds: {batch} x {rows}x{cols} matrices (ld={ld}, "
            f"stride={stride}) from byte {offset} reach byte {offset + high} of a "
            f"{alloc.nbytes}-byte allocation")
    return memory.buffer_view(alloc, dtype, offset, (batch, rows, cols), strides)


def _check_no_overlap(c, others):
    for name, x in others:
        if np.may_share_memory(c, x):
            try:
                overlap = np.shares_memory(c, x, max_work=10**6)
            except np.exceptions.TooHardError:
                overlap = False
            if overlap:
                raise ValueError(f"cupy stand-in: the GEMM output C overlaps its input {name} "
                                 "(cuBLAS gives undefined results)")


def _gemm(function, handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype,
          ldb, strideB, beta, C, Ctype, ldc, strideC, batch, compute):
    h = _get(handle)
    transa, transb, m, n, k, lda, ldb, ldc, batch, compute = (
        _int(v, name) for v, name in ((transa, "transa"), (transb, "transb"), (m, "m"), (n, "n"),
                                      (k, "k"), (lda, "lda"), (ldb, "ldb"), (ldc, "ldc"),
                                      (batch, "batchCount"), (compute, "computeType")))
    strideA, strideB, strideC = (_int(s, "stride", 64) for s in (strideA, strideB, strideC))
    ops = (ENUM["CUBLAS_OP_N"], ENUM["CUBLAS_OP_T"], ENUM["CUBLAS_OP_C"])
    a_rows, a_cols = (m, k) if transa == ENUM["CUBLAS_OP_N"] else (k, m)
    b_rows, b_cols = (k, n) if transb == ENUM["CUBLAS_OP_N"] else (n, k)
    if (transa not in ops or transb not in ops or min(m, n, k, batch) < 0
            or lda < max(1, a_rows) or ldb < max(1, b_rows) or ldc < max(1, m)):
        raise CUBLASError(INVALID_VALUE)
    types = [DATA_TYPES.get(t) for t in (Atype, Btype, Ctype)]
    compute = _LEGACY_COMPUTE.get(compute, compute)
    if any(t is None for t in types) or types[0] != types[1]:   # dtype("f8") == None is True
        raise CUBLASError(NOT_SUPPORTED)
    work = SUPPORTED.get((types[0].type, types[2].type), {}).get(compute)
    if work is None:
        raise CUBLASError(NOT_SUPPORTED)
    state.record_gemm(function, m, n, k, batch, compute)
    if m == 0 or n == 0 or batch == 0:
        return
    alpha_v, beta_v = _scalar(h, alpha, work, "alpha"), _scalar(h, beta, work, "beta")
    c = _matrix("C", C, types[2], m, n, ldc, strideC, batch)
    if batch > 1 and strideC == 0:
        raise ValueError("cupy stand-in: strideC == 0 makes every batch write the same C")
    if k == 0 or alpha_v == 0:
        c[...] = 0 if beta_v == 0 else beta_v * c.astype(work)
        return
    a = _matrix("A", A, types[0], a_rows, a_cols, lda, strideA, batch)
    b = _matrix("B", B, types[1], b_rows, b_cols, ldb, strideB, batch)
    _check_no_overlap(c, (("A", a), ("B", b)))
    op_a = a if transa == ENUM["CUBLAS_OP_N"] else a.transpose(0, 2, 1)
    op_b = b if transb == ENUM["CUBLAS_OP_N"] else b.transpose(0, 2, 1)
    op_a, op_b = op_a.astype(work), op_b.astype(work)
    rounding = _operand_rounding(h, compute) if types[0] == np.float32 else None
    if rounding is not None:
        op_a, op_b = rounding(op_a), rounding(op_b)
    product = alpha_v * np.matmul(op_a, op_b)
    c[...] = product if beta_v == 0 else product + beta_v * c.astype(work)


def sgemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    f = R["CUDA_R_32F"]
    _gemm("sgemm", handle, transa, transb, m, n, k, alpha, A, f, lda, 0, B, f, ldb, 0, beta,
          C, f, ldc, 0, 1, _COMPUTE_32F)


def dgemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    d = R["CUDA_R_64F"]
    _gemm("dgemm", handle, transa, transb, m, n, k, alpha, A, d, lda, 0, B, d, ldb, 0, beta,
          C, d, ldc, 0, 1, _COMPUTE_64F)


def sgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                        strideB, beta, C, ldc, strideC, batchCount):
    f = R["CUDA_R_32F"]
    _gemm("sgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, f, lda, strideA,
          B, f, ldb, strideB, beta, C, f, ldc, strideC, batchCount, _COMPUTE_32F)


def dgemmStridedBatched(handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                        strideB, beta, C, ldc, strideC, batchCount):
    d = R["CUDA_R_64F"]
    _gemm("dgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, d, lda, strideA,
          B, d, ldb, strideB, beta, C, d, ldc, strideC, batchCount, _COMPUTE_64F)


def gemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
           Ctype, ldc, computeType, algo):
    _gemm("gemmEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0,
          beta, C, Ctype, ldc, 0, 1, computeType)


def gemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B,
                         Btype, ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount,
                         computeType, algo):
    _gemm("gemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda,
          strideA, B, Btype, ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType)


_COMPUTE_32F, _COMPUTE_64F = ENUM["CUBLAS_COMPUTE_32F"], ENUM["CUBLAS_COMPUTE_64F"]

TABLE = {**ENUM, "CUBLASError": CUBLASError, "check_status": check_status,
         **{f.__name__: f for f in (create, destroy, getVersion, getPointerMode, setPointerMode,
                                    getMathMode, setMathMode, setStream, getStream, sgemm, dgemm,
                                    sgemmStridedBatched, dgemmStridedBatched, gemmEx,
                                    gemmStridedBatchedEx)}}
