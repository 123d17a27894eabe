"""Writes cupy_names.json (beside this file) from the REAL installed CuPy.

Run it with the real cupy importable and the stand-in NOT on sys.path:

    python tests/support/cupy_standin/make_names.py

CuPy imports without a GPU, so `dir()` of its modules and classes can be read here. The cuBLAS
and NCCL bindings do not import without libcublas and libnccl; their names come from their
Cython sources (cupy_backends/cuda/libs/{cublas,nccl}.pyx and .pxd) at the tag of the installed
version in the CuPy mirror (HEAD when the tag is absent), and so do the names of
NcclCommunicator. cupy.cuda.nccl, a Python module that star-imports the NCCL binding when
libnccl loads, gets its own `dir()` plus the binding's public names.

The json holds, per module and per class, every name `dir()` lists (plus the names a module's
`__getattr__` resolves lazily), the constant values the stand-in copies (cuBLAS and NCCL enums, CUDA
data types), which cupy names are the very numpy objects, the ufuncs with their metadata, and the
keyword parameters of callables (so the stand-in refuses keywords CuPy does not take).
"""
import functools
import importlib
import inspect
import json
import pathlib
import re
import subprocess
import sys
import warnings

import numpy

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "cupy_names.json"
MIRROR = pathlib.Path("/work/.mirror/cupy+cupy/repo")
CUBLAS_SOURCE = "cupy_backends/cuda/libs/cublas"
NCCL_SOURCE = "cupy_backends/cuda/libs/nccl"

MODULES = ["cupy", "cupy.random", "cupy.cuda", "cupy.cuda.runtime", "cupy.cuda.memory",
           "cupy.cuda.device", "cupy.cuda.compiler", "cupy.cuda.stream", "cupy.cuda.driver"]
CLASSES = ["cupy.ndarray", "cupy.ufunc", "cupy.random.Generator", "cupy.RawModule",
           "cupy.RawKernel", "cupy.ElementwiseKernel", "cupy.ReductionKernel",
           "cupy.cuda.Stream", "cupy.cuda.Event", "cupy.cuda.Device", "cupy.cuda.MemoryPool",
           "cupy.cuda.MemoryPointer", "cupy.cuda.Memory", "cupy.cuda.compiler.CompileException",
           "cupy.cuda.memory.OutOfMemoryError", "cupy.cuda.driver.CUDADriverError",
           "cupy._core.flags.Flags"]
# Module metadata a Cython module has; the cuBLAS module's names come from source, so add them.
CYTHON_MODULE_DUNDERS = ["__builtins__", "__doc__", "__file__", "__loader__", "__name__",
                         "__package__", "__spec__", "__test__", "__pyx_capi__"]


def resolve(path):
    """'cupy.cuda.Stream' -> the object, by attribute access from the top-level module."""
    head, *rest = path.split(".")
    return functools.reduce(getattr, rest, importlib.import_module(head))


def numpy_attr(name):
    """numpy's attribute `name`, or None; without the FutureWarnings of deprecated aliases."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(numpy, name, None)


def lazy_names(module):
    """Names a module-level __getattr__ resolves (`key == 'name'` branches in its source)."""
    getattr_fn = module.__dict__.get("__getattr__")
    if getattr_fn is None:
        return []
    return re.findall(r"key == '(\w+)'", inspect.getsource(getattr_fn))


def parse_params(text):
    """'(a, b=1, *, c=None, **kw)' -> (['a', 'b', 'c'], has_var_kw); None when unparseable."""
    depth, token, tokens = 0, "", []
    for ch in text.strip()[1:]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            tokens.append(token)
            token = ""
        else:
            token += ch
    tokens.append(token)
    names, var_kw = [], False
    for tok in tokens:
        tok = tok.replace("\\", "").strip()
        if tok.startswith("**"):
            var_kw = True
        elif tok and tok not in ("*", "/") and not tok.startswith("*"):
            names.append(re.split(r"[=:]", tok)[0].strip())
    return names, var_kw


def doc_params(obj):
    """Parameters from the first docstring line 'name(params)' (Cython embedsignature)."""
    first = (obj.__doc__ or "").strip().splitlines()[:1]
    m = re.match(r"^[\w.]*\(", first[0]) if first else None
    return parse_params(first[0][m.end() - 1:]) if m else None


def params_of(obj):
    """{'params': [...], 'var_kw': bool} of a callable, or None when neither source tells."""
    from_doc = doc_params(obj)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        if not (var_kw and from_doc and not from_doc[1]):   # a vaguer **kwargs signature
            names = [n for n, p in sig.parameters.items()
                     if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            return {"params": names, "var_kw": var_kw}
    if from_doc is None:
        return None
    return {"params": from_doc[0], "var_kw": from_doc[1]}


def keyword_table(cupy):
    """Keyword parameters of cupy's own functions, ndarray and Generator methods, ufunc calls."""
    table = {}
    owners = [("cupy", cupy), ("cupy.random", cupy.random)]
    for prefix, module in owners:
        for name in dir(module):
            obj = getattr(module, name)
            if (name.startswith("_") or isinstance(obj, type) or not callable(obj)
                    or isinstance(obj, cupy.ufunc) or obj is numpy_attr(name)):
                continue
            params = params_of(obj)
            if params:
                table[f"{prefix}.{name}"] = params
    for prefix, cls in (("cupy.ndarray", cupy.ndarray), ("cupy.random.Generator", cupy.random.Generator)):
        for name in dir(cls):
            obj = getattr(cls, name)
            if not name.startswith("_") and callable(obj):
                params = params_of(obj)
                if params:
                    table[f"{prefix}.{name}"] = params
    table["cupy.ufunc.__call__"] = params_of(cupy.add)     # the same for every ufunc
    return table


