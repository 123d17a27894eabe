"""NumPy twins of minigrad's CUDA kernels (minigrad/cuda/src/*.cu), for the CuPy stand-in.

The stand-in runs a kernel launch by calling its twin with the launch's arguments: device
arrays become the NumPy arrays behind them (written in place, as the kernel writes device
memory) and scalars stay NumPy scalars of the kernel's parameter types. Each twin does
what its kernel does, on the same flat buffers and with the same scalar arguments, written
as whole-array NumPy instead of one thread per element; it also checks that the grid
covers the work, as a kernel's bounds checks assume. Twins deliberately do not call the
minigrad reference ops: the tests compare the two.
"""
import numpy as np

from minigrad.dropout import mix32


def covers(grid, block, n):
    """Assert that a 1-D launch has at least n threads."""
    assert grid[0] * block[0] >= n, f"launch of {grid[0]} x {block[0]} threads does not cover {n} elements"


def keep(seed, second, index, threshold):
    """dropout_keep (src/common.cuh) on uint64 flat indices."""
    low = index.astype(np.uint32)
    high = (index >> np.uint64(32)).astype(np.uint32)
    h = mix32(mix32(low ^ np.uint32(seed)) ^ (high + np.uint32(second)))
    return (h >> np.uint32(8)) >= np.uint32(threshold)


def dropout_factor(use_dropout, seed, second, index, threshold, scale, dtype):
    if not use_dropout:
        return np.ones(index.shape, dtype)
    return np.where(keep(seed, second, index, threshold), scale, 0).astype(dtype)


# --- elementwise.cu

GELU_K, GELU_C = 0.7978845608028654, 0.044715


def gelu_forward(x, out, n, *, grid, block, **_):
    covers(grid, block, n)
    k, c = x.dtype.type(GELU_K), x.dtype.type(GELU_C)
    t = np.tanh(k * (x + c * x * x * x))
    out[...] = x.dtype.type(0.5) * x * (1 + t)


def gelu_backward(dout, x, dx, n, *, grid, block, **_):
    covers(grid, block, n)
    k, c = x.dtype.type(GELU_K), x.dtype.type(GELU_C)
    t = np.tanh(k * (x + c * x * x * x))
    du = k * (1 + 3 * c * x * x)
    dx[...] = dout * (x.dtype.type(0.5) * (1 + t) + x.dtype.type(0.5) * x * (1 - t * t) * du)


def add_bias(out, bias, n, width, *, grid, block, **_):
    covers(grid, block, n)
    out.reshape(-1, width)[...] += bias


def dropout_apply(x, out, n, seed, second, threshold, scale, first, *, grid, block, **_):
    covers(grid, block, n)
    index = np.arange(n, dtype=np.uint64) + np.uint64(first)
    out.reshape(-1)[...] = x.reshape(-1) * dropout_factor(1, seed, second, index, threshold, scale, x.dtype)


# --- layernorm.cu

def _rows(a, C):
    return a.reshape(-1, C)


def _layernorm_rows(x, w, b, out, xhat, rstd, C, eps, grid, block):
    x2 = _rows(x, C)
    assert grid[0] == x2.shape[0] and block[0] * 8 >= C and block[0] % 32 == 0, "one block per row, 8 columns a thread"
    mean = x2.sum(axis=1, keepdims=True) / C
    r = 1 / np.sqrt(((x2 - mean) ** 2).sum(axis=1, keepdims=True) / C + eps)
    h = (x2 - mean) * r
    _rows(xhat, C)[...] = h
    _rows(out, C)[...] = h * w + b
    rstd.reshape(-1, 1)[...] = r


def layernorm_forward(x, w, b, out, xhat, rstd, C, eps, *, grid, block, **_):
    _layernorm_rows(x, w, b, out, xhat, rstd, int(C), eps, grid, block)


def residual_layernorm_forward(x, a, s, w, b, out, xhat, rstd, C, eps, *, grid, block, **_):
    s[...] = x + a
    _layernorm_rows(s, w, b, out, xhat, rstd, int(C), eps, grid, block)


def layernorm_backward(dout, xhat, rstd, w, dx, partial, N, C, rows_per_block, *, grid, block, **_):
    N, C, per = int(N), int(C), int(rows_per_block)
    assert grid[0] * per >= N and block[0] * 8 >= C
    d, h = _rows(dout, C), _rows(xhat, C)
    g = d * w
    avg_g = g.sum(axis=1, keepdims=True) / C
    avg_gx = (g * h).sum(axis=1, keepdims=True) / C
    _rows(dx, C)[...] = rstd.reshape(-1, 1) * (g - avg_g - h * avg_gx)
    parts = partial.reshape(grid[0], 2, C)
    for blk in range(grid[0]):
        rows = slice(blk * per, min(blk * per + per, N))
        parts[blk, 0] = (d[rows] * h[rows]).sum(axis=0)
        parts[blk, 1] = d[rows].sum(axis=0)


