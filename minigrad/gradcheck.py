"""Central finite differences, for testing every backward against its forward.

For a scalar function f of arrays, the numerical gradient of element i is
  (f(x + h e_i) - f(x - h e_i)) / (2h)
with error O(h^2); in float64 with h = 1e-6 that leaves ~1e-9 relative error, far below the
size of any missing term in a backward.
"""
import numpy as np


def numerical_grad(f, x, h=1e-6):
    """d f() / d x by central differences; `x` is perturbed in place and restored."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = float(f())
        flat[i] = old - h
        f_minus = float(f())
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def compare(analytic, numeric):
    """(max absolute error, relative error) with the relative error taken against the
    tensor's scale: max|a - n| / max(max|a|, max|n|), so tiny elements do not dominate."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    abs_err = float(np.max(np.abs(analytic - numeric))) if analytic.size else 0.0
    scale = max(float(np.max(np.abs(analytic))), float(np.max(np.abs(numeric))), 1e-30) if analytic.size else 1.0
    return abs_err, abs_err / scale


def gradcheck(f, tensors, analytic_grads, h=1e-6):
    """f(): scalar function of the arrays in `tensors` (dict name -> array, read in place).
    analytic_grads: dict name -> gradient from backward.
    Returns {name: (max_abs_err, rel_err)} for every name."""
    return {name: compare(analytic_grads[name], numerical_grad(f, x, h)) for name, x in tensors.items()}
