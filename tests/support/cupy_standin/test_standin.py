"""Tests of the CuPy stand-in itself: real names only, CuPy's refusals, 0-d results, counting,
custom kernels through twins, the fake cuBLAS, memory limits."""
import gc
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
NAMES = json.loads((HERE / "cupy_names.json").read_text())
OURS = ("cupy", "cupy_backends", "standin", "_standin", "twins")
FAKE_MODULES = {  # json key -> module path to import
    "cupy": "cupy", "cupy.random": "cupy.random", "cupy.cuda": "cupy.cuda",
    "cupy.cuda.runtime": "cupy.cuda.runtime", "cupy.cuda.memory": "cupy.cuda.memory",
    "cupy.cuda.device": "cupy.cuda.device", "cupy.cuda.compiler": "cupy.cuda.compiler",
    "cupy.cuda.stream": "cupy.cuda.stream", "cupy.cuda.driver": "cupy_backends.cuda.api.driver",
    "cupy_backends.cuda.libs.cublas": "cupy_backends.cuda.libs.cublas",
    "cupy.cuda.nccl": "cupy.cuda.nccl",   # imported last: once imported it is in dir(cupy.cuda)
    "cupy_backends.cuda.libs.nccl": "cupy_backends.cuda.libs.nccl"}


def _ours(name):
    return name.split(".")[0] in OURS


@pytest.fixture
def fake():
    """(cupy, standin) from the stand-in, freshly imported; sys.modules and sys.path are put
    back afterwards (a real cupy imported elsewhere stays untouched)."""
    saved = {n: m for n, m in sys.modules.items() if _ours(n)}
    for n in saved:
        del sys.modules[n]
    path = list(sys.path)
    sys.path.insert(0, str(HERE))
    try:
        import cupy
        import standin
        yield cupy, standin
    finally:
        for n in [n for n in sys.modules if _ours(n)]:
            del sys.modules[n]
        sys.modules.update(saved)
        sys.path[:] = path


def line():
    """The caller's line number (for by_site keys)."""
    return sys._getframe(1).f_lineno


def site(lineno):
    return f"{__file__}:{lineno}"


def resolve(path):
    head, *rest = path.split(".")
    obj = sys.modules[head]
    for part in rest:
        obj = getattr(obj, part)
    return obj


# ---- real names only ----------------------------------------------------------------------

def test_every_exposed_module_name_is_real(fake):
    import importlib
    for key, path in FAKE_MODULES.items():
        module = importlib.import_module(path)
        real = set(NAMES["modules"][key])
        for name in sorted(real):
            try:
                getattr(module, name)
            except AttributeError as e:
                assert "is not implemented" in str(e), (key, name, e)
        assert set(dir(module)) <= real, (key, sorted(set(dir(module)) - real))
        with pytest.raises(AttributeError) as info:
            getattr(module, "no_such_name_in_cupy")
        assert "stand-in" not in str(info.value)


def test_every_exposed_class_name_is_real(fake):
    cupy, _ = fake
    import cupy.cuda.nccl  # noqa: F401, F811  (a submodule CuPy does not import by itself)
    for key in NAMES["classes"]:
        if key == "cupy._core.flags.Flags":
            cls = type(cupy.zeros(1).flags)
        else:
            cls = resolve(key)
        extra = set(dir(cls)) - set(NAMES["classes"][key]) - {"__module__"}  # Python class metadata
        assert not extra, (key, sorted(extra))
    x = cupy.zeros((2, 3))
    assert set(dir(x)) <= set(NAMES["classes"]["cupy.ndarray"])
    rng = cupy.random.default_rng(0)
    assert set(dir(rng)) <= set(NAMES["classes"]["cupy.random.Generator"])


def test_unimplemented_real_names_say_so(fake):
    cupy, _ = fake
    x = cupy.zeros(3)
    for get in (lambda: x.flat, lambda: cupy.fft, lambda: cupy.cuda.cusolver,
                lambda: cupy.random.default_rng(0).normal):
        with pytest.raises(AttributeError):
            get()
    with pytest.raises(AttributeError, match="cupy stand-in: cupy.ndarray.flat is not implemented"):
        x.flat
    with pytest.raises(AttributeError, match="is not implemented"):
        cupy.fft
    with pytest.raises(AttributeError, match="has no attribute 'normal'"):
        cupy.random.default_rng(0).normal       # real Generator has no normal/choice/permutation
    with pytest.raises(AttributeError, match="has no attribute 'resize'"):
        x.resize                                # numpy has it, cupy.ndarray does not


