import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))    # the shared helpers: runs, mpi_runs, models

from minigrad import kernels
from minigrad.gradcheck import gradcheck

# Relative error (gradcheck.compare) allowed between a backward and float64 central differences.
# Measured errors are ~1e-9 and below; a dropped term in any backward gives ~1e-2 or more.
GRAD_REL_BOUND = 1e-7


class StrictFloat(np.ndarray):
    """An array whose ufuncs (arithmetic, +=, matmul, reductions, add.at) refuse operands of two
    different float dtypes. Results stay StrictFloat, so everything computed from it is checked
    too. Catches a silent float64 temporary that an in-place `+=` would quietly cast back."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        operands = inputs + (out or ())
        floats = {str(a.dtype) for a in operands
                  if isinstance(a, (np.ndarray, np.generic)) and a.dtype.kind == "f"}
        assert len(floats) <= 1, f"np.{ufunc.__name__}.{method} mixes float dtypes {sorted(floats)}"
        plain = [a.view(np.ndarray) if isinstance(a, StrictFloat) else a for a in inputs]
        if out:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, StrictFloat) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out:
            return out[0] if len(out) == 1 else out
        return result.view(StrictFloat) if isinstance(result, np.ndarray) else result


class Pair:
    """One forward/backward pair bound to its arrays, following minigrad's conventions:
    forward(**tensors) -> (out, cache) and backward(dout, cache, **{'d'+name: grad}) -> dx,
    where every tensor except `x` (the input, whose gradient backward returns) is a weight
    whose gradient backward adds into the array it is given."""

    def __init__(self, forward, backward, tensors, x=None):
        self.forward, self.backward, self.tensors, self.x = forward, backward, tensors, x

    def run(self, dout, grads=None):
        """forward, then backward into `grads` ({name: array}; zeros by default)."""
        out, cache = self.forward(**self.tensors)
        if grads is None:
            grads = {n: np.zeros_like(a) for n, a in self.tensors.items() if n != self.x}
        dx = self.backward(dout, cache, **{"d" + n: g for n, g in grads.items()})
        return out, dx, grads

    def gradcheck(self, bound=GRAD_REL_BOUND, seed=0):
        """Every tensor's analytic gradient of f = sum(out * R) (so dout = R, a fixed random
        projection) against central differences; asserts rel error < bound. Also asserts that
        forward leaves its inputs and backward leaves dout untouched (a residual stream reuses
        dout). Returns {name: rel error}; `pytest -s` prints them."""
        before = {n: a.copy() for n, a in self.tensors.items()}
        out, _ = self.forward(**self.tensors)
        R = np.random.default_rng(seed).standard_normal(np.shape(out))
        dout = R.copy()
        _, dx, analytic = self.run(dout)
        for n, a in self.tensors.items():
            np.testing.assert_array_equal(a, before[n], err_msg=f"forward modified {n}")
        np.testing.assert_array_equal(dout, R, err_msg="backward modified dout")
        if self.x is not None:
            analytic[self.x] = dx
        errors = gradcheck(lambda: np.sum(self.forward(**self.tensors)[0] * R), self.tensors, analytic)
        rel = {n: e[1] for n, e in errors.items()}
        print(f"GRADCHECK {os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]} {rel}")
        assert max(rel.values()) < bound, f"relative errors {rel} exceed {bound}"
        return rel

    def check_accumulates(self):
        """Backward adds into the grads it is given: two calls leave twice one call's gradient."""
        dout = np.random.default_rng(1).standard_normal(np.shape(self.forward(**self.tensors)[0]))
        _, dx1, grads = self.run(dout)
        once = {n: g.copy() for n, g in grads.items()}
        assert once and all(np.any(g != 0) for g in once.values())
        _, dx2, grads = self.run(dout, grads)
        np.testing.assert_array_equal(dx1, dx2)
        for n in grads:
            np.testing.assert_allclose(grads[n], 2 * once[n], rtol=1e-12, atol=0, err_msg=n)

    def check_dtype(self, dtype):
        """Converts the tensors to `dtype` as StrictFloat (so no ufunc may mix in another float
        type, weight grads included); the output, the input gradient and every accumulated
        weight gradient keep `dtype`."""
        self.tensors = {n: a.astype(dtype).view(StrictFloat) for n, a in self.tensors.items()}
        dout = np.ones(np.shape(self.forward(**self.tensors)[0]), dtype)
        out, dx, grads = self.run(dout)
        assert out.dtype == dtype
        if self.x is not None:
            assert dx.dtype == dtype
        for n, g in grads.items():
            assert g.dtype == dtype, n


@pytest.fixture
def pair():
    """Pair(forward, backward, tensors, x=None): see the class."""
    return Pair


@pytest.fixture
def strict():
    """strict(array) -> a StrictFloat view: ufuncs on it fail if they mix float dtypes."""
    return lambda a: a.view(StrictFloat)


@pytest.fixture(params=["reference", "fast"])
def ops(request):
    """The CPU ops of one implementation: each test using it runs on the reference pairs and
    on the fast ones (minigrad.kernels)."""
    return kernels("cpu", request.param)


# ----------------------------------------------------------------------------- the CuPy stand-in

STANDIN = Path(__file__).resolve().parent / "support" / "cupy_standin"
SWAPPED = ("cupy", "cupy_backends", "standin", "_standin", "twins", "minigrad.cuda.")


def _swapped(name):
    return any(name == s or name.startswith(s if s.endswith(".") else s + ".") for s in SWAPPED)


def _unbind(names):
    """Drops the modules from sys.modules, and minigrad.cuda's submodules from the package's
    attributes too (else `from minigrad.cuda import gemm` returns the old module, bound to the
    old `cupy`)."""
    package = sys.modules.get("minigrad.cuda")
    for name in list(names):
        del sys.modules[name]
        if package is not None and name.startswith("minigrad.cuda.") and name.count(".") == 2:
            vars(package).pop(name.rsplit(".", 1)[1], None)


@pytest.fixture
def standin():
    """Installs the CuPy stand-in (tests/support/cupy_standin) as `cupy` for one test and yields its
    test-facing module (counting, memory limits, twins); then restores sys.modules."""
    saved = {name: module for name, module in sys.modules.items() if _swapped(name)}
    _unbind(saved)
    sys.path.insert(0, str(STANDIN))
    import standin as counters
    yield counters
    sys.path.remove(str(STANDIN))
    _unbind([n for n in sys.modules if _swapped(n)])
    sys.modules.update(saved)
    for name, module in saved.items():                   # `from minigrad.cuda import gemm` finds them
        if name.startswith("minigrad.cuda.") and name.count(".") == 2:
            setattr(sys.modules["minigrad.cuda"], name.rsplit(".", 1)[1], module)
