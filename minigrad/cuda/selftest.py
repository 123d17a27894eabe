"""Every CUDA op against its reference pair, on this GPU: python -m minigrad.cuda.selftest

Each case draws random inputs with odd shapes, runs the fast op and the reference op (the
reference on CuPy too) and compares every output and gradient, in float64 (tolerance
1e-9 of the reference's scale) and float32 (2e-3: TF32 products round to 10-bit mantissas).
fast_ops() calls failing_ops() once per process and caches the answer per device and
kernel source, so that a broken or uncompilable kernel costs one warning, not a run.
"""
import json
import math
import os
import sys

import cupy
import numpy as np

from ..kernels import reference_ops
from .sources import source_hash

TOLERANCE = {np.float64: 1e-9, np.float32: 2e-3}


def _arrays(dtype, rng, *shapes):
    return [cupy.asarray(rng.standard_normal(shape).astype(dtype)) for shape in shapes]


def case_linear(dtype, rng, ops):
    x, w, b, dout = _arrays(dtype, rng, (2, 5, 7), (7, 9), (9,), (2, 5, 9))
    head, dhead = _arrays(dtype, rng, (9, 7), (2, 5, 9))            # a tied head: w = wte^T
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
        x, w_qkv, b_qkv, w_proj, b_proj, dout = _arrays(dtype, rng, (B, T, C), (C, 3 * C), (3 * C,), (C, C), (C,),
                                                        (B, T, C))
        for p, first_row in ((0.0, 0), (0.25, 0), (0.25, 5)):        # first_row: a shard's place in its batch
            grads = [cupy.zeros_like(a) for a in (w_qkv, b_qkv, w_proj, b_proj)]
            out, cache = ops.attention_forward(x, w_qkv, b_qkv, w_proj, b_proj, H, p, 99, first_row=first_row)
            results += [out, ops.attention_backward(dout, cache, *grads), *grads]
    B, T, C, H = 2, 7, 12, 3
    x, w_qkv, b_qkv, w_proj, b_proj = _arrays(dtype, rng, (B, T, C), (C, 3 * C), (3 * C,), (C, C), (C,))
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


def run_case(case, fast, reference, dtype):
    """-> (max error relative to the reference's scale, or inf on a failure, and a message)."""
    ours_ops, ref_ops = _namespace(reference), _namespace(reference)
    for name in CASES[case]:
        setattr(ours_ops, name, fast[name])
    try:
        ours = case(dtype, np.random.default_rng(0), ours_ops)
        ref = case(dtype, np.random.default_rng(0), ref_ops)
        worst = 0.0
        for a, b in zip(ours, ref):
            a, b = cupy.asnumpy(a).astype(np.float64), cupy.asnumpy(b).astype(np.float64)
            if a.shape != b.shape:
                return math.inf, f"shape {a.shape} != {b.shape}"
            scale = max(1.0, float(np.abs(b).max(initial=0.0)))
            worst = max(worst, float(np.abs(a - b).max(initial=0.0)) / scale)
        return worst, ""
    except Exception as e:                                   # a compile error, a launch failure
        return math.inf, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _namespace(ops):
    from types import SimpleNamespace
    return SimpleNamespace(**ops)


def results(fast):
    """[(case name, dtype name, max error, tolerance, ok, message)] for every case."""
    reference = reference_ops()
    rows = []
    for case in CASES:
        for dtype in (np.float64, np.float32):
            error, message = run_case(case, fast, reference, dtype)
            tolerance = TOLERANCE[dtype]
            rows.append((case.__name__[5:], np.dtype(dtype).name, error, tolerance, error <= tolerance, message))
    return rows


def _cache_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minigrad", "cuda_selftest.json")


def _device_key():
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"{name}|sm{props['major']}{props['minor']}|cupy {cupy.__version__}|{source_hash()}"


_FAILING = None


def failing_ops():
    """The op names whose case fails on this device (checked once per process, and cached on
    disk per device and kernel source); prints one warning line per failing case."""
    global _FAILING
    if _FAILING is not None:
        return _FAILING
    path, key = _cache_path(), _device_key()
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), list):
        failed = cached[key]
    else:
        from . import fast_ops
        failed = [(name, dtype, message or f"max error {error:.1e} > {tolerance:.0e}")
                  for name, dtype, error, tolerance, ok, message in results(fast_ops(check=False)) if not ok]
        cached = cached if isinstance(cached, dict) else {}
        cached[key] = failed
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(cached, f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass                                             # no cache: the checks run again next time
    names = {case.__name__[5:]: ops for case, ops in CASES.items()}
    _FAILING = sorted({op for name, _, _ in failed for op in names.get(name, ())})
    for name, dtype, why in failed:
        print(f"warning: minigrad.cuda: the {name} kernels fail their self-test on this GPU ({dtype}: {why}); "
              "using the reference ops for them", file=sys.stderr)
    return _FAILING


def main():
    from ..backend import _probe_cuda
    from . import fast_ops
    usable, why = _probe_cuda()
    if not usable:
        print(f"error: the CUDA self-test needs a GPU: {why}", file=sys.stderr)
        return 2
    print(f"minigrad CUDA self-test on {_device_key()}")
    print(f"{'case':<16}{'dtype':<9}{'max error':>12}{'tolerance':>12}  result")
    rows = results(fast_ops(check=False))
    for name, dtype, error, tolerance, ok, message in rows:
        print(f"{name:<16}{dtype:<9}{error:>12.2e}{tolerance:>12.0e}  {'ok' if ok else 'FAIL ' + message}")
    failed = sum(not row[4] for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