def layernorm_param_grads(partial, dweight, dbias, n_blocks, C, *, grid, block, **_):
    C = int(C)
    covers(grid, block, 2 * C)
    sums = partial.reshape(int(n_blocks), 2, C).sum(axis=0)
    dweight += sums[0]
    dbias += sums[1]


# --- attention.cu

def qkv_split(qkv, bias, q, k, v, B, Tn, H, hs, L, t0, *, grid, block, **_):
    B, Tn, H, hs, L, t0 = map(int, (B, Tn, H, hs, L, t0))
    C = H * hs
    covers(grid, block, B * Tn * 3 * C)
    full = (qkv.reshape(B, Tn, 3 * C) + bias).reshape(B, Tn, 3, H, hs).transpose(2, 0, 3, 1, 4)   # (3, B, H, T, hs)
    q.reshape(B, H, Tn, hs)[...] = full[0]
    k.reshape(B, H, L, hs)[:, :, t0:t0 + Tn] = full[1]
    v.reshape(B, H, L, hs)[:, :, t0:t0 + Tn] = full[2]


def split_heads(rows, heads, B, Tn, H, hs, *, grid, block, **_):
    B, Tn, H, hs = map(int, (B, Tn, H, hs))
    covers(grid, block, B * Tn * H * hs)
    heads.reshape(B, H, Tn, hs)[...] = rows.reshape(B, Tn, H, hs).transpose(0, 2, 1, 3)


def merge_heads(heads, rows, B, Tn, H, hs, *, grid, block, **_):
    B, Tn, H, hs = map(int, (B, Tn, H, hs))
    covers(grid, block, B * Tn * H * hs)
    rows.reshape(B, Tn, H, hs)[...] = heads.reshape(B, H, Tn, hs).transpose(0, 2, 1, 3)


def merge_qkv_heads(dq, dk, dv, dqkv, B, Tn, H, hs, *, grid, block, **_):
    B, Tn, H, hs = map(int, (B, Tn, H, hs))
    covers(grid, block, B * Tn * 3 * H * hs)
    out = dqkv.reshape(B, Tn, 3, H, hs)
    for i, src in enumerate((dq, dk, dv)):
        out[:, :, i] = src.reshape(B, H, Tn, hs).transpose(0, 2, 1, 3)


def _visible(rows, Tn, S, t0):
    """(rows, S) bool: key j is visible from row r when j <= t0 + r % T."""
    last = t0 + np.arange(rows) % Tn
    return np.arange(S)[None, :] <= last[:, None]