def ufunc_table(cupy):
    """{name: {name, nin, nout, scatter_op}} for every cupy ufunc (scatter_op: what `.at` takes)."""
    return {n: {"name": u.name, "nin": u.nin, "nout": u.nout, "scatter_op": u._scatter_op}
            for n in dir(cupy) if isinstance(u := getattr(cupy, n), cupy.ufunc)}


def git_show(ref, path):
    return subprocess.run(["git", "-C", str(MIRROR), "show", f"{ref}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def source_ref(version):
    """The mirror's tag of CuPy `version`, or HEAD when the mirror lacks it."""
    tag = f"v{version}"
    tags = subprocess.run(["git", "-C", str(MIRROR), "tag", "-l", tag],
                          check=True, capture_output=True, text=True).stdout.split()
    return tag if tag in tags else "HEAD"


def cython_module(ref, source):
    """(names, constants, pyx text) of the Cython module at `source` (.pyx and .pxd): its
    cpdef/def functions, classes, module-level assignments, cpdef enum values, and the
    metadata every Cython module has."""
    pyx = git_show(ref, source + ".pyx")
    pxd = git_show(ref, source + ".pxd")
    names = set(re.findall(r"^cpdef\s+(?:[\w\s*]+?\s+)?(\w+)\s*\(", pyx, re.M))
    names |= set(re.findall(r"^(?:def|class|cdef\s+class)\s+(\w+)", pyx, re.M))
    names |= set(re.findall(r"^(\w+)\s*=", pyx, re.M))
    constants = {}
    for block in re.findall(r"^cpdef enum[^:]*:\n((?:[ \t]+.*\n|\n)+)", pxd + "\n", re.M):
        for name, value in re.findall(r"^[ \t]+(\w+)\s*=\s*(-?\d+)", block, re.M):
            constants[name] = int(value)
    names |= set(constants) | set(CYTHON_MODULE_DUNDERS)
    return sorted(names), constants, pyx


def cython_class(pyx, name):
    """dir() of the cdef class `name` in Cython source `pyx`: its def/cpdef methods and
    properties, the pickling helpers Cython adds, and object's own names."""
    body = re.search(rf"^cdef class {name}\b.*?:\n((?:[ \t]+.*\n|\n)+)", pyx, re.M).group(1)
    methods = re.findall(r"^    (?:cp)?def\s+(?:[\w\s*]+?\s+)?(\w+)\s*\(", body, re.M)
    methods += re.findall(r"^    property\s+(\w+)", body, re.M)
    added = {"__pyx_vtable__", "__reduce_cython__", "__setstate_cython__"}
    return sorted(set(dir(object)) | added | set(methods) - {"__cinit__", "__dealloc__"})


def main():
    # `python make_names.py` puts this directory, where the stand-in lives, first on sys.path.
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]
    import cupy
    if pathlib.Path(cupy.__file__).resolve().is_relative_to(HERE):
        sys.exit("make_names.py must run against the real CuPy, not the stand-in")
    cupy.random.Generator  # noqa: B018  (lazily imported; dir() lists it once touched)
    modules = {}
    for path in MODULES:
        module = resolve(path)
        modules[path] = sorted(set(dir(module)) | set(lazy_names(module)))
    ref = source_ref(cupy.__version__)
    cublas_names, cublas_constants, _ = cython_module(ref, CUBLAS_SOURCE)
    modules["cupy_backends.cuda.libs.cublas"] = cublas_names
    nccl_names, nccl_constants, nccl_pyx = cython_module(ref, NCCL_SOURCE)
    modules["cupy_backends.cuda.libs.nccl"] = nccl_names
    with warnings.catch_warnings():   # without libnccl: the wrapper's own names and `available`
        warnings.simplefilter("ignore")
        import cupy.cuda.nccl
    modules["cupy.cuda.nccl"] = sorted(set(dir(cupy.cuda.nccl))
                                       | {n for n in nccl_names if not n.startswith("_")})
    runtime = cupy.cuda.runtime
    data = {
        "cupy_version": cupy.__version__,
        "numpy_version": numpy.__version__,
        "cublas_source": f"{CUBLAS_SOURCE}.pyx/.pxd at {MIRROR.name}@{ref}",
        "nccl_source": f"{NCCL_SOURCE}.pyx/.pxd at {MIRROR.name}@{ref}",
        "modules": modules,
        "classes": {**{path: sorted(dir(resolve(path))) for path in CLASSES},
                    "cupy.cuda.nccl.NcclCommunicator": cython_class(nccl_pyx, "NcclCommunicator")},
        "numpy_identical": sorted(n for n in dir(cupy) if not n.startswith("_")
                                  and getattr(cupy, n) is numpy_attr(n)),
        "ufuncs": ufunc_table(cupy),
        "keywords": keyword_table(cupy),
        "constants": {
            "cupy_backends.cuda.libs.cublas": cublas_constants,
            "cupy_backends.cuda.libs.nccl": nccl_constants,
            "cupy.cuda.runtime": {n: getattr(runtime, n) for n in dir(runtime)
                                  if not n.startswith("_") and isinstance(getattr(runtime, n), int)},
        },
        "runtime_version": runtime.runtimeGetVersion(),
    }
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} (cupy {cupy.__version__})")


if __name__ == "__main__":
    main()
