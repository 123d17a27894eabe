"""The `cupy` namespace: transfers, creation, the functions CuPy adds, and every other real
cupy function delegated to its NumPy namesake (see `resolve`).

Delegated functions unwrap fake arrays (refusing host arrays), run NumPy on the backing arrays
and count by array.call_numpy's rule (1 launch when they write or make a new array, 0 for views
and host values), with these exceptions:
"""
import math
import sys

import numpy as np
from _standin import array as arrays, kernels, memory, state
from _standin.array import PY_SCALARS, backing, call_numpy, ndarray, wrap
from _standin.names import NAMES, check_keywords

HOST_SIDE = frozenset({   # read only shapes and dtypes: no launch, host arrays allowed
    "ndim", "shape", "size", "isscalar", "iscomplexobj", "isrealobj", "isfortran",
    "result_type", "can_cast", "common_type", "min_scalar_type", "may_share_memory",
    "shares_memory"})
NO_LAUNCH = frozenset({"empty", "empty_like"})   # allocate only (their memory is poisoned)
PER_INPUT = frozenset({"concatenate", "concat", "stack", "hstack", "vstack", "dstack",
                       "column_stack", "row_stack"})   # one copy kernel per input array
SYNCING = frozenset({  # output size depends on the data: CuPy reads a count back (1 d2h + 1 sync)
    "nonzero", "flatnonzero", "argwhere", "unique", "unique_all", "unique_counts",
    "unique_inverse", "unique_values", "extract", "compress", "intersect1d", "setdiff1d",
    "setxor1d", "union1d", "trim_zeros"})
DEVICE_SCALAR = frozenset({"allclose", "array_equal", "array_equiv", "count_nonzero"})
# ^ NumPy returns a Python scalar, CuPy a 0-d array
ALLOCATORS = {"empty": ("shape", "dtype"), "zeros": ("shape", "dtype"),
              "ones": ("shape", "dtype"), "full": ("shape", "fill_value", "dtype"),
              "empty_like": ("a", "dtype", "order", "subok", "shape"),
              "zeros_like": ("a", "dtype", "order", "subok", "shape"),
              "ones_like": ("a", "dtype", "order", "subok", "shape"),
              "full_like": ("a", "fill_value", "dtype", "order", "subok", "shape")}
RENAMED = {"round_": "round", "product": "prod", "cumproduct": "cumprod", "alltrue": "all",
           "sometrue": "any", "trapz": "trapezoid"}   # NumPy 1 names CuPy keeps
VALUES = {"Inf": math.inf, "Infinity": math.inf, "infty": math.inf, "PINF": math.inf,
          "NINF": -math.inf, "NaN": math.nan, "NAN": math.nan, "PZERO": 0.0, "NZERO": -0.0,
          "float_": np.float64, "complex_": np.complex128, "cfloat": np.complex128,
          "singlecomplex": np.complex64, "AxisError": np.exceptions.AxisError,
          "ComplexWarning": np.exceptions.ComplexWarning, "RankWarning": np.exceptions.RankWarning,
          "TooHardError": np.exceptions.TooHardError,
          "VisibleDeprecationWarning": np.exceptions.VisibleDeprecationWarning,
          "ModuleDeprecationWarning": np.exceptions.ModuleDeprecationWarning}
UNIMPLEMENTED = frozenset({  # host I/O, printing, host callbacks: NumPy's would bypass the rules
    "load", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromfile",
    "frombuffer", "fromstring", "fromiter", "fromfunction", "array2string", "array_repr",
    "array_str", "disp", "who", "DataSource", "apply_along_axis", "apply_over_axes",
    "piecewise", "vectorize", "show_config", "from_dlpack", "fromDlpack"})
__doc__ += "".join(f"\n  {name}: {', '.join(sorted(names))}" for name, names in (
    ("HOST_SIDE (0 launches, host arrays allowed)", HOST_SIDE),
    ("NO_LAUNCH (allocation only, memory poisoned)", NO_LAUNCH),
    ("PER_INPUT (1 launch per input array)", PER_INPUT),
    ("SYNCING (+1 d2h, +1 sync)", SYNCING),
    ("DEVICE_SCALAR (0-d result)", DEVICE_SCALAR)))


def _requested_bytes(name, args, kwargs):
    """Bytes an allocator call asks for, known before NumPy allocates (for the memory limit)."""
    bound = dict(zip(ALLOCATORS[name], args), **kwargs)
    like = bound.get("a")
    if like is not None:
        shape = bound.get("shape") or like.shape
        dtype = bound.get("dtype") or like.dtype
    else:
        shape = bound["shape"]
        dtype = bound.get("dtype") or (np.asarray(bound["fill_value"]).dtype if name == "full"
                                       else np.float64)
    count = math.prod(shape) if isinstance(shape, (tuple, list)) else int(shape)
    return count * np.dtype(dtype).itemsize


