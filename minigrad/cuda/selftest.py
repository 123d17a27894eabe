"""Every CUDA op against its reference pair, on this GPU: python -m minigrad.cuda.selftest

Each case draws random inputs with odd shapes at the scales training sees (activations
N(0, 1), weights N(0, 1/fan_in)), runs the fast op and the reference op (the reference on
CuPy too) and compares every output and gradient, as max |ours - reference| over the
reference tensor's largest magnitude. Three checks:

    float64          tolerance 1e-9: the proof that a kernel computes the reference's math
    float32          TF32 off, 1e-4: the same arithmetic up to the order of sums
    float32 + TF32   (cases with matrix products, when the run uses TF32) TF32_TOLERANCE

Any non-finite value fails a check (every case's reference is finite).
fast_ops() calls failing_ops(ops) once per process and caches the verdict on disk, keyed by
the GPU, the CUDA, cuBLAS and CuPy versions, the TF32 mode and a hash of minigrad's own code
(kernels, launchers, references, this file), so that a broken or uncompilable kernel costs
one warning, not a run, and a fixed one is tested again. A check that ran out of device
memory says nothing of the kernels, and is not cached.
"""
import argparse
import functools
import hashlib
import json
import math
import os
import pathlib
import sys
from types import SimpleNamespace

import cupy
import numpy as np

from ..backend import is_out_of_memory
from ..ops import collect, reference_ops
from . import gemm

# TF32 keeps 10 of float32's 23 mantissa bits, so each operand of a product is off by up to
# one TF32 ulp, 2^-10 of its value (half that when rounded to nearest; a full ulp covers
# hardware that truncates). A dot product of such operands is off by up to 2 * 2^-10 of
# sum |a_i b_i|, which at these scales is a few times the result's own magnitude; attention's
# backward chains four such products and the softmax between them. 16 ulps covers that with
# room (measured worst under the stand-in's TF32 rounding: attention, 8.4e-4), and a
# wrong kernel misses it by orders of magnitude.
TF32_ULP = 2.0 ** -10
TF32_TOLERANCE = 16 * TF32_ULP
# float32 with TF32 off differs from the reference only by the order of its sums and by fused
# multiply-adds: a few float32 ulps (2^-23 = 1.2e-7) of a sum's magnitude, times the depth of
# the chain (measured worst under the stand-in: 5.4e-7); 1e-4 leaves room for other summation
# trees (cuBLAS's split-K) and stays far below any wrong kernel's error.
# check name -> (dtype, TF32 products, tolerance)
CHECKS = {"float64": (np.float64, False, 1e-9), "float32": (np.float32, False, 1e-4),
          "float32+tf32": (np.float32, True, TF32_TOLERANCE)}


def _arrays(dtype, rng, *shapes, scale=1.0):
    return [cupy.asarray((scale * rng.standard_normal(shape)).astype(dtype)) for shape in shapes]


def case_linear(dtype, rng, ops):
    x, b, dout, dhead = _arrays(dtype, rng, (2, 5, 7), (9,), (2, 5, 9), (2, 5, 9))
    w, head = _arrays(dtype, rng, (7, 9), (9, 7), scale=7 ** -0.5)  # head: a tied head, w = wte^T
    dw, db, dwte = cupy.zeros_like(w), cupy.zeros_like(b), cupy.zeros_like(head)
    out, cache = ops.linear_forward(x, w, b)
    dx = ops.linear_backward(dout, cache, dw, db)
    logits, cache = ops.linear_forward(x, head.T, None)
    dx_head = ops.linear_backward(dhead, cache, dwte.T, None)
    return [out, dx, dw, db, logits, dx_head, dwte]


