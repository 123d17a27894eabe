"""cupy.random: Generator (default_rng) and the legacy module functions, drawn by NumPy.

The streams differ from CuPy's (no XORWOW here); shapes, dtypes and argument checks follow
CuPy. Every draw is 1 launch and returns a device array (0-d when size is None, as in CuPy).
"""
import numpy as np
from _standin import array
from _standin.array import call_numpy, ndarray, output
from _standin.names import CLASSES, check_keywords, hidden, restrict

# Generator methods whose NumPy twins take dtype= and out= as CuPy's do
_GENERATOR_DTYPE = frozenset({"random", "standard_normal", "standard_exponential",
                              "standard_gamma", "integers"})
_GENERATOR_OUT = frozenset({"random", "standard_normal", "standard_exponential", "standard_gamma"})


def _draw(sampler, qualname, args, kwargs, numpy_dtype=False, takes_out=False):
    """Calls NumPy `sampler` with CuPy's arguments: dtype (passed on when `numpy_dtype`, else
    cast afterwards) and out= (checked like CuPy, then filled)."""
    if kwargs:
        check_keywords(qualname, kwargs)
    out = kwargs.pop("out", None) if takes_out else None
    dtype = None if numpy_dtype else kwargs.pop("dtype", None)
    if out is not None:
        _check_output_array(np.dtype(kwargs.get("dtype", np.float64)), kwargs.get("size"), out)
        kwargs["size"] = out.shape
    result = call_numpy(sampler, args, kwargs)
    if type(result) is not ndarray:        # a Python scalar from NumPy's size=None
        result = array.wrap(np.asarray(result))
    if dtype is not None and np.dtype(dtype) != result.dtype:
        result = result.astype(dtype)
    if out is not None:
        np.copyto(output(out), array.backing(result))
        return out
    return result


def _check_output_array(dtype, size, out):
    a = output(out)
    if a.dtype.char != dtype.char:
        raise TypeError(f"Supplied output array has the wrong type. Expected {dtype.name}, "
                        f"got {a.dtype.name}")
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        raise ValueError("Supplied output array is not contiguous, writable or aligned.")
    if size is not None and tuple(np.atleast_1d(size)) != a.shape:
        raise ValueError("size must match out.shape when used together")


class Generator:
    """A random generator on the device; make one with cupy.random.default_rng(seed)."""
    __slots__ = ("_numpy",)

    def __init__(self, bit_generator):
        raise NotImplementedError("cupy stand-in: BitGenerators are not implemented; "
                                  "use cupy.random.default_rng(seed)")


_numpy_rng, _set_numpy_rng = hidden(Generator, "_numpy")


def _generator_method(name):
    qualname = f"cupy.random.Generator.{name}"

    def method(self, *args, **kwargs):
        return _draw(getattr(_numpy_rng(self), name), qualname, args, kwargs,
                     name in _GENERATOR_DTYPE, name in _GENERATOR_OUT)

    method.__name__, method.__qualname__ = name, f"Generator.{name}"
    method.__doc__ = f"numpy.random.Generator.{name}, on the device (cupy stand-in)."
    return method


for _name in CLASSES["cupy.random.Generator"]:
    if not _name.startswith("_") and hasattr(np.random.Generator, _name):
        setattr(Generator, _name, _generator_method(_name))
restrict(Generator, "cupy.random.Generator", module="cupy.random._generator_api")


def default_rng(seed=None):
    """A Generator seeded with `seed` (an int or None)."""
    if not (seed is None or isinstance(seed, (int, np.integer))):
        raise NotImplementedError("cupy stand-in: default_rng takes an int seed or None")
    rng = object.__new__(Generator)
    _set_numpy_rng(rng, np.random.default_rng(seed))
    return rng


# ---- the legacy module functions (one shared RandomState) --------------------------------

_legacy = np.random.RandomState()


def seed(seed=None):
    _legacy.seed(seed)


def _legacy_function(name):
    qualname = f"cupy.random.{name}"

    def function(*args, **kwargs):
        state_method = getattr(_legacy, name)
        if name == "shuffle":
            if kwargs:
                check_keywords(qualname, kwargs)
            return call_numpy(state_method, args, {})
        return _draw(state_method, qualname, args, kwargs, numpy_dtype=name == "randint")

    function.__name__ = function.__qualname__ = name
    function.__module__ = "cupy.random"
    function.__doc__ = f"numpy.random.{name}, on the device (cupy stand-in)."
    return function


def resolve(name):
    """A legacy cupy.random function that numpy.random.RandomState has too."""
    if name.startswith("_") or not callable(getattr(np.random.RandomState, name, None)):
        raise LookupError(name)
    return _legacy_function(name)


TABLE = {"Generator": Generator, "default_rng": default_rng, "seed": seed}