def softmax_forward(att, dropped, rows, Tn, S, t0, scale, use_dropout, seed, second, threshold, drop_scale, first, *,
                    grid, block, **_):
    rows, Tn, S, t0 = map(int, (rows, Tn, S, t0))
    assert grid[0] * (block[0] // 32) >= rows and block[0] % 32 == 0, "one warp per row"
    a = att.reshape(rows, S)
    visible = _visible(rows, Tn, S, t0)
    z = np.where(visible, a * scale, -np.inf)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    a[...] = e / e.sum(axis=1, keepdims=True)
    if use_dropout:
        index = np.arange(rows * S, dtype=np.uint64).reshape(rows, S) + np.uint64(first)
        dropped.reshape(rows, S)[...] = a * dropout_factor(1, seed, second, index, threshold, drop_scale, a.dtype)


def softmax_backward(dp, probs, rows, Tn, S, t0, scale, use_dropout, seed, second, threshold, drop_scale, first, *,
                     grid, block, **_):
    rows, Tn, S, t0 = map(int, (rows, Tn, S, t0))
    assert grid[0] * (block[0] // 32) >= rows
    g = dp.reshape(rows, S)
    p = probs.reshape(rows, S)
    index = np.arange(rows * S, dtype=np.uint64).reshape(rows, S) + np.uint64(first)
    g = g * dropout_factor(use_dropout, seed, second, index, threshold, drop_scale, g.dtype)
    visible = _visible(rows, Tn, S, t0)
    dot = np.where(visible, g * p, 0).sum(axis=1, keepdims=True)
    dp.reshape(rows, S)[...] = np.where(visible, p * (g - dot) * scale, 0)


# --- crossentropy.cu

def crossentropy_forward(logits, targets, rowmax, rowsum, nll, V, Vp, ignore_index, *, grid, block, **_):
    V, Vp = int(V), int(Vp)
    z = logits.reshape(-1, Vp)[:, :V]
    assert grid[0] == z.shape[0]
    m = z.max(axis=1)
    s = np.exp(z - m[:, None]).sum(axis=1)
    rowmax[...], rowsum[...] = m, s
    t = targets.reshape(-1)
    valid = (t >= 0) & (t < V)
    picked = z[np.arange(len(t)), np.where(valid, t, 0)]
    value = np.where(valid, np.log(s) - (picked - m), np.nan)
    nll[...] = np.where(t == ignore_index, 0, value)


def crossentropy_loss(nll, targets, out, N, ignore_index, *, grid, block, **_):
    assert grid[0] == 1
    count = max(float((targets != ignore_index).sum()), 1.0)
    out[0] = nll.sum() / out.dtype.type(count)
    out[1] = count


def crossentropy_backward(logits, rowmax, rowsum, targets, loss_and_count, dloss, V, Vp, ignore_index, *, grid,
                          block, **_):
    V, Vp = int(V), int(Vp)
    z = logits.reshape(-1, Vp)
    assert grid[0] == z.shape[0]
    t = targets.reshape(-1)
    scale = np.where(t == ignore_index, 0, dloss / loss_and_count[1]).astype(z.dtype)
    p = np.exp(z[:, :V] - rowmax[:, None]) / rowsum[:, None]
    p[np.arange(len(t)), np.clip(t, 0, V - 1)] -= np.where((t >= 0) & (t < V), 1, 0).astype(z.dtype)
    z[:, V:] = 0
    z[:, :V] = p * scale[:, None]


# --- embedding.cu

def embedding_forward(idx, wte, wpe, out, BT, Tn, C, *, grid, block, **_):
    BT, Tn, C = int(BT), int(Tn), int(C)
    covers(grid, block, BT * C)
    rows = idx.reshape(-1)
    out.reshape(BT, C)[...] = wte.reshape(-1, C)[rows] + np.tile(wpe.reshape(-1, C)[:Tn], (BT // Tn, 1))


def embedding_sort_keys(idx, keys, BT, *, grid, block, **_):
    covers(grid, block, int(BT))
    keys[...] = idx.reshape(-1) * np.int64(BT) + np.arange(int(BT), dtype=np.int64)


def embedding_backward_wte(sorted_keys, dout, dwte, BT, C, *, grid, block, **_):
    BT, C = int(BT), int(C)
    assert grid[0] == BT
    assert np.all(np.diff(sorted_keys) > 0), "keys must be sorted"
    tokens, positions = sorted_keys // BT, sorted_keys % BT
    d, table = dout.reshape(BT, C), dwte.reshape(-1, C)
    starts = np.flatnonzero(np.r_[True, tokens[1:] != tokens[:-1]])
    ends = np.r_[starts[1:], BT]
    for s, e in zip(starts, ends):                       # one run of one token, positions ascending
        total = np.zeros(C, dtype=d.dtype)
        for j in range(s, e):
            total += d[positions[j]]
        table[tokens[s]] += total


def embedding_backward_wpe(dout, dwpe, B, Tn, C, *, grid, block, **_):
    B, Tn, C = int(B), int(Tn), int(C)
    covers(grid, block, Tn * C)
    dwpe.reshape(-1, C)[:Tn] += dout.reshape(B, Tn, C).sum(axis=0)


# --- optim.cu

NORM_BLOCKS = 1024


def sum_squares(g, partial, n, *, grid, block, **_):
    assert grid[0] == NORM_BLOCKS
    threads = grid[0] * block[0]
    squares = g.astype(np.float64) ** 2
    padded = np.zeros(-(-len(squares) // threads) * threads)
    padded[:len(squares)] = squares
    per_thread = padded.reshape(-1, threads).sum(axis=0)            # grid-stride loop
    partial[...] = per_thread.reshape(grid[0], block[0]).sum(axis=1)


def clip_scale(partial, norm_scale, max_norm, *, grid, block, **_):
    assert grid[0] == 1
    norm = np.sqrt(partial.sum())
    norm_scale[0] = norm
    norm_scale[1] = max_norm / (norm + 1e-6) if max_norm > 0 and norm > max_norm else 1.0


def scale_by(g, norm_scale, n, *, grid, block, **_):
    covers(grid, block, int(n))
    g *= norm_scale[1]


def adamw_update(p, g, m, v, decay_bounds, n_bounds, n, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, decay,
                 bias1, bias2, *, grid, block, **_):
    covers(grid, block, int(n))
    index = np.arange(int(n))
    decayed = np.searchsorted(decay_bounds[:int(n_bounds)], index, side="right") % 2 == 1
    param = np.where(decayed, p * decay, p)
    m[...] = m * beta1 + one_minus_beta1 * g
    v[...] = v * beta2 + one_minus_beta2 * g * g
    p[...] = param - lr * (m / bias1) / (np.sqrt(v / bias2) + eps)


TWINS = {name: fn for name, fn in dict(globals()).items()
         if callable(fn) and not name.startswith("_") and name not in ("covers", "keep", "dropout_factor", "mix32")}