def test_keywords_cupy_does_not_take_are_refused(fake):
    cupy, _ = fake
    x = cupy.ones((2, 3))
    with pytest.raises(TypeError, match="unexpected keyword argument 'initial'"):
        x.max(initial=0)
    with pytest.raises(TypeError, match="Wrong arguments"):
        cupy.add(x, x, where=x > 0)
    assert float(x.sum(axis=0, keepdims=True).sum()) == 6


def test_import_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=str(HERE))
    code = ("import cupy, standin; assert cupy.__file__.startswith(%r); "
            "assert cupy.__version__ == %r; assert cupy.cuda.runtime.getDeviceCount() == 1; "
            "cupy.zeros(1).sum().item()") % (str(HERE), NAMES["cupy_version"])
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=HERE.parents[2])


# ---- refusals ---------------------------------------------------------------------------

def test_implicit_conversion_to_host_is_refused(fake):
    cupy, _ = fake
    dev = cupy.arange(4.0)
    for convert in (np.asarray, np.array, lambda d: d.__array__()):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(dev)


def test_host_arrays_as_device_operands_are_refused(fake):
    cupy, _ = fake
    dev, host = cupy.arange(4.0), np.arange(4.0)
    message = "Unsupported type <class 'numpy.ndarray'>"
    for op in (lambda: dev + host, lambda: host + dev, lambda: cupy.exp(host),
               lambda: cupy.add(dev, host), lambda: cupy.concatenate([dev, host]),
               lambda: cupy.matmul(dev, host)):
        with pytest.raises(TypeError, match=message):
            op()
    with pytest.raises(TypeError, match=message):
        dev[0:2] = host[:2]
    dev[0:2] = 5.0
    dev[2:] = cupy.asarray(np.array([7.0, 8.0]))
    out = dev * np.float32(2) + 1 - np.float64(0.5)
    assert out.get().tolist() == [10.5, 10.5, 14.5, 16.5]


def test_ufunc_at_only_where_cupy_supports_it(fake):
    cupy, _ = fake
    a = cupy.zeros(3)
    cupy.add.at(a, cupy.asarray(np.array([0, 0, 2])), 1.0)
    np.add.at(a, cupy.asarray(np.array([1])), 2.0)            # through __array_ufunc__
    assert a.get().tolist() == [2.0, 2.0, 1.0]
    cupy.maximum.at(a, cupy.asarray(np.array([0])), 5.0)
    with pytest.raises(NotImplementedError, match="`cupy_multiply.at` is not supported yet"):
        cupy.multiply.at(a, cupy.asarray(np.array([0])), 2.0)


def test_numpy_functions_on_device_arrays_stay_on_device(fake):
    cupy, _ = fake
    dev = cupy.arange(6.0).reshape(2, 3)
    for result in (np.exp(dev), np.add(dev, 1), np.sum(dev), np.concatenate([dev, dev])):
        assert isinstance(result, cupy.ndarray)
    out = cupy.empty_like(dev)
    assert np.multiply(dev, 2, out=out) is out


# ---- 0-d results --------------------------------------------------------------------------

def test_results_that_are_0d_in_cupy_are_0d_arrays(fake):
    cupy, _ = fake
    a = cupy.arange(6.0).reshape(2, 3)
    for r in (a.sum(), a.max(), a.argmax(), a.mean(), a.any(), cupy.sum(a), a[0, 1],
              a[1][2], cupy.exp(a[0, 0]), a[0, 0] + 1, cupy.count_nonzero(a),
              cupy.allclose(a, a), cupy.dot(a[0], a[1]), cupy.random.default_rng(0).random()):
        assert isinstance(r, cupy.ndarray) and r.shape == (), r
    view = a[1, 2]
    view[...] = 50.0                      # integer indexing gives a view, as in CuPy
    assert a[1, 2].item() == 50.0


