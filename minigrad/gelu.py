"""GELU, tanh approximation (the one GPT-2 uses).

forward:  u = k (x + c x^3),  k = sqrt(2 / pi),  c = 0.044715
          t = tanh(u),  out = 0.5 x (1 + t)
backward: dout/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) u',   u' = k (1 + 3 c x^2)
"""
import math

from .backend import get_array_module

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def gelu_forward(x, keep_grad=True):
    """x (...) -> out (...) of the same shape and dtype. keep_grad=False (inference) keeps no
    cache; backward then cannot be called."""
    xp = get_array_module(x)
    t = xp.tanh(GELU_K * (x + GELU_C * x * x * x))                  # (...)
    out = 0.5 * x * (1.0 + t)                                        # (...)
    return out, (x if keep_grad else None)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...) = dout * gelu'(x)."""
    xp = get_array_module(dout)
    x = cache                                                        # (...)
    t = xp.tanh(GELU_K * (x + GELU_C * x * x * x))                  # (...) tanh(u), as in forward
    du = GELU_K * (1.0 + 3.0 * GELU_C * x * x)                      # (...) u'
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
