"""Linear on the CPU: the reference pair (minigrad/linear.py) with two memory-traffic savings.

- The bias is added in place into the matmul's output (no second (N, OUT) array).
- The tied output head passes `wte.T`, an F-ordered view, as `dw`. Accumulating
  x^T @ dout into it would write through strides; instead dout^T @ x is added into the
  contiguous `dw.T`, the same sum in the memory's own order.
"""


def linear_forward(x, w, b):
    """x (..., IN), w (IN, OUT), b (OUT,) or None -> out (..., OUT)."""
    x2 = x.reshape(-1, x.shape[-1])      # (N, IN)
    out = x2 @ w                         # (N, OUT)
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], w.shape[1]), (x, w)


def linear_backward(dout, cache, dw, db):
    """dout (..., OUT); accumulates dw (IN, OUT) and db (OUT,) (db may be None); returns dx (..., IN)."""
    x, w = cache
    x2 = x.reshape(-1, x.shape[-1])                  # (N, IN)
    dout2 = dout.reshape(-1, dout.shape[-1])         # (N, OUT)
    if dw.flags.f_contiguous and not dw.flags.c_contiguous:   # a transposed view (the tied head)
        dw_t = dw.T                                  # (OUT, IN), contiguous
        dw_t += dout2.T @ x2
    else:
        dw += x2.T @ dout2                           # (IN, OUT)
    if db is not None:
        db += dout2.sum(axis=0)                      # (OUT,)
    return (dout2 @ w.T).reshape(x.shape)            # (..., IN)
