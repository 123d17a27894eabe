"""LayerNorm over the last axis, eps = 1e-5 as in GPT-2.

forward:  mean = avg(x),  rstd = 1 / sqrt(avg((x - mean)^2) + eps)
          xhat = (x - mean) * rstd,  out = xhat * weight + bias
backward: dweight += sum_rows dout * xhat,  dbias += sum_rows dout
          with g = dout * weight:
          dx = rstd * (g - avg(g) - xhat * avg(g * xhat))
(avg is the mean over the normalized axis C; the two avg terms come from mean and rstd
depending on every element of the row.) The passes run one cache-sized chunk of rows at a
time (`row_chunks`), and each row average is a matrix-vector product with a (C,) vector of
1/C, which BLAS does faster than NumPy's mean over short rows.
"""
from .backend import get_array_module, row_chunks

EPS = 1e-5


def layernorm_forward(x, weight, bias, eps=EPS):
    """x (..., C), weight (C,), bias (C,) -> out (..., C)."""
    xp = get_array_module(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)                            # (N, C)
    xhat, out = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype) # (N, 1)
    avg = xp.full(C, 1.0 / C, dtype=x.dtype)         # (C,)  a @ avg = row means of a
    for rows in row_chunks(x2):
        xs, xhats, outs, rstds = x2[rows], xhat[rows], out[rows], rstd[rows]
        xp.subtract(xs, (xs @ avg)[:, None], out=xhats)   # x - mean
        xp.multiply(xhats, xhats, out=outs)               # outs as scratch: (x - mean)^2
        xp.matmul(outs, avg, out=rstds[:, 0])             # var
        rstds += eps
        xp.sqrt(rstds, out=rstds)
        xp.divide(1.0, rstds, out=rstds)                  # rstd
        xhats *= rstds
        xp.multiply(xhats, weight, out=outs)
        outs += bias
    return out.reshape(x.shape), (xhat, rstd, weight)


def layernorm_backward(dout, cache, dweight, dbias):
    """dout (..., C); accumulates dweight (C,), dbias (C,); returns dx (..., C)."""
    xp = get_array_module(dout)
    xhat, rstd, weight = cache                       # (N, C), (N, 1), (C,)
    C = dout.shape[-1]
    dout2 = dout.reshape(-1, C)                      # (N, C)
    dx = xp.empty_like(dout2)
    avg = xp.full(C, 1.0 / C, dtype=dout.dtype)      # (C,)
    dbias += dout2.sum(axis=0)
    for rows in row_chunks(dout2):
        douts, xhats, dxs = dout2[rows], xhat[rows], dx[rows]
        prod = douts * xhats                         # dout * xhat
        dweight += prod.sum(axis=0)
        g = xp.multiply(douts, weight, out=dxs)      # g = dout * weight, built in dx
        xp.multiply(g, xhats, out=prod)              # g * xhat
        avg_gx = prod @ avg                          # (rows,) avg(g * xhat)
        g -= (g @ avg)[:, None]                      # g - avg(g)
        xp.multiply(xhats, avg_gx[:, None], out=prod)
        g -= prod                                    # - xhat * avg(g * xhat)
        g *= rstd[rows]
    return dx.reshape(dout.shape)
