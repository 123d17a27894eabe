"""Custom kernels (RawModule, RawKernel, ElementwiseKernel, ReductionKernel) run through NumPy
twins. Nothing is compiled; compilation is where CuPy would do it (RawModule.get_function and
.compile, RawKernel.compile and its first call, an Elementwise/ReductionKernel's first call),
and there an injected failure (standin.fail_compile) raises CompileException, and a name the
module would not export raises CUDADriverError (CUDA_ERROR_NOT_FOUND), as cuModuleGetFunction.

A RawKernel launch is validated as the GPU would (grid/block/shared-memory limits: CUDADriverError
CUDA_ERROR_INVALID_VALUE) and more strictly: dimensions < 1 (CuPy silently makes them 1), Python
scalars (CuPy passes them as 64-bit values), non-C-contiguous arrays, and arguments that do not
match the parameter types declared in the source (signature.py) are refused.

Twin calling conventions (twins are looked up by the kernel's base name in standin.TWINS):
  RawKernel:         twin(*args, grid=, block=, shared_mem=, template=) -> ignored; fake arrays
                     arrive as their writable NumPy backing (outputs are written in place), NumPy
                     scalars as given; `template`: the template arguments ('' if none).
  ElementwiseKernel: twin(*args) with the inputs, plus the outputs when the caller passed them;
                     returns the output(s) (or None when it wrote the given outputs in place).
  ReductionKernel:   twin(*inputs, axis=, keepdims=) -> the output.
"""
import re

import numpy as np
from _standin import signature, state
from _standin.array import PY_SCALARS, backing, ndarray, operand, output, wrap
from _standin.device import LIMITS, CUDADriverError
from _standin.names import hidden, restrict


class CompileException(Exception):
    """A kernel failed to compile (here: a failure injected by standin.fail_compile)."""

    def __init__(self, msg, source, name, options, backend="nvrtc"):
        self._msg = msg
        self.source, self.name, self.options, self.backend = source, name, options, backend
        super().__init__()

    def __reduce__(self):
        return type(self), (self._msg, self.source, self.name, self.options, self.backend)

    def __repr__(self):
        return str(self)

    def __str__(self):
        return self.get_message()

    def get_message(self):
        return self._msg

    def dump(self, f):
        f.write(f"{self.backend.upper()} compilation error: {self}\n-----\nName: {self.name}\n"
                f"Options: {' '.join(self.options)}\nCUDA source:\n{self.source}\n-----\n")


restrict(CompileException, "cupy.cuda.compiler.CompileException", module="cupy.cuda.compiler")


def split_template(name):
    """'layernorm_forward<float, 4>' -> ('layernorm_forward', 'float, 4'); no template: ''."""
    head, bracket, rest = name.partition("<")
    return head.strip(), rest.rpartition(">")[0].strip() if bracket else ""


def _typecheck(value, expected, argname):
    """Cython's TypeError for a typed argument (`str code`, `tuple options`, ...)."""
    if not isinstance(value, expected):
        raise TypeError(f"Argument '{argname}' has incorrect type (expected {expected.__name__}, "
                        f"got {type(value).__name__})")


def _compile(base, code, options, backend):
    """Where CuPy compiles: raises the injected failure for kernel `base`, if one is pending."""
    if state.take_failure(base):
        raise CompileException(f"cupy stand-in: compile failure injected by "
                               f"standin.fail_compile for kernel {base}", code, base, options, backend)


def _check_symbol(name, code, name_expressions):
    """CUDA_ERROR_NOT_FOUND, as cuModuleGetFunction gives, for a name the compiled module would
    not export: absent from the source, a template instance not listed in name_expressions, or
    (a heuristic) a plain name in source without any extern "C" (so C++-mangled)."""
    base, template = split_template(name)
    listed = name in (name_expressions or ())
    if re.search(rf"\b{re.escape(base)}\b", code) is None:
        hint = f"no kernel {base!r} in the source"
    elif template and not listed:
        hint = f"template instance {name!r} is not in name_expressions"
    elif not template and not listed and 'extern "C"' not in code:
        hint = f'{name!r} is C++-mangled: declare it extern "C" or list it in name_expressions'
    else:
        return
    error = CUDADriverError(500)
    error.add_note(f"cupy stand-in: {hint}")
    raise error


class RawModule:
    """A CUDA source module: `get_function(name)` gives its kernels (RawKernel)."""
    __slots__ = ("code", "options", "name_expressions", "backend", "enable_cooperative_groups",
                 "file_path")

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False,
                 name_expressions=None, jitify=None):
        if path is not None:
            raise NotImplementedError("cupy stand-in: RawModule(path=) is not implemented")
        _typecheck(code, str, "code")
        _typecheck(options, tuple, "options")
        self.code, self.options, self.backend = code, options, backend
        self.name_expressions = None if name_expressions is None else tuple(name_expressions)
        self.enable_cooperative_groups, self.file_path = enable_cooperative_groups, None

    def compile(self, log_stream=None):
        """Compiles the module (every kernel named in it may carry an injected failure)."""
        for base in set(re.findall(r"\b\w+\b", self.code)):
            _compile(base, self.code, self.options, self.backend)

    def get_function(self, name):
        kernel = RawKernel(self.code, name, self.options, self.backend,
                           enable_cooperative_groups=self.enable_cooperative_groups)
        _state(kernel).name_expressions = self.name_expressions
        kernel.compile()
        return kernel