def case_layernorm(dtype, rng, ops):
    results = []
    for C in (13, 768, 1600):                        # one warp; 3 warps; 7 warps, 8 columns a thread
        x, a, w, b, dout = _arrays(dtype, rng, (3, 5, C), (3, 5, C), (C,), (C,), (3, 5, C))
        dw, db = cupy.zeros_like(w), cupy.zeros_like(b)
        out, cache = ops.layernorm_forward(x, w, b)
        dx = ops.layernorm_backward(dout, cache, dw, db)
        s, out2, _ = ops.residual_layernorm_forward(x, a, w, b)
        results += [out, dx, dw, db, s, out2]
    return results


def case_gelu_dropout(dtype, rng, ops):
    x, dout = _arrays(dtype, rng, (3, 7, 11), (3, 7, 11))
    out, cache = ops.gelu_forward(3 * x)
    dx = ops.gelu_backward(dout, cache)
    dropped, cache = ops.dropout_forward(x, 0.3, 12345)
    shard, shard_cache = ops.dropout_forward(x[1:], 0.3, 12345, first_row=1)   # rows 1, 2 of the batch
    return [out, dx, dropped, ops.dropout_backward(dout, cache), shard, ops.dropout_backward(dout[1:], shard_cache)]


def case_attention(dtype, rng, ops):
    results = []
    for B, T, C, H in ((2, 7, 12, 3), (1, 70, 128, 2)):   # small; rows longer than a warp, hs = 64
        x, b_qkv, b_proj, dout = _arrays(dtype, rng, (B, T, C), (3 * C,), (C,), (B, T, C))
        w_qkv, w_proj = _arrays(dtype, rng, (C, 3 * C), (C, C), scale=C ** -0.5)
        for p, first_row in ((0.0, 0), (0.25, 0), (0.25, 5)):        # first_row: a shard's place in its batch
            grads = [cupy.zeros_like(a) for a in (w_qkv, b_qkv, w_proj, b_proj)]
            out, cache = ops.attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, H, p, 99, first_row=first_row)
            results += [out, ops.attention_backward(dout, cache, *grads), *grads]
    B, T, C, H = 2, 7, 12, 3
    x, b_qkv, b_proj = _arrays(dtype, rng, (B, T, C), (3 * C,), (C,))
    w_qkv, w_proj = _arrays(dtype, rng, (C, 3 * C), (C, C), scale=C ** -0.5)
    k, v = (cupy.zeros((B, H, 9, C // H), dtype=dtype) for _ in range(2))
    ops.attention_forward(x[:, :3], w_qkv, b_qkv, w_proj, b_proj, H, kv_cache=(k, v), t0=0)
    out, _ = ops.attention_forward(x[:, 3:5], w_qkv, b_qkv, w_proj, b_proj, H, kv_cache=(k, v), t0=3)
    return results + [out, k[:, :, :5], v[:, :, :5]]


def case_cross_entropy(dtype, rng, ops):
    results = []
    for V, Vp in ((11, 16), (50257, 50304)):                         # GPT-2's padded vocabulary
        logits = _arrays(dtype, rng, (2, 3, Vp))[0] * 3
        targets = cupy.asarray(rng.integers(0, V, (2, 3)))
        targets[0, 1] = -1                                           # ignored
        loss, cache = ops.cross_entropy_forward(logits.copy(), targets, -1, V)
        results += [loss, ops.cross_entropy_backward(0.5, cache)]
    return results


def case_embedding(dtype, rng, ops):
    results = []
    for V, C, B, T in ((11, 6, 3, 5), (50, 768, 4, 64)):           # long runs of few ids
        wte, wpe, dout = _arrays(dtype, rng, (V, C), (T + 3, C), (B, T, C))
        idx = cupy.asarray(rng.integers(0, 4, (B, T)))
        dwte, dwpe = cupy.zeros_like(wte), cupy.zeros_like(wpe)
        out, cache = ops.embedding_forward(idx, wte, wpe)
        ops.embedding_backward(dout, cache, dwte, dwpe)
        results += [out, dwte, dwpe]
    return results


def case_optimizer(dtype, rng, ops):
    n = 300_001                                      # more than one pass of the norm's fixed grid
    params, grads = _arrays(dtype, rng, (n,), (n,))
    m, v = cupy.zeros_like(params), cupy.zeros_like(params)
    results = []
    for max_norm in (1e9, 1.0):
        results.append(ops.clip_grad_norm(grads, max_norm))
    ranges = [(0, 1000), (1500, 299_999)]
    for t in (1, 2):
        ops.adamw_update(params, grads, m, v, ranges, 1e-2, t, 0.9, 0.95, 1e-8, 0.1)
    return results + [grads, params, m, v]


CASES = {
    case_linear: ("linear_forward", "linear_backward"),
    case_layernorm: ("layernorm_forward", "layernorm_backward", "residual_layernorm_forward"),
    case_gelu_dropout: ("gelu_forward", "gelu_backward", "dropout_forward", "dropout_backward"),
    case_attention: ("attention_forward", "attention_backward"),
    case_cross_entropy: ("cross_entropy_forward", "cross_entropy_backward"),
    case_embedding: ("embedding_forward", "embedding_backward"),
    case_optimizer: ("clip_grad_norm", "adamw_update"),
}


TF32_CASES = (case_linear, case_attention)            # the cases whose ops run matrix products
OUT_OF_MEMORY = "the GPU ran out of memory"            # says nothing of the kernels: not cached


def compare(ours, ref):
    """(max |ours - ref| over max |ref|, '') for one output, or (inf, why) when the shapes
    differ or either holds a non-finite value (every case's reference is finite)."""
    a, b = cupy.asnumpy(ours).astype(np.float64), cupy.asnumpy(ref).astype(np.float64)
    if a.shape != b.shape:
        return math.inf, f"shape {a.shape} != {b.shape}"
    if not np.isfinite(b).all():
        return math.inf, "the reference itself is not finite"
    wrong = int(np.count_nonzero(~np.isfinite(a)))
    if wrong:
        return math.inf, f"{wrong} non-finite values where the reference's are finite"
    scale = float(np.abs(b).max(initial=0.0)) or 1.0
    return float(np.abs(a - b).max(initial=0.0)) / scale, ""


def run_case(case, fast, reference, dtype, tf32=False):
    """-> (the worst error over the case's outputs, or inf on a failure, and a message). The
    fast ops' float32 products use TF32 if `tf32`; gemm.ALLOW_TF32 is restored after."""
    ours_ops, ref_ops = SimpleNamespace(**reference), SimpleNamespace(**reference)
    for name in CASES[case]:
        setattr(ours_ops, name, fast[name])
    previous, gemm.ALLOW_TF32 = gemm.ALLOW_TF32, tf32
    try:
        ours = case(dtype, np.random.default_rng(0), ours_ops)
        ref = case(dtype, np.random.default_rng(0), ref_ops)
        worst = 0.0
        for a, b in zip(ours, ref, strict=True):
            error, message = compare(a, b)
            if message:
                return error, message
            worst = max(worst, error)
        return worst, ""
    except Exception as e:                                   # a compile error, a launch failure
        what = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return math.inf, f"{OUT_OF_MEMORY} ({what})" if is_out_of_memory(e) else what
    finally:
        gemm.ALLOW_TF32 = previous


def results(fast, tf32=True, report=None):
    """[(case name, check name, max error, tolerance, ok, message)] for every case and check;
    the TF32 check only for the cases with products, and only if `tf32`. report(row) is
    called as each row is known."""
    reference = reference_ops()
    rows = []
    for case in CASES:
        for check, (dtype, with_tf32, tolerance) in CHECKS.items():
            if with_tf32 and not (tf32 and case in TF32_CASES):
                continue
            error, message = run_case(case, fast, reference, dtype, with_tf32)
            rows.append((case.__name__[5:], check, error, tolerance, error <= tolerance, message))
            if report:
                report(rows[-1])
    return rows


MINIGRAD = pathlib.Path(__file__).resolve().parents[1]


@functools.cache
def code_hash(root=MINIGRAD):
    """sha256 of minigrad's own code (every .py, .cu and .cuh under `root`): the kernels,
    their launchers, the reference pairs and this self-test."""
    root = pathlib.Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".cu", ".cuh")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_key(tf32):
    """What a verdict depends on: the GPU, the CUDA runtime, driver and cuBLAS versions, CuPy,
    the TF32 mode and minigrad's code."""
    runtime = cupy.cuda.runtime
    props = runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    try:
        from cupy_backends.cuda.libs import cublas
        cublas_version = cublas.getVersion(cupy.cuda.device.get_cublas_handle())
    except Exception:                        # no handle (a full GPU): the cases will say why
        cublas_version = "unknown"
    return (f"{name}|sm{props['major']}{props['minor']}|cuda runtime {runtime.runtimeGetVersion()} driver "
            f"{runtime.driverGetVersion()} cublas {cublas_version}|cupy {cupy.__version__}|"
            f"tf32 {'on' if tf32 else 'off'}|{code_hash()}")


def _cache_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minigrad", "cuda_selftest.json")


def _read_cache(path):
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _failures(rows):
    """The failed rows as the cache keeps them: [(case name, check name, why)]."""
    return [(name, check, message or f"max error {error:.1e} > {tolerance:.1e}")
            for name, check, error, tolerance, ok, message in rows if not ok]


def store(rows, tf32):
    """Cache these rows' verdict for this device, versions, TF32 mode and code, unless a check
    ran out of memory; without a writable cache the checks run again next time."""
    failed = _failures(rows)
    if any(why.startswith(OUT_OF_MEMORY) for _, _, why in failed):
        return
    path = _cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({**_read_cache(path), cache_key(tf32): failed}, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


_FAILING = {}                                                # per TF32 mode, once per process


def failing_ops(ops, tf32=True):
    """The names of `ops` whose case fails a check on this device, checked once per process and
    TF32 mode and cached on disk (cache_key); one warning line per failed check."""
    if tf32 in _FAILING:
        return _FAILING[tf32]
    failed = _read_cache(_cache_path()).get(cache_key(tf32))
    if not isinstance(failed, list):
        rows = results(ops, tf32)
        store(rows, tf32)
        failed = _failures(rows)
    names = {case.__name__[5:]: case_ops for case, case_ops in CASES.items()}
    _FAILING[tf32] = sorted({op for name, _, _ in failed for op in names.get(name, ())})
    for name, check, why in failed:
        print(f"warning: minigrad.cuda: the {name} kernels fail their self-test on this GPU ({check}: {why}); "
              "using the reference ops for them", file=sys.stderr)
    return _FAILING[tf32]


def main(argv=None):
    """Print every check as it finishes, then store the verdict (the next run's first use of
    the GPU then skips the checks)."""
    from ..backend import _probe_cuda
    p = argparse.ArgumentParser(prog="python -m minigrad.cuda.selftest", description=__doc__.split("\n\n")[0])
    p.add_argument("--no-tf32", action="store_true", help="leave out the float32 + TF32 check")
    args = p.parse_args(argv)
    usable, why = _probe_cuda()
    if not usable:
        print(f"error: the CUDA self-test needs a GPU: {why}", file=sys.stderr)
        return 2
    tf32 = not args.no_tf32
    print(f"minigrad CUDA self-test on {cache_key(tf32)}", flush=True)
    print(f"{'case':<16}{'check':<14}{'max error':>12}{'tolerance':>12}  result", flush=True)

    def report(row):
        name, check, error, tolerance, ok, message = row
        print(f"{name:<16}{check:<14}{error:>12.2e}{tolerance:>12.1e}  {'ok' if ok else 'FAIL ' + message}",
              flush=True)
    rows = results(collect(__package__), tf32, report)         # this package's ops, as fast_ops()'s
    store(rows, tf32)
    failed = sum(not row[4] for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
