"""LayerNorm over the last axis, eps = 1e-5 as in GPT-2.

forward:  mean = avg(x),  rstd = 1 / sqrt(avg((x - mean)^2) + eps)
          xhat = (x - mean) * rstd,  out = xhat * weight + bias
backward: dweight += sum_rows dout * xhat,  dbias += sum_rows dout
          with g = dout * weight (the gradient w.r.t. xhat):
          dx = rstd * (g - avg(g) - xhat * avg(g * xhat))
avg is the mean over the normalized axis C; the two avg terms come from mean and rstd
depending on every element of the row.
"""
from .backend import get_array_module

EPS = 1e-5


def layernorm_forward(x, weight, bias, eps=EPS):
    """x (..., C), weight (C,), bias (C,) -> out (..., C)."""
    xp = get_array_module(x)
    mean = x.mean(axis=-1, keepdims=True)                            # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)             # (..., 1) biased variance
    rstd = 1.0 / xp.sqrt(var + eps)                                  # (..., 1)
    xhat = (x - mean) * rstd                                         # (..., C)
    out = xhat * weight + bias                                       # (..., C)
    return out, (xhat, rstd, weight)


def layernorm_backward(dout, cache, dweight, dbias):
    """dout (..., C); accumulates dweight (C,), dbias (C,); returns dx (..., C)."""
    xhat, rstd, weight = cache                                       # (..., C), (..., 1), (C,)
    C = dout.shape[-1]
    dweight += (dout * xhat).reshape(-1, C).sum(axis=0)              # (C,)
    dbias += dout.reshape(-1, C).sum(axis=0)                         # (C,)
    g = dout * weight                                                # (..., C)
    avg_g = g.mean(axis=-1, keepdims=True)                           # (..., 1)
    avg_gx = (g * xhat).mean(axis=-1, keepdims=True)                 # (..., 1)
    return rstd * (g - avg_g - xhat * avg_gx)                        # (..., C)


def residual_layernorm_forward(x, a, weight, bias, eps=EPS):
    """The residual add and the LayerNorm after it, in one op (one kernel on a GPU):
    x, a (..., C) -> (s = x + a, layernorm(s), cache). Its backward is layernorm_backward:
    the add passes the gradient of s unchanged to both x and a."""
    s = x + a                                                        # (..., C)
    out, cache = layernorm_forward(s, weight, bias, eps)
    return s, out, cache