restrict(RawModule, "cupy.RawModule")


class _KernelState:
    """What a RawKernel knows beyond CuPy's attributes: its twin's name, the template
    arguments, its module's name_expressions, whether it is compiled, its parameters (read
    from the source at compilation; None: not found)."""
    __slots__ = ("base", "template", "name_expressions", "compiled", "params")

    def __init__(self, name):
        self.base, self.template = split_template(name)
        self.name_expressions, self.compiled, self.params = None, False, None


class RawKernel:
    """A CUDA kernel from source: `kernel(grid, block, args, shared_mem=0, stream=None)`."""
    __slots__ = ("code", "name", "options", "backend", "enable_cooperative_groups",
                 "file_path", "max_dynamic_shared_size_bytes", "_state")

    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False, *,
                 enable_cooperative_groups=False, jitify=None):
        _typecheck(code, str, "code")
        _typecheck(name, str, "name")
        _typecheck(options, tuple, "options")
        self.code, self.name, self.options, self.backend = code, name, options, backend
        self.enable_cooperative_groups, self.file_path = enable_cooperative_groups, None
        self.max_dynamic_shared_size_bytes = 0
        _set_state(self, _KernelState(name))

    def compile(self, log_stream=None):
        ks = _state(self)
        if not ks.compiled:
            _compile(ks.base, self.code, self.options, self.backend)
            _check_symbol(self.name, self.code, ks.name_expressions)
            ks.params = signature.kernel_params(self.code, ks.base, ks.template)
            ks.compiled = True

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        """Validates the launch as the GPU would, counts 1 launch, runs the twin."""
        self.compile()
        ks = _state(self)
        grid, block = _launch_dims(grid, "grid"), _launch_dims(block, "block")
        _check_launch(grid, block, shared_mem, self.max_dynamic_shared_size_bytes)
        np_args = [_kernel_arg(i, a) for i, a in enumerate(args)]
        if ks.params is not None:
            _check_params(self.name, ks.params, np_args)
        twin = state.twin(ks.base)
        state.record_kernel(ks.base)
        twin(*np_args, grid=grid, block=block, shared_mem=shared_mem, template=ks.template)


_state, _set_state = hidden(RawKernel, "_state")
restrict(RawKernel, "cupy.RawKernel")


