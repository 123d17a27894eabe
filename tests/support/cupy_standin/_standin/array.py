"""cupy.ndarray and cupy.ufunc, backed by NumPy, refusing what CuPy refuses and counting work.

A fake array holds a NumPy array (its *backing*, reachable only through `backing(x)`), whose
memory is registered as fake device memory (memory.py). Results CuPy returns as 0-d arrays
(reductions, integer indexing, ufuncs on 0-d operands) are 0-d fake arrays here.

Counting (state.record): an elementwise op or ufunc (in-place too), a reduction, a copy = 1
launch; a result that is a view of its input = 0; device->host reads = 1 d2h + 1 sync.
"""
import sys

import numpy as np
from _standin import memory, state
from _standin.names import CLASSES, NAMES, check_keywords, hidden, restrict

PY_SCALARS = frozenset({int, float, bool, complex})
_BASIC_INDEX = frozenset({int, slice, type(None), type(Ellipsis)})
IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. "
                       "Please use `.get()` to construct a NumPy array explicitly.")


class ndarray:
    """Multi-dimensional array on the (fake) GPU: `cupy.ndarray(shape, dtype=float,
    memptr=None, strides=None, order='C')`."""
    __slots__ = ("_np",)
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        dtype = np.dtype(dtype)
        if memptr is None:
            if strides is not None:
                raise NotImplementedError("cupy stand-in: ndarray(strides=) needs memptr=")
            memory.check_room(int(np.prod(shape)) * dtype.itemsize)
            a = poison(np.empty(shape, dtype, order))
        else:
            a = _view_of_pointer(memptr.ptr, shape, dtype, strides, order)
        memory.track(a)
        _set(self, a)

    # ---- attributes ----------------------------------------------------------------------

    @property
    def shape(self):
        return _get(self).shape

    @shape.setter
    def shape(self, new_shape):
        view = _get(self).view()
        view.shape = new_shape      # raises, like CuPy, when that would need a copy
        _set(self, view)

    dtype = property(lambda self: _get(self).dtype)
    ndim = property(lambda self: _get(self).ndim)
    size = property(lambda self: _get(self).size)
    strides = property(lambda self: _get(self).strides)
    itemsize = property(lambda self: _get(self).itemsize)
    nbytes = property(lambda self: _get(self).nbytes)
    T = property(lambda self: _fake(_get(self).T))
    mT = property(lambda self: _fake(_get(self).mT))
    real = property(lambda self: _converted(_get(self).real))
    imag = property(lambda self: _converted(_get(self).imag))

    @property
    def flags(self):
        return Flags(_get(self))

    @property
    def base(self):
        """None for an array that owns its memory; else an array over the owner's memory."""
        a = _get(self)
        return None if a.base is None else _fake(memory.root_of(a))

    @property
    def data(self):
        """MemoryPointer to the first element (`.ptr`: its fake device address)."""
        return memory.pointer_of(_get(self))

    @property
    def device(self):
        """The device its memory is on."""
        from _standin.device import Device
        return Device(memory.allocation_of(_get(self)).device_id)

    # ---- device -> host ------------------------------------------------------------------

    def get(self, stream=None, order="C", out=None, blocking=True):
        """A host copy (numpy.ndarray): 1 d2h, and 1 sync when blocking."""
        a = _get(self)
        if out is None:
            out = np.array(a, order=order, copy=True)
        else:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != a.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {a.dtype} array")
            if out.shape != a.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {a.shape}, "
                                 f"actual shape: {out.shape}")
            np.copyto(out, a)
        device_to_host(blocking)
        return out

    def set(self, arr, stream=None):
        """Copies host array `arr` (same dtype and shape) into this array: 1 h2d."""
        a = _get(self)
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if a.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {a.dtype} array")
        if a.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {a.shape}, new shape: {arr.shape}")
        if not (a.flags.c_contiguous or a.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        np.copyto(a, arr)
        state.record("h2d")

    def item(self):
        value = _get(self).item()
        device_to_host()
        return value

    def tolist(self):
        value = _get(self).tolist()
        device_to_host()
        return value

    def tobytes(self, order="C"):
        return self.get().tobytes(order)

    def tofile(self, fid, sep="", format="%s"):
        self.get().tofile(fid, sep, format)

    def dump(self, file):
        self.get().dump(file)

    def dumps(self):
        return self.get().dumps()

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __complex__(self):
        return complex(self.get())

    def __bool__(self):
        return bool(self.get())

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, format_spec):
        return format(self.get(), format_spec)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    # ---- container -----------------------------------------------------------------------

    def __len__(self):
        shape = _get(self).shape
        if not shape:
            raise TypeError("len() of unsized object")
        return shape[0]

    def __iter__(self):
        shape = _get(self).shape
        if not shape:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(shape[0]))

    def __getitem__(self, key):
        """Basic indexing returns a view (0 launches; integers down to 0-d give a 0-d view,
        as in CuPy); advanced indexing copies (1 launch; a boolean mask also syncs)."""
        a = _get(self)
        if _is_basic(key):
            if type(key) is not tuple:
                key = (key,)
            if not any(k is Ellipsis for k in key):
                key += (Ellipsis,)      # NumPy then returns a view, never a scalar
            return _fake(a[key])
        np_key, masks = _advanced_index(key)
        result = a[np_key]
        state.record("launches")
        if masks:
            device_to_host()            # CuPy reads the mask's count to size the result
        return wrap(result)

    def __setitem__(self, key, value):
        """1 launch. `value`: a fake array or a scalar (a host array is refused, as in CuPy)."""
        a = _get(self)
        if not _is_basic(key):
            key = _advanced_index(key)[0]
        a[key] = operand(value)
        state.record("launches")

    # ---- NumPy protocols -----------------------------------------------------------------

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NumPy ufuncs on fake arrays run as the cupy ufunc of the same name (like CuPy)."""
        inout = inputs
        if "out" in kwargs:
            out = kwargs["out"]
            if len(out) != 1:
                raise ValueError("The 'out' parameter must have exactly one array value")
            inout += out
            kwargs["out"] = out[0]
        if method not in ("__call__", "outer", "at", "reduce", "accumulate", "reduceat"):
            return NotImplemented
        try:
            func = getattr(sys.modules["cupy"], ufunc.__name__)
            if method != "__call__":
                func = getattr(func, method)
        except AttributeError:
            return NotImplemented
        for x in inout:
            if not (type(x) in PY_SCALARS or isinstance(x, (ndarray, np.ndarray, np.generic))):
                return NotImplemented
        return func(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """NumPy functions on fake arrays run as the cupy function of the same name."""
        try:
            module = sys.modules["cupy"]
            for part in func.__module__.split(".")[1:]:
                module = getattr(module, part)
            cupy_func = getattr(module, func.__name__)
        except AttributeError:
            return NotImplemented
        if cupy_func is func or not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        return cupy_func(*args, **kwargs)

    # ---- methods with CuPy-specific behaviour ---------------------------------------------

    def dot(self, b, out=None):
        return dot(self, b, out)

    def __matmul__(self, other):
        return NotImplemented if _defers(other) else matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        return sys.modules["cupy"].array, (self.get(),)

    def scatter_add(self, slices, value):
        UFUNCS["add"].at(self, slices, value)

    def scatter_max(self, slices, value):
        UFUNCS["maximum"].at(self, slices, value)

    def scatter_min(self, slices, value):
        UFUNCS["minimum"].at(self, slices, value)


_get, _set = hidden(ndarray, "_np")
backing = _get
_new = object.__new__


def _fake(a):
    """A fake array over NumPy array `a`, whose memory is already registered (a view)."""
    x = _new(ndarray)
    _set(x, a)
    return x


def wrap(a):
    """A fake array over a NumPy result (a NumPy scalar becomes a 0-d array)."""
    if type(a) is not np.ndarray:
        a = np.asarray(a)
    memory.track(a)
    return _fake(a)


def convert(result):
    """(result with NumPy arrays and scalars made fake, whether new device memory was made)."""
    t = type(result)
    if t is np.ndarray:
        fresh = memory.track(result)
        return _fake(result), fresh
    if isinstance(result, np.generic):
        return wrap(result), True
    if t is tuple or t is list:
        pairs = [convert(r) for r in result]
        return t(p[0] for p in pairs), any(p[1] for p in pairs)
    return result, False


def _converted(result):
    """convert(), counting a launch when it made a new array (a copy rather than a view)."""
    value, fresh = convert(result)
    if fresh:
        state.record("launches")
    return value


def poison(a):
    """Fills uninitialized memory (empty, ndarray()) with 0xFF bytes: NaN for floats, -1 or the
    maximum for integers, True for bools. Device memory from the pool holds old data, so code
    that reads it before writing must not pass by luck."""
    if a.dtype == np.bool_:
        a.fill(True)
    else:
        a.reshape(-1, order="A").view(np.uint8).fill(0xFF)
    return a


def device_to_host(blocking=True):
    state.record("d2h")
    if blocking:
        state.record("syncs")


def operand(x):
    """The NumPy value of an operand: a fake's backing, or a Python/NumPy scalar. CuPy refuses
    anything else (a host array above all) with this TypeError."""
    t = type(x)
    if t is ndarray:
        return _get(x)
    if t in PY_SCALARS or isinstance(x, np.generic):
        return x
    raise TypeError(f"Unsupported type {t}")


def unwrap(x, host_ok=False):
    """Fake arrays (also inside lists and tuples) -> their backing, for a NumPy call. Host arrays
    are refused unless host_ok (functions that only read shapes and dtypes)."""
    t = type(x)
    if t is ndarray:
        return _get(x)
    if t is tuple or t is list:
        return t(unwrap(v, host_ok) for v in x)
    if isinstance(x, np.ndarray) and not host_ok:
        raise TypeError(f"Unsupported type {t}")
    return x


def output(out):
    """The backing of an `out=` argument, which must be a fake array."""
    if type(out) is not ndarray:
        raise TypeError("Output arguments must be cupy.ndarray")
    return _get(out)


def call_numpy(func, args, kwargs, launches=None, syncs=False, host_ok=False):
    """Calls NumPy `func` on the unwrapped args, makes the result fake and counts: `launches`,
    or by default 1 when it wrote (out=, or in place: returned None) or made a new array, 0 when
    it returned views or host values; `syncs`: the result's size depends on the data (CuPy
    reads a count back: 1 d2h + 1 sync). `host_ok`: see unwrap."""
    out = kwargs.pop("out", None)
    np_args = unwrap(args, host_ok)
    np_kwargs = {k: unwrap(v, host_ok) for k, v in kwargs.items()}
    if out is not None:
        np_kwargs["out"] = output(out)
    result = func(*np_args, **np_kwargs)
    if out is not None and result is np_kwargs["out"]:
        value, fresh = out, True
    else:
        value, fresh = convert(result)
    if launches is None:
        launches = 1 if (fresh or result is None) else 0
    if launches:
        state.record("launches", launches)
    if syncs:
        device_to_host()
    return value


def _is_basic(key):
    t = type(key)
    if t is tuple:
        return all(type(k) in _BASIC_INDEX or isinstance(k, np.integer) for k in key)
    return t in _BASIC_INDEX or isinstance(key, np.integer)


def _advanced_index(key):
    """(NumPy index, whether it has a boolean mask). Host index arrays and lists are sent to the
    device (1 h2d each), as CuPy does."""
    parts = key if type(key) is tuple else (key,)
    np_parts, masks = [], False
    for k in parts:
        if type(k) is ndarray:
            k = _get(k)
        elif isinstance(k, (np.ndarray, list)):
            k = np.asarray(k)
            state.record("h2d")
        if isinstance(k, np.ndarray) and k.dtype == np.bool_:
            masks = True
        np_parts.append(k)
    return (tuple(np_parts) if type(key) is tuple else np_parts[0]), masks


def _view_of_pointer(ptr, shape, dtype, strides, order):
    """ndarray(shape, dtype, memptr, strides): a view into the allocation holding `ptr`."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if strides is None:
        strides = _contiguous_strides(shape, dtype.itemsize, order)
    alloc, offset = memory.resolve(ptr)
    low, high = extent(shape, strides, dtype.itemsize)
    if offset + low < 0 or offset + high > alloc.nbytes:
        raise ValueError(f"cupy stand-in: ndarray{shape} with strides {strides} at {ptr:#x} "
                         f"reaches outside its allocation of {alloc.nbytes} bytes")
    return memory.buffer_view(alloc, dtype, offset, shape, strides)