# ---- counting -----------------------------------------------------------------------------

def test_counts_with_sites(fake):
    cupy, standin = fake
    with standin.counting() as c:
        a = cupy.asarray(np.ones(4)); l1 = line()
        b = a * 2; l2 = line()
        total = float(b.sum()); l3 = line()
    assert total == 8.0
    assert c.as_dict() == {"launches": 2, "syncs": 1, "h2d": 1, "d2h": 1}
    zero = dict.fromkeys(("launches", "syncs", "h2d", "d2h"), 0)
    assert c.by_site == {site(l1): {**zero, "h2d": 1}, site(l2): {**zero, "launches": 1},
                         site(l3): {**zero, "launches": 1, "syncs": 1, "d2h": 1}}


def test_nested_contexts_global_counts_and_reset(fake):
    cupy, standin = fake
    standin.reset()
    a = cupy.zeros(3)
    with standin.counting() as outer:
        a += 1
        with standin.counting() as inner:
            a.get()
    assert (outer.launches, outer.d2h, inner.launches, inner.d2h) == (1, 1, 0, 1)
    assert standin.counts.launches == 2 and standin.counts.by_site == {}
    standin.reset()
    assert standin.counts.as_dict() == dict.fromkeys(("launches", "syncs", "h2d", "d2h"), 0)


@pytest.mark.parametrize("op, launches", [
    (lambda cp, a: a.T, 0), (lambda cp, a: a.reshape(6, 4), 0), (lambda cp, a: a[1:, ::2], 0),
    (lambda cp, a: a.T.reshape(24), 1), (lambda cp, a: a.astype(cp.float32), 1),
    (lambda cp, a: a.astype(a.dtype, copy=False), 0), (lambda cp, a: a.copy(), 1),
    (lambda cp, a: cp.empty((3, 3)), 0), (lambda cp, a: cp.zeros((3, 3)), 1),
    (lambda cp, a: cp.concatenate([a, a, a]), 3), (lambda cp, a: a[cp.arange(2)], 2),
    (lambda cp, a: cp.ascontiguousarray(a), 0), (lambda cp, a: cp.ascontiguousarray(a.T), 1),
    (lambda cp, a: cp.where(a > 0, a, 0), 2), (lambda cp, a: cp.triu(a), 1),
    (lambda cp, a: a.sum(axis=0), 1), (lambda cp, a: cp.sort(a), 1),
    (lambda cp, a: a @ a.T, 1),
    (lambda cp, a: cp.matmul(a[None], a.T[None]), 2),   # batched: the transposed operand is copied
    (lambda cp, a: a.__setitem__((0, 0), 1.0), 1),
])
def test_launch_counts(fake, op, launches):
    cupy, standin = fake
    a = cupy.arange(24.0).reshape(4, 6)
    with standin.counting() as c:
        op(cupy, a)
    assert (c.launches, c.syncs, c.h2d, c.d2h) == (launches, 0, 0, 0)


def test_syncs_and_transfers(fake):
    cupy, standin = fake
    a = cupy.arange(4.0)
    with standin.counting() as c:
        a[0].item()
        a.tolist()
        cupy.asnumpy(a)
        bool(a[1] > 0)
        cupy.flatnonzero(a)                         # data-dependent size: reads a count back
        a[cupy.asarray(np.array([True, False, True, False]))]
        cupy.cuda.get_current_stream().synchronize()
        cupy.cuda.Stream.null.synchronize()
        cupy.cuda.Device().synchronize()
        cupy.cuda.runtime.deviceSynchronize()
        a.get(blocking=False)
    assert (c.syncs, c.d2h, c.h2d) == (10, 7, 1)


def test_streams_and_events(fake):
    cupy, standin = fake
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        assert cupy.cuda.get_current_stream() is s
    assert cupy.cuda.get_current_stream() == cupy.cuda.Stream.null
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    cupy.ones((64, 64)) @ cupy.ones((64, 64))
    end.record()
    with standin.counting() as c:
        end.synchronize()
    assert c.syncs == 1 and end.done and 0.0 < cupy.cuda.get_elapsed_time(start, end) < 60e3