def _launch_dims(dims, what):
    """(x, y, z) from a tuple of 1-3 integers (CuPy takes only tuples)."""
    _typecheck(dims, tuple, what)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and type(d) is not bool
                                          for d in dims):
        raise TypeError(f"{what} must be a tuple of 1 to 3 integers, got {dims!r}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


def _invalid_launch(reason):
    error = CUDADriverError(1)
    error.add_note(f"cupy stand-in: {reason}")
    return error


def _check_launch(grid, block, shared_mem, shared_optin):
    """The GPU's limits on a launch: cuLaunchKernel fails with CUDA_ERROR_INVALID_VALUE."""
    for what, dims in (("grid", grid), ("block", block)):
        if min(dims) < 1:
            raise ValueError(f"cupy stand-in: {what} {dims} has a dimension < 1 (CuPy would "
                             f"silently launch 1 there; the computed size is wrong)")
    if any(d > m for d, m in zip(block, LIMITS["block"])):
        raise _invalid_launch(f"block {block} exceeds the maximum {LIMITS['block']}")
    if block[0] * block[1] * block[2] > LIMITS["threads"]:
        raise _invalid_launch(f"block {block} has more than {LIMITS['threads']} threads")
    if any(d > m for d, m in zip(grid, LIMITS["grid"])):
        raise _invalid_launch(f"grid {grid} exceeds the maximum {LIMITS['grid']}")
    if not 0 <= shared_mem <= max(LIMITS["shared_mem"], shared_optin):
        raise _invalid_launch(f"shared_mem={shared_mem} exceeds {LIMITS['shared_mem']} bytes "
                              f"(more needs max_dynamic_shared_size_bytes)")


def _kernel_arg(i, a):
    """A kernel argument as the twin sees it. CuPy would pass a Python scalar as a 64-bit value
    whatever the kernel's parameter type, so only NumPy scalars are taken."""
    if type(a) is ndarray:
        a = backing(a)
        if not a.flags.c_contiguous:
            raise ValueError(f"cupy stand-in: kernel argument {i} is not C-contiguous (shape "
                             f"{a.shape}, strides {a.strides}); a kernel sees only its pointer")
        return a
    if isinstance(a, np.generic) or a is None:
        return a
    if type(a) in PY_SCALARS:
        raise TypeError(f"cupy stand-in: kernel argument {i} is a Python {type(a).__name__} "
                        f"({a!r}); CuPy passes it as a 64-bit value whatever the parameter's "
                        f"type: pass a NumPy scalar (np.int32, np.float32, ...)")
    if isinstance(a, np.ndarray):
        if a.size == 1:
            return a.reshape(())[()]
        raise TypeError(f"You are trying to pass a numpy.ndarray of shape {a.shape} as a kernel "
                        "parameter. Only numpy.ndarrays of size one can be passed by value. If "
                        "you meant to pass a pointer to __global__ memory, you need to pass a "
                        "cupy.ndarray instead.")
    raise TypeError(f"cupy stand-in: kernel argument {i} of type {type(a).__name__} is not supported")


def _check_params(name, params, args):
    """TypeError for arguments the kernel's parameters would misread (see signature.py)."""
    if len(args) != len(params):
        raise TypeError(f"cupy stand-in: kernel {name} takes {len(params)} arguments, "
                        f"got {len(args)}")
    for i, (param, a) in enumerate(zip(params, args)):
        where = f"cupy stand-in: kernel {name} argument {i} ({param.text})"
        if param.pointer:
            if a is not None and not isinstance(a, np.ndarray):
                raise TypeError(f"{where} is a pointer: pass a cupy.ndarray, not {type(a).__name__}")
            if a is not None and param.dtype is not None and a.dtype != param.dtype:
                raise TypeError(f"{where} points to {param.dtype}, got a {a.dtype} array")
        else:
            if isinstance(a, np.ndarray) or a is None:
                raise TypeError(f"{where} is passed by value: pass a NumPy scalar, not an array")
            if param.dtype is not None and a.dtype != param.dtype:
                raise TypeError(f"{where} is {param.dtype}, got {a.dtype} ({a!r})")


def _count_params(params):
    return len([p for p in params.split(",") if p.strip()])


class ElementwiseKernel:
    """A user-defined elementwise kernel: `kernel(*inputs[, *outputs])`."""
    __slots__ = ("in_params", "out_params", "operation", "name", "reduce_dims", "preamble",
                 "no_return", "return_tuple", "kwargs", "nin", "nout", "nargs", "_compiled")

    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, **kwargs):
        self.in_params, self.out_params, self.operation, self.name = in_params, out_params, operation, name
        self.reduce_dims, self.preamble, self.kwargs = reduce_dims, preamble, kwargs
        self.no_return, self.return_tuple = no_return, return_tuple
        self.nin, self.nout = _count_params(in_params), _count_params(out_params)
        self.nargs = self.nin + self.nout
        _set_compiled(self, False)

    def __call__(self, *args, size=None, block_size=None):
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        if not _get_compiled(self):
            _compile(self.name, self.operation, (), "nvrtc")
            _set_compiled(self, True)
        np_args = [operand(a) for a in args]
        twin = state.twin(self.name)
        state.record_kernel(self.name)
        results = twin(*np_args)
        outs = _deliver(results, args[self.nin:], self.nout)
        if self.no_return:
            return None
        return outs[0] if self.nout == 1 and not self.return_tuple else tuple(outs)


_get_compiled, _set_compiled = hidden(ElementwiseKernel, "_compiled")
restrict(ElementwiseKernel, "cupy.ElementwiseKernel")


def _deliver(results, outs, nout):
    """The fake output arrays of a kernel: the given `outs` (holding the twin's results, unless
    it returned None having written them), else new arrays from the results."""
    if results is not None and not isinstance(results, (tuple, list)):
        results = (results,)
    if outs:
        if results is not None:
            for out, r in zip(outs, results):
                target = output(out)
                if r is not target:
                    np.copyto(target, r, casting="unsafe")
        return list(outs)
    if results is None or len(results) != nout:
        raise TypeError(f"cupy stand-in: the twin must return the {nout} output(s)")
    return [wrap(np.array(r, copy=True)) for r in results]


class ReductionKernel:
    """A user-defined reduction kernel: `kernel(*inputs, out=None, axis=None, keepdims=False)`."""
    __slots__ = ("in_params", "out_params", "map_expr", "reduce_expr", "post_map_expr",
                 "identity", "name", "reduce_type", "reduce_dims", "preamble", "options",
                 "nin", "nout", "nargs", "_compiled")

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", reduce_type=None, reduce_dims=True, preamble="",
                 options=()):
        self.in_params, self.out_params, self.name = in_params, out_params, name
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity, self.reduce_type, self.reduce_dims = identity, reduce_type, reduce_dims
        self.preamble, self.options = preamble, options
        self.nin, self.nout = _count_params(in_params), _count_params(out_params)
        self.nargs = self.nin + self.nout
        _set_rk_compiled(self, False)

    def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None):
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        if not _get_rk_compiled(self):
            _compile(self.name, self.map_expr, self.options, "nvrtc")
            _set_rk_compiled(self, True)
        np_args = [operand(a) for a in args]
        twin = state.twin(self.name)
        state.record_kernel(self.name)
        result = twin(*np_args, axis=axis, keepdims=keepdims)
        return _deliver(result, (out,) if out is not None else (), 1)[0]


_get_rk_compiled, _set_rk_compiled = hidden(ReductionKernel, "_compiled")
restrict(ReductionKernel, "cupy.ReductionKernel")
