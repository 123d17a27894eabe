"""GELU, tanh approximation (the one GPT-2 uses).

forward:  u = k * (x + 0.044715 x^3),  k = sqrt(2 / pi)
          t = tanh(u),  out = 0.5 * x * (1 + t)
backward: dout/dx = 0.5 * (1 + t) + 0.5 * x * (1 - t^2) * k * (1 + 3 * 0.044715 x^2)
x^3 is written x*x*x: NumPy's float32 power is far slower than two multiplies.
"""
import math

from .backend import get_array_module

GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


def gelu_forward(x):
    """x (...) -> out (...) of the same shape and dtype."""
    xp = get_array_module(x)
    t = x * x                                        # t is reused as scratch: x^2
    t *= GELU_C
    t += 1.0
    t *= x
    t *= GELU_K                                      # u = k (x + c x^3)
    xp.tanh(t, out=t)                                # t = tanh(u)
    out = t + 1.0
    out *= x
    out *= 0.5
    return out, (x, t)


def gelu_backward(dout, cache):
    """dout (...) -> dx (...)."""
    x, t = cache
    du = x * x                                       # (1 + 3c x^2) k
    du *= 3.0 * GELU_C
    du += 1.0
    du *= GELU_K
    sech2 = t * t                                    # 1 - t^2
    sech2 *= -1.0
    sech2 += 1.0
    du *= sech2
    du *= x
    du += 1.0
    du += t                                          # (1 + t) + x (1 - t^2) du/dx
    du *= 0.5
    du *= dout
    return du