def _contiguous_strides(shape, itemsize, order):
    strides, step = [], itemsize
    for n in (reversed(shape) if order == "C" else shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides)) if order == "C" else tuple(strides)


def extent(shape, strides, itemsize):
    """(lowest, one past the highest) byte offset an array of this layout touches."""
    if 0 in shape:
        return 0, 0
    low = sum(s * (n - 1) for n, s in zip(shape, strides) if s < 0)
    high = sum(s * (n - 1) for n, s in zip(shape, strides) if s > 0)
    return low, high + itemsize


def _defers(other):
    """CuPy's _should_use_rop: True when `other`'s reflected operator should run instead."""
    t = type(other)
    if t is ndarray or t in PY_SCALARS:
        return False
    handler = getattr(other, "__array_ufunc__", _defers)
    if handler is not _defers:
        return handler is None
    return ndarray.__array_priority__ < getattr(other, "__array_priority__", 0)


class Flags:
    """Memory-layout flags of an array (cupy._core.flags.Flags)."""

    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.base is None

    @property
    def forc(self):
        return self.c_contiguous or self.f_contiguous

    @property
    def fnc(self):
        return self.f_contiguous and not self.c_contiguous

    def __getitem__(self, name):
        keys = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous", "OWNDATA": "owndata"}
        return getattr(self, keys[name])

    def __repr__(self):
        return "\n".join(f"  {key} : {self[key]}" for key in ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA"))


restrict(Flags, "cupy._core.flags.Flags", module="cupy._core.flags",
         instance_attrs=("c_contiguous", "f_contiguous", "owndata"))


# ---- matrix products ------------------------------------------------------------------------

def _copies_for_product(a, b, out, batched):
    """Extra launches CuPy spends copying operands before its cuBLAS call: operands a 2-D GEMM
    cannot read in place (neither C- nor F-contiguous), or for a batched matmul (> 2-D) any
    operand not C-contiguous; operands of another dtype (converted); an `out` it cannot write
    directly (not C-contiguous or of another dtype: computed apart, then copied)."""
    dtype = np.promote_types(a.dtype, b.dtype)
    copies = 0
    for x in (a, b):
        flags = x.flags
        in_place = flags.c_contiguous if batched else (x.ndim < 2 or flags.c_contiguous or flags.f_contiguous)
        copies += not in_place or x.dtype != dtype
    if out is not None and not (out.flags.c_contiguous and out.dtype == dtype):
        copies += 1
    return copies


def matmul(a, b, out=None, **kwargs):
    """cupy.matmul / `@`: 1 launch (the GEMM) plus the copies CuPy makes first."""
    if kwargs:
        check_keywords("cupy.matmul", kwargs)
    x, y = operand(a), operand(b)
    if np.ndim(x) == 0 or np.ndim(y) == 0:
        raise ValueError("Scalar operands are not allowed, use '*' instead")
    out_np = None if out is None else output(out)
    result = np.matmul(x, y, out=out_np, **kwargs)
    state.record("launches", 1 + _copies_for_product(x, y, out_np, max(x.ndim, y.ndim) > 2))
    return out if out is not None else wrap(result)


def dot(a, b, out=None):
    """cupy.dot / ndarray.dot: 1 launch plus CuPy's operand copies."""
    x, y = operand(a), operand(b)
    out_np = None if out is None else output(out)
    result = np.dot(x, y, out=out_np)
    state.record("launches", 1 + _copies_for_product(x, y, out_np, False))
    return out if out is not None else wrap(result)


# ---- ufuncs ---------------------------------------------------------------------------------

class ufunc:
    """Universal function (cupy.ufunc) running its NumPy namesake: 1 launch per call."""
    __slots__ = ("name", "nin", "nout", "nargs", "_scatter_op", "_np")

    def __init__(self, name, meta):
        self.name, self.nin, self.nout = meta["name"], meta["nin"], meta["nout"]
        self.nargs = self.nin + self.nout
        self._scatter_op = meta["scatter_op"]
        _set_np(self, getattr(np, name))

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    @property
    def __name__(self):
        return self.name

    def __call__(self, *args, **kwargs):
        nin = self.nin
        if len(args) != nin:
            if len(args) != nin + self.nout or "out" in kwargs:
                raise TypeError(f"Wrong number of arguments for {self.name}")
            kwargs["out"] = args[nin:] if self.nout > 1 else args[nin]
            args = args[:nin]
        out = kwargs.pop("out", None)
        for key in kwargs:
            if key not in ("dtype", "casting"):
                raise TypeError("Wrong arguments %s" % kwargs)
        ops = [operand(x) for x in args]
        func = _get_np(self)
        if out is None:
            result = func(*ops, **kwargs)
            state.record("launches")
            return wrap(result) if self.nout == 1 else tuple(wrap(r) for r in result)
        outs = out if type(out) is tuple else (out,)
        np_outs = tuple(output(o) for o in outs)
        if isinstance(func, np.ufunc):
            func(*ops, out=np_outs, **kwargs)
        else:   # fix, i0, sinc: ufuncs in CuPy, plain functions in NumPy
            np.copyto(np_outs[0], func(*ops), casting=kwargs.get("casting", "same_kind"))
        state.record("launches")
        return outs[0] if self.nout == 1 else outs

    def at(self, a, indices, b=None):
        """In-place scatter; CuPy supports it only for add, subtract, maximum, minimum and the
        bitwise and/or/xor."""
        if self._scatter_op is None:
            raise NotImplementedError(f"`{self.name}.at` is not supported yet")
        target = output(a)
        index = _get(indices) if type(indices) is ndarray else _advanced_index(indices)[0]
        if b is None:
            _get_np(self).at(target, index)
        else:
            _get_np(self).at(target, index, operand(b))
        state.record("launches")

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        method = {"cupy_add": "sum", "cupy_multiply": "prod"}.get(self.name)
        if method is None:
            raise NotImplementedError(f"`{self.name}.reduce` is not supported yet")
        return getattr(array, method)(axis, dtype, out, keepdims)

    def accumulate(self, array, axis=0, dtype=None, out=None):
        method = {"cupy_add": "cumsum", "cupy_multiply": "cumprod"}.get(self.name)
        if method is None:
            raise NotImplementedError(f"`{self.name}.accumulate` is not supported yet")
        return getattr(array, method)(axis, dtype, out)

    def reduceat(self, array, indices, axis=0, dtype=None, out=None):
        if self.name != "cupy_add":
            raise NotImplementedError(f"`{self.name}.reduceat` is not supported yet")
        return call_numpy(np.add.reduceat, (array, indices, axis, dtype), {"out": out})

    def outer(self, A, B, **kwargs):
        a, b = output(A), output(B)
        return self(_fake(a.reshape(a.shape + (1,) * b.ndim)),
                    _fake(b.reshape((1,) * a.ndim + b.shape)), **kwargs)


_get_np, _set_np = hidden(ufunc, "_np")
restrict(ufunc, "cupy.ufunc")
UFUNCS = {name: ufunc(name, meta) for name, meta in NAMES["ufuncs"].items()}


# ---- operators and the NumPy-delegated methods of ndarray --------------------------------

def _binary(ufunc_name):
    f = UFUNCS[ufunc_name]

    def op(self, other):
        return NotImplemented if _defers(other) else f(self, other)

    def rop(self, other):
        return f(other, self)

    def iop(self, other):
        return f(self, other, out=self)

    return op, rop, iop


def _unary(ufunc_name):
    f = UFUNCS[ufunc_name]

    def op(self):
        return f(self)

    return op


def _install_operators():
    binary = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "true_divide",
              "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "divmod": "divmod",
              "lshift": "left_shift", "rshift": "right_shift", "and": "bitwise_and",
              "or": "bitwise_or", "xor": "bitwise_xor"}
    for op, ufunc_name in binary.items():
        forward, reflected, inplace = _binary(ufunc_name)
        setattr(ndarray, f"__{op}__", forward)
        setattr(ndarray, f"__r{op}__", reflected)
        if op != "divmod":
            setattr(ndarray, f"__i{op}__", inplace)
    comparisons = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
                   "eq": "equal", "ne": "not_equal"}
    for op, ufunc_name in comparisons.items():
        setattr(ndarray, f"__{op}__", _binary(ufunc_name)[0])
    ndarray.__hash__ = None
    for op, ufunc_name in {"neg": "negative", "pos": "positive", "abs": "absolute",
                           "invert": "invert"}.items():
        setattr(ndarray, f"__{op}__", _unary(ufunc_name))


def _numpy_method(name):
    """ndarray.<name> delegated to numpy.ndarray.<name> (counted by call_numpy)."""
    np_method = getattr(np.ndarray, name, None) or getattr(np, name)
    qualname = f"cupy.ndarray.{name}"
    syncs = name == "nonzero"

    def method(self, *args, **kwargs):
        if kwargs:
            check_keywords(qualname, kwargs)
        return call_numpy(np_method, (self, *args), kwargs, syncs=syncs)

    method.__name__, method.__qualname__ = name, f"ndarray.{name}"
    method.__doc__ = f"numpy.ndarray.{name} on the backing array (cupy stand-in)."
    return method


def _install_numpy_methods():
    extra = {"ptp"}   # a method in CuPy, only a function in NumPy 2
    for name in CLASSES["cupy.ndarray"]:
        if name.startswith("_") or name in ndarray.__dict__:
            continue
        if callable(getattr(np.ndarray, name, None)) or name in extra:
            setattr(ndarray, name, _numpy_method(name))


_install_operators()
_install_numpy_methods()
restrict(ndarray, "cupy.ndarray")
