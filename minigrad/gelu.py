"""GELU, tanh approximation (the one GPT-2 uses).

forward:  u = k * (x + c x^3),  k = sqrt(2 / pi),  c = 0.044715
          t = tanh(u),  out = 0.5 * x * (1 + t)
backward: dout/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3c x^2)
                  = 0.5 (1 + t) (1 + x (1 - t) u'),   u' = k (1 + 3c x^2)
The derivative needs t, which forward has at hand, so forward computes it and caches it in
place of x and t: backward is then one multiply, and the cache holds one array instead of two.
x^3 is written x*x*x: NumPy's float32 power is far slower than two multiplies.
"""
import math

from .backend import get_array_module

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def gelu_forward(x, keep_grad=True):
    """x (...) -> out (...) of the same shape and dtype. keep_grad=False (inference) skips the
    derivative; backward then cannot be called."""
    xp = get_array_module(x)
    t = x * x                                        # u = x (k + k c x^2)
    t *= GELU_K * GELU_C
    t += GELU_K
    t *= x
    xp.tanh(t, out=t)                                # t = tanh(u)
    out = t + 1.0                                    # 1 + t
    dgelu = None
    if keep_grad:                                    # 0.5 (1 + t) (1 + x (1 - t) u')
        dgelu = x * x
        dgelu *= 3.0 * GELU_C * GELU_K
        dgelu += GELU_K                              # u'
        dgelu *= x
        xp.subtract(1.0, t, out=t)                   # 1 - t
        dgelu *= t
        dgelu += 1.0
        dgelu *= out
        dgelu *= 0.5
    out *= x                                         # out = 0.5 x (1 + t)
    out *= 0.5
    return out, dgelu


def gelu_backward(dout, cache):
    """dout (...) -> dx (...) = dout * gelu'(x)."""
    dgelu = cache
    return dout * dgelu
