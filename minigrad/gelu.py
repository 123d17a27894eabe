"""GELU, tanh approximation (the one GPT-2 uses).

forward:  u = k * (x + 0.044715 x^3),  k = sqrt(2 / pi)
          t = tanh(u),  out = 0.5 * x * (1 + t)
backward: dout/dx = 0.5 * (1 + t) + 0.5 * x * (1 - t^2) * k * (1 + 3 * 0.044715 x^2)
Each formula is a handful of in-place passes, done one cache-sized chunk of rows at a time
(`row_chunks`). x^3 is written x*x*x: NumPy's float32 power is far slower than two multiplies.
"""
import math

from .backend import get_array_module, row_chunks

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def gelu_forward(x):
    """x (...) -> out (...) of the same shape and dtype."""
    xp = get_array_module(x)
    out, t = xp.empty_like(x), xp.empty_like(x)       # t = tanh(u), kept for backward
    x2, t2, out2 = (a.reshape(-1, x.shape[-1]) for a in (x, t, out))   # (N, D)
    for rows in row_chunks(x2):
        xs, ts, outs = x2[rows], t2[rows], out2[rows]
        xp.multiply(xs, xs, out=ts)                   # u = x (k + k c x^2)
        ts *= GELU_K * GELU_C
        ts += GELU_K
        ts *= xs
        xp.tanh(ts, out=ts)                           # t = tanh(u)
        xp.add(ts, 1.0, out=outs)                     # out = 0.5 x (1 + t)
        outs *= xs
        outs *= 0.5
    return out, (x, t)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...)."""
    x, t = cache
    xp = get_array_module(dout)
    dx = xp.empty_like(dout)
    x2, t2, dout2, dx2 = (a.reshape(-1, x.shape[-1]) for a in (x, t, dout, dx))   # (N, D)
    for rows in row_chunks(x2):
        xs, ts, dxs = x2[rows], t2[rows], dx2[rows]
        sech2 = ts * ts                               # 1 - t^2
        xp.subtract(1.0, sech2, out=sech2)
        xp.multiply(xs, xs, out=dxs)                  # x k (1 + 3c x^2)
        dxs *= 3.0 * GELU_C * GELU_K
        dxs += GELU_K
        dxs *= xs
        dxs *= sech2
        dxs += ts                                     # (1 + t) + x (1 - t^2) du/dx
        dxs += 1.0
        dxs *= dout2[rows]
        dxs *= 0.5
    return dx
