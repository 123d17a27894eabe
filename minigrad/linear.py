"""Linear (affine) layer, GPT-2 style: W is stored (in, out) and applied as x @ W + b.

forward:  out = x @ W + b
backward: dW += x^T @ dout,  db += sum_rows dout,  dx = dout @ W^T
All leading dimensions are flattened into rows so each product is one 2-D matmul.
"""


def linear_forward(x, w, b):
    """x (..., IN), w (IN, OUT), b (OUT,) or None -> out (..., OUT)."""
    x2 = x.reshape(-1, x.shape[-1])                  # (N, IN)
    out = x2 @ w                                     # (N, OUT)
    if b is not None:
        out = out + b
    return out.reshape(*x.shape[:-1], w.shape[1]), (x, w)


def linear_backward(dout, cache, dw, db):
    """dout (..., OUT); accumulates dw (IN, OUT) and db (OUT,) (db may be None); returns dx (..., IN)."""
    x, w = cache                                     # (..., IN), (IN, OUT)
    x2 = x.reshape(-1, x.shape[-1])                  # (N, IN)
    dout2 = dout.reshape(-1, dout.shape[-1])         # (N, OUT)
    dw += x2.T @ dout2                               # (IN, OUT)
    if db is not None:
        db += dout2.sum(axis=0)                      # (OUT,)
    return (dout2 @ w.T).reshape(x.shape)            # (..., IN)