def delegate(name, np_func):
    """cupy.<name> running numpy function `np_func` under the rules of this module."""
    qualname = f"cupy.{name}"
    host_ok = name in HOST_SIDE
    launches = 0 if host_ok or name in NO_LAUNCH else (1 if name in DEVICE_SCALAR else None)
    syncs = name in SYNCING

    def function(*args, **kwargs):
        if kwargs:
            check_keywords(qualname, kwargs)
        if name in ALLOCATORS:
            memory.check_room(_requested_bytes(name, args, kwargs))
        n = len(args[0]) if name in PER_INPUT and args else launches
        result = call_numpy(np_func, args, kwargs, launches=n, syncs=syncs, host_ok=host_ok)
        if name in NO_LAUNCH:
            arrays.poison(backing(result))
        elif launches == 1 and type(result) in PY_SCALARS:
            result = wrap(np.asarray(result))
        return result

    function.__name__ = function.__qualname__ = name
    function.__module__ = "cupy"
    function.__doc__ = f"cupy.{name}: numpy.{np_func.__name__} on the device (cupy stand-in)."
    return function


# ---- transfers and conversions ----------------------------------------------------------

def _contains_fake(obj):
    return type(obj) is ndarray or (type(obj) in (list, tuple) and any(map(_contains_fake, obj)))


def _from_host(obj, dtype, order, copy, ndmin=0):
    """A new device array from host data: 1 h2d (a nested sequence of fake arrays and scalars
    is assembled on the device instead: 1 launch)."""
    if _contains_fake(obj):
        return call_numpy(np.array, (obj,), {"dtype": dtype, "ndmin": ndmin}, launches=1)
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    host = np.array(obj, dtype=dtype, order=order or "K", copy=True, ndmin=ndmin)
    memory.check_room(host.nbytes)
    state.record("h2d")
    return wrap(host)


def _needs_copy(a, dtype, order):
    return ((dtype is not None and np.dtype(dtype) != a.dtype)
            or (order == "C" and not a.flags.c_contiguous)
            or (order == "F" and not a.flags.f_contiguous))


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """A device array: `a` itself when it already is one (and fits dtype/order), a copy
    (1 launch) when it must change, a transfer (1 h2d) from host data."""
    if type(a) is not ndarray:
        return _from_host(a, dtype, order, copy)
    if not (copy or _needs_copy(backing(a), dtype, order)):
        return a
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    return call_numpy(np.array, (a,), {"dtype": dtype, "order": order or "K", "copy": True})


def asanyarray(a, dtype=None, order=None, *, blocking=False):
    return asarray(a, dtype, order)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device array; from a device array it copies (1 launch) unless copy is False/None."""
    if type(obj) is not ndarray:
        return _from_host(obj, dtype, order, copy, ndmin)
    a = backing(obj)
    if not copy and not _needs_copy(a, dtype, order) and a.ndim >= ndmin:
        return obj
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array as requested.")
    return call_numpy(np.array, (obj,), {"dtype": dtype, "order": order, "copy": True,
                                         "ndmin": ndmin})


def ascontiguousarray(a, dtype=None):
    """`a` when already C-contiguous (and of dtype), else a C-contiguous copy (1 launch)."""
    if type(a) is not ndarray:
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base,"
                        f" got {type(a).__name__})")
    if not _needs_copy(backing(a), dtype, "C"):
        return a
    return call_numpy(np.ascontiguousarray, (a,), {"dtype": dtype})


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A host array: of a device array by a transfer (1 d2h, 1 sync when blocking)."""
    if type(a) is ndarray:
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    if out is None:
        return np.asarray(a, order=order)
    out[...] = a
    return out


def get_array_module(*args):
    """The (fake) cupy module when any argument is a device array, else numpy."""
    for arg in args:
        if type(arg) is ndarray:
            return sys.modules["cupy"]
    return np


def where(condition, x=None, y=None):
    """1 launch; with only a condition it is nonzero (which syncs)."""
    if x is None and y is None:
        return call_numpy(np.nonzero, (condition,), {}, syncs=True)
    if x is None or y is None:
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    return call_numpy(np.where, (condition, x, y), {}, launches=1)


def get_default_memory_pool():
    return memory.DEFAULT_POOL


def is_available():
    return True


TABLE = {
    "__version__": NAMES["cupy_version"], "ndarray": ndarray, "ufunc": arrays.ufunc,
    "matmul": arrays.matmul, "dot": arrays.dot, "RawModule": kernels.RawModule,
    "RawKernel": kernels.RawKernel, "ElementwiseKernel": kernels.ElementwiseKernel,
    "ReductionKernel": kernels.ReductionKernel, **arrays.UFUNCS, **VALUES,
    **{f.__name__: f for f in (asarray, asanyarray, array, ascontiguousarray, asnumpy,
                               get_array_module, where, get_default_memory_pool, is_available)},
}
for _f in TABLE.values():
    if callable(_f) and getattr(_f, "__module__", None) == __name__:
        _f.__module__ = "cupy"       # so pickle finds e.g. cupy.array


NUMPY_IDENTICAL = frozenset(NAMES["numpy_identical"])


def resolve(name):
    """A real cupy name the TABLE lacks: the very numpy object where CuPy uses it, else the
    NumPy function of the same (or the renamed) name, delegated. LookupError: not implemented."""
    if name in NUMPY_IDENTICAL:
        return getattr(np, name)
    np_func = vars(np).get(RENAMED.get(name, name))
    if name in UNIMPLEMENTED or np_func is None or isinstance(np_func, type) or not callable(np_func):
        raise LookupError(name)
    return delegate(name, np_func)