# ---- custom kernels -------------------------------------------------------------------------

SOURCE = r'''
typedef long long i64;
template<typename T>
__global__ void scale(const T* __restrict__ x, T* y, T a, i64 n) { }
extern "C" __global__ void plain(float* y, int n) { }
'''


def test_raw_module_twin_dispatch(fake):
    cupy, standin = fake
    calls = []

    def scale(x, y, a, n, *, grid, block, shared_mem, template):
        calls.append((grid, block, shared_mem, template, type(a), type(n)))
        y[:n] = a * x[:n]

    standin.TWINS["scale"] = scale
    module = cupy.RawModule(code=SOURCE, options=("--std=c++17",), name_expressions=("scale<float>",))
    kernel = module.get_function("scale<float>")
    x = cupy.arange(5, dtype=cupy.float32)
    y = cupy.zeros(5, dtype=cupy.float32)
    with standin.counting() as c:
        kernel((1,), (128,), (x, y, np.float32(3), np.int64(5))); l1 = line()
    assert y.get().tolist() == [0, 3, 6, 9, 12]
    assert calls == [((1, 1, 1), (128, 1, 1), 0, "float", np.float32, np.int64)]
    assert c.launches == 1 and c.kernels == {"scale": 1} and site(l1) in c.by_site


def test_kernel_launch_validation(fake):
    cupy, standin = fake
    standin.TWINS["plain"] = lambda y, n, **launch: None
    kernel = cupy.RawKernel(SOURCE, "plain")
    y = cupy.zeros((4, 4), dtype=cupy.float32)
    kernel((1,), (32,), (y, np.int32(16)))
    with pytest.raises(cupy.cuda.driver.CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel((1,), (64, 32), (y, np.int32(16)))           # 2048 threads
    with pytest.raises(cupy.cuda.driver.CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel((1, 70000), (32,), (y, np.int32(16)))
    with pytest.raises(cupy.cuda.driver.CUDADriverError, match="CUDA_ERROR_INVALID_VALUE"):
        kernel((1,), (32,), (y, np.int32(16)), shared_mem=64 * 1024)
    with pytest.raises(ValueError, match="dimension < 1"):
        kernel((0,), (32,), (y, np.int32(16)))
    with pytest.raises(TypeError, match="kernel argument 1 is a Python int"):
        kernel((1,), (32,), (y, 16))
    with pytest.raises(ValueError, match="kernel argument 0 is not C-contiguous"):
        kernel((1,), (32,), (y.T, np.int32(16)))
    with pytest.raises(TypeError, match="expected tuple"):
        kernel([1], (32,), (y, np.int32(16)))
    with pytest.raises(TypeError, match=r"argument 1 \(int n\) is int32, got int64"):
        kernel((1,), (32,), (y, np.int64(16)))                # the source's parameter types
    with pytest.raises(TypeError, match=r"argument 0 \(float\* y\) points to float32"):
        kernel((1,), (32,), (cupy.zeros(4), np.int32(4)))
    with pytest.raises(TypeError, match="takes 2 arguments, got 1"):
        kernel((1,), (32,), (y,))
    with pytest.raises(NotImplementedError, match="no NumPy twin for kernel nameless"):
        cupy.RawKernel('extern "C" __global__ void nameless() {}', "nameless")((1,), (1,), ())


def test_fail_compile_and_symbol_lookup(fake):
    cupy, standin = fake
    standin.fail_compile("scale")
    module = cupy.RawModule(code=SOURCE, name_expressions=("scale<float>",))
    with pytest.raises(cupy.cuda.compiler.CompileException, match="injected"):
        module.get_function("scale<float>")
    module.get_function("scale<float>")                     # the failure was used up
    standin.fail_compile()
    with pytest.raises(cupy.cuda.compiler.CompileException):
        module.get_function("plain")
    with pytest.raises(cupy.cuda.driver.CUDADriverError, match="CUDA_ERROR_NOT_FOUND"):
        module.get_function("scale<double>")                # not in name_expressions
    with pytest.raises(TypeError, match="'options' has incorrect type"):
        cupy.RawModule(code=SOURCE, options=["-O3"])


def test_elementwise_and_reduction_kernels(fake):
    cupy, standin = fake
    standin.TWINS["axpy"] = lambda a, x, y, z=None: a * x + y   # z: the output, when passed
    standin.TWINS["sumsq"] = lambda x, axis, keepdims: (x * x).sum(axis=axis, keepdims=keepdims)
    axpy = cupy.ElementwiseKernel("T a, T x, T y", "T z", "z = a * x + y", name="axpy")
    sumsq = cupy.ReductionKernel("T x", "T y", "x * x", "a + b", "y = a", "0", name="sumsq")
    x = cupy.arange(3.0)
    with standin.counting() as c:
        z = axpy(2.0, x, x)
        out = cupy.empty(3)
        axpy(1.0, x, x, out)
        s = sumsq(x)
    assert z.get().tolist() == [0, 3, 6] and out.get().tolist() == [0, 2, 4]
    assert s.shape == () and s.item() == 5.0 and c.launches == 3


# ---- device pointers and cuBLAS -----------------------------------------------------------

def test_device_pointers(fake):
    cupy, standin = fake
    a = cupy.zeros((4, 8), dtype=cupy.float32)
    b = cupy.zeros(3)
    assert a[1:, 2:].data.ptr == a.data.ptr + (8 + 2) * 4
    assert b.data.ptr >= a.data.ptr + a.nbytes and a.data.ptr % 256 == 0
    root, offset = standin.device_pointer_info(a[2].data.ptr)
    assert root.shape == (4, 8) and offset == 64


def _host(value, dtype):
    arr = np.array(value, dtype)
    return arr, arr.ctypes.data


@pytest.mark.parametrize("transa", [0, 1])
@pytest.mark.parametrize("transb", [0, 1])
def test_gemm_matches_numpy(fake, transa, transb):
    """Row-major X (m, k) @ Y (k, n) as column-major C^T = op(B) op(A) with padded leading
    dimensions (sub-matrix views of wider buffers)."""
    cupy, standin = fake
    from cupy_backends.cuda.libs import cublas
    runtime = cupy.cuda.runtime
    rng = np.random.default_rng(0)
    m, n, k, pad = 5, 3, 4, 3
    x, y = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    xs = x.T.copy() if transa else x                      # stored form of each operand
    ys = y.T.copy() if transb else y
    bufx = cupy.zeros((xs.shape[0], xs.shape[1] + pad), dtype=cupy.float32)
    bufy = cupy.zeros((ys.shape[0], ys.shape[1] + pad), dtype=cupy.float32)
    bufx[:, :xs.shape[1]] = cupy.asarray(xs.astype(np.float32))
    bufy[:, :ys.shape[1]] = cupy.asarray(ys.astype(np.float32))
    out = cupy.full((m, n + pad), 7.0, dtype=cupy.float32)
    alpha, pa = _host(1.0, np.float32)
    beta, pb = _host(0.0, np.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    # C^T (n x m, column-major = out rows) = op_b(Y^T) @ op_a(X^T)
    cublas.gemmEx(handle, transb, transa, n, m, k, pa,
                  bufy.data.ptr, runtime.CUDA_R_32F, bufy.shape[1],
                  bufx.data.ptr, runtime.CUDA_R_32F, bufx.shape[1], pb,
                  out.data.ptr, runtime.CUDA_R_32F, out.shape[1],
                  cublas.CUBLAS_COMPUTE_32F_PEDANTIC, cublas.CUBLAS_GEMM_DEFAULT)
    got = out.get()
    np.testing.assert_allclose(got[:, :n], x @ y, rtol=1e-5, atol=1e-5)
    assert (got[:, n:] == 7.0).all()                       # the padding is untouched
    batched = cupy.zeros((2, m, n), dtype=cupy.float32)
    cublas.sgemmStridedBatched(handle, transb, transa, n, m, k, pa,
                               bufy.data.ptr, bufy.shape[1], 0, bufx.data.ptr, bufx.shape[1], 0,
                               pb, batched.data.ptr, n, m * n, 2)
    np.testing.assert_allclose(batched.get(), np.stack([x @ y] * 2), rtol=1e-5, atol=1e-5)
    log = standin.counts.gemm_log
    assert [(g.function, g.compute_type) for g in log] == [
        ("gemmEx", cublas.CUBLAS_COMPUTE_32F_PEDANTIC),
        ("sgemmStridedBatched", cublas.CUBLAS_COMPUTE_32F)]


def _nearest(x, mantissa_bits, ties_away):
    """The float32 values x rounded to `mantissa_bits` stored bits, from the format's definition
    (float64 arithmetic on frexp's exponent; subnormals share the smallest normal's spacing)."""
    x = np.asarray(x, np.float64)
    _, e = np.frexp(x)                             # |x| in [2^(e-1), 2^e)
    ulp = np.ldexp(1.0, np.maximum(e, -125) - 1 - mantissa_bits)
    scaled = np.abs(x) / ulp
    low = np.floor(scaled)
    if ties_away:
        up = scaled - low >= 0.5
    else:                                          # ties to even
        up = (scaled - low > 0.5) | ((scaled - low == 0.5) & (low % 2 == 1))
    r = np.sign(x) * (low + up) * ulp
    return np.where(np.abs(r) > np.finfo(np.float32).max, np.copysign(np.inf, x), r)


def _float32_samples():
    rng = np.random.default_rng(0)
    f32 = np.finfo(np.float32)
    ties = np.float32(1) + np.float32(2.0 ** -11) * np.arange(-3, 4, dtype=np.float32)   # halfway cases
    special = np.array([0.0, -0.0, f32.max, -f32.max, f32.tiny, f32.tiny / 3, 2.0 ** -149, 65504.0], np.float32)
    bits = rng.integers(0, 2 ** 32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    samples = np.concatenate([ties, -ties, special, bits, rng.standard_normal(10_000).astype(np.float32)])
    return samples[np.isfinite(samples)]


def test_tf32_rounding_is_the_tf32_format(fake):
    """round_to_tf32 keeps 10 mantissa bits: every result has its 13 low bits clear and is the
    nearest such value (ties away from zero, as cvt.rna.tf32.f32), over random bit patterns,
    halfway cases, subnormals and float32's largest (which rounds to infinity)."""
    from _standin.cublas import round_to_bfloat16, round_to_tf32
    x = _float32_samples()
    r = round_to_tf32(x)
    assert not (r.view(np.uint32) & 0x1FFF).any()
    np.testing.assert_array_equal(r.astype(np.float64), _nearest(x, 10, ties_away=True))
    assert round_to_tf32(np.float32(1 + 2 ** -11)) == 1 + 2 ** -10          # a tie, away from zero
    assert round_to_tf32(np.float32(-(1 + 2 ** -11))) == -(1 + 2 ** -10)
    assert round_to_tf32(np.float32(1 + 2 ** -12)) == 1
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(round_to_tf32(special), special)
    b = round_to_bfloat16(x)
    assert not (b.view(np.uint32) & 0xFFFF).any()
    np.testing.assert_array_equal(b.astype(np.float64), _nearest(x, 7, ties_away=False))


@pytest.mark.parametrize("compute, math_mode, rounded", [
    ("CUBLAS_COMPUTE_32F_FAST_TF32", 0, "tf32"), ("CUBLAS_COMPUTE_32F", 3, "tf32"),
    ("CUBLAS_COMPUTE_32F", 0, None), ("CUBLAS_COMPUTE_32F_PEDANTIC", 3, None),
    ("CUBLAS_COMPUTE_32F_FAST_16BF", 0, "bf16"), ("CUBLAS_COMPUTE_32F_FAST_16F", 0, "fp16")])
def test_reduced_precision_gemms_round_their_operands(fake, compute, math_mode, rounded):
    """A float32 GEMM asking for TF32 (the compute type, or CUBLAS_TF32_TENSOR_OP_MATH on the
    handle) multiplies A and B rounded to TF32, as tensor cores do, and sums in float32;
    PEDANTIC and plain COMPUTE_32F without the math mode multiply them as they are."""
    cupy, _ = fake
    from _standin.cublas import round_to_bfloat16, round_to_tf32
    from cupy_backends.cuda.libs import cublas
    rounding = {"tf32": round_to_tf32, "bf16": round_to_bfloat16, None: lambda a: a,
                "fp16": lambda a: a.astype(np.float16).astype(np.float32)}[rounded]
    rng = np.random.default_rng(1)
    m, n, k = 6, 5, 64
    x, y = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (k, n)))
    a, b, out = cupy.asarray(x), cupy.asarray(y), cupy.zeros((m, n), dtype=cupy.float32)
    _, pa = _host(1.0, np.float32)
    _, pb = _host(0.0, np.float32)
    handle = cublas.create()
    cublas.setMathMode(handle, math_mode)
    f = cupy.cuda.runtime.CUDA_R_32F
    cublas.gemmEx(handle, 0, 0, n, m, k, pa, b.data.ptr, f, n, a.data.ptr, f, k, pb, out.data.ptr, f, n,
                  getattr(cublas, compute), cublas.CUBLAS_GEMM_DEFAULT)
    expected = rounding(x).astype(np.float64) @ rounding(y).astype(np.float64)
    np.testing.assert_allclose(out.get(), expected, rtol=1e-5, atol=1e-5)   # float32 sums of exact products
    if rounded:
        assert np.abs(out.get() - x.astype(np.float64) @ y).max() > 1e-3    # visibly not full precision


def test_gemm_refuses_what_would_corrupt_memory(fake):
    cupy, _ = fake
    from cupy_backends.cuda.libs import cublas
    h = cublas.create()
    a = cupy.ones((4, 4), dtype=cupy.float32)
    c = cupy.zeros((4, 4), dtype=cupy.float32)
    d = cupy.zeros((4, 4))
    alpha, pa = _host(1.0, np.float32)
    beta, pb = _host(0.0, np.float32)
    cublas.sgemm(h, 0, 0, 4, 4, 4, pa, a.data.ptr, 4, a.data.ptr, 4, pb, c.data.ptr, 4)
    assert (c.get() == 4).all()
    with pytest.raises(ValueError, match="out of bounds"):
        cublas.sgemm(h, 0, 0, 4, 4, 4, pa, a[1:].data.ptr, 4, a.data.ptr, 4, pb, c.data.ptr, 4)
    with pytest.raises(ValueError, match="float64 memory"):
        cublas.sgemm(h, 0, 0, 4, 4, 4, pa, a.data.ptr, 4, a.data.ptr, 4, pb, d.data.ptr, 4)
    with pytest.raises(ValueError, match="device pointer"):
        cublas.sgemm(h, 0, 0, 4, 4, 4, a.data.ptr, a.data.ptr, 4, a.data.ptr, 4, pb, c.data.ptr, 4)
    with pytest.raises(ValueError, match="overlaps"):
        cublas.sgemm(h, 0, 0, 4, 4, 4, pa, a.data.ptr, 4, a.data.ptr, 4, pb, a.data.ptr, 4)
    with pytest.raises(cublas.CUBLASError, match="CUBLAS_STATUS_INVALID_VALUE"):
        cublas.sgemm(h, 0, 0, 4, 4, 4, pa, a.data.ptr, 3, a.data.ptr, 4, pb, c.data.ptr, 4)
    with pytest.raises(cublas.CUBLASError, match="CUBLAS_STATUS_NOT_SUPPORTED"):
        cublas.gemmEx(h, 0, 0, 4, 4, 4, pa, a.data.ptr, 0, 4, a.data.ptr, 0, 4, pb, c.data.ptr,
                      0, 4, cublas.CUBLAS_COMPUTE_64F, -1)
    cublas.destroy(h)


# ---- memory -------------------------------------------------------------------------------

def test_out_of_memory_under_a_limit(fake):
    cupy, standin = fake
    gc.collect()
    base = standin.live_bytes()
    standin.set_memory_limit(base + 1000)
    try:
        keep = cupy.zeros(100)                                  # 800 bytes fit
        with pytest.raises(cupy.cuda.memory.OutOfMemoryError,
                           match=r"Out of memory allocating 800 bytes \(allocated so far: "):
            cupy.ones(100)
        free, total = cupy.cuda.runtime.memGetInfo()
        assert total == base + 1000 and free == 200
        del keep
        gc.collect()
        cupy.ones(100)                                          # freed memory is reusable
    finally:
        standin.set_memory_limit(None)
    pool = cupy.get_default_memory_pool()
    pool.set_limit(size=pool.used_bytes() + 100)
    with pytest.raises(cupy.cuda.memory.OutOfMemoryError, match="limit set to"):
        cupy.empty(1000, dtype=cupy.uint8)
    pool.set_limit(size=0)


def test_device_description(fake):
    cupy, _ = fake
    props = cupy.cuda.runtime.getDeviceProperties(0)
    assert props["name"] == b"NVIDIA H200 (cupy stand-in)" and props["multiProcessorCount"] == 132
    assert (props["major"], props["minor"]) == (9, 0)
    device = cupy.cuda.Device()
    assert device.id == 0 and device.compute_capability == "90"
    assert cupy.cuda.runtime.CUDA_R_32F == 0 and cupy.cuda.runtime.CUDA_R_64F == 1
    assert isinstance(cupy.cuda.device.get_cublas_handle(), int)


def test_gpus_and_the_current_device(fake):
    """One GPU unless CUPY_STANDIN_GPUS says more; the current device is per thread, and an
    allocation belongs to the device current when it was made."""
    import threading

    from _standin import state
    cupy, _ = fake
    assert cupy.cuda.runtime.getDeviceCount() == 1
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cupy.cuda.Device(1).use()
    state.n_devices = 2
    cupy.cuda.Device(1).use()
    a = cupy.zeros(3)
    with cupy.cuda.Device(0):
        assert cupy.cuda.runtime.getDevice() == 0 and cupy.cuda.Device().id == 0
        b = cupy.zeros(3)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(cupy.cuda.runtime.getDevice()))
    thread.start()
    thread.join()
    assert cupy.cuda.runtime.getDevice() == 1 and seen == [0]
    assert (a.device.id, a.data.device_id, a[1:].device.id, b.device.id, b.data.mem.device_id) == (1, 1, 1, 0, 0)


def test_nccl_arguments_checked_before_any_communication(fake):
    """What the fake NCCL checks without MPI (the collectives: tests/gpt/parallel/test_mpi_nccl.py)."""
    from cupy.cuda import nccl
    uid = nccl.get_unique_id()
    assert isinstance(uid, bytes) and len(uid) == 128 and uid != nccl.get_unique_id()
    assert (nccl.NCCL_SUM, nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64) == (0, 7, 8) and nccl.available
    with pytest.raises(TypeError, match="expected bytes, got tuple"):
        nccl.NcclCommunicator(1, tuple(uid), 0)            # CuPy < 14's unique ids
    with pytest.raises(ValueError, match="commId length 127 != 128"):
        nccl.NcclCommunicator(1, uid[1:], 0)
    with pytest.raises(AttributeError, match="NcclCommunicator.broadcast is not implemented"):
        object.__new__(nccl.NcclCommunicator).broadcast
    with pytest.raises(AttributeError, match="cupy.cuda.nccl.groupStart is not implemented"):
        nccl.groupStart


def test_empty_memory_is_poisoned(fake):
    cupy, _ = fake
    assert np.isnan(cupy.empty(3).get()).all()
    assert (cupy.empty(3, dtype=cupy.int32).get() == -1).all()


def test_random_generator(fake):
    cupy, _ = fake
    rng = cupy.random.default_rng(1)
    r = rng.random((2, 3), dtype=cupy.float32)
    assert isinstance(r, cupy.ndarray) and r.dtype == np.float32 and r.shape == (2, 3)
    assert rng.standard_normal(4).dtype == np.float64
    assert rng.integers(0, 10, size=5).dtype == np.int64
    assert rng.uniform(0, 1, size=3, dtype=cupy.float32).dtype == np.float32
    out = cupy.empty(3, dtype=cupy.float32)
    with pytest.raises(TypeError, match="Supplied output array has the wrong type"):
        rng.random(out=out)
    assert rng.random(dtype=cupy.float32, out=out) is out
    a = rng.random(5)
    np.testing.assert_array_equal(cupy.random.default_rng(1).random(5).get(),
                                  cupy.random.default_rng(1).random(5).get())
    assert isinstance(a, cupy.ndarray)
