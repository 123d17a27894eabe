"""Writes cupy_names.json (beside this file) from the REAL installed CuPy.

Run it with the real cupy importable and the stand-in NOT on sys.path:

    python tests/cupy_standin/make_names.py

CuPy imports without a GPU, so `dir()` of its modules and classes can be read here. The cuBLAS
binding does not import without libcublas; its names come from its Cython source
(cupy_backends/cuda/libs/cublas.pyx and .pxd) at the tag of the installed version in the CuPy
mirror (HEAD when the tag is absent).

The json holds, per module and per class, every name `dir()` lists (plus the names a module's
`__getattr__` resolves lazily), the constant values the stand-in copies (cuBLAS enums, CUDA data
types), which cupy names are the very numpy objects, the ufuncs with their metadata, and the
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


def cublas_from_source(version):
    """(names, constants, source ref) of cupy_backends.cuda.libs.cublas from its Cython source."""
    tag = f"v{version}"
    tags = subprocess.run(["git", "-C", str(MIRROR), "tag", "-l", tag],
                          check=True, capture_output=True, text=True).stdout.split()
    ref = tag if tag in tags else "HEAD"
    pyx = git_show(ref, CUBLAS_SOURCE + ".pyx")
    pxd = git_show(ref, CUBLAS_SOURCE + ".pxd")
    names = set(re.findall(r"^cpdef\s+(?:[\w\s*]+?\s+)?(\w+)\s*\(", pyx, re.M))
    names |= set(re.findall(r"^(?:def|class)\s+(\w+)", pyx, re.M))
    constants = {}
    for block in re.findall(r"^cpdef enum[^:]*:\n((?:[ \t]+.*\n|\n)+)", pxd + "\n", re.M):
        for name, value in re.findall(r"^[ \t]+(\w+)\s*=\s*(-?\d+)", block, re.M):
            constants[name] = int(value)
    names |= set(constants) | set(CYTHON_MODULE_DUNDERS)
    return sorted(names), constants, f"{MIRROR.name}@{ref}"


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
    cublas_names, cublas_constants, cublas_ref = cublas_from_source(cupy.__version__)
    modules["cupy_backends.cuda.libs.cublas"] = cublas_names
    runtime = cupy.cuda.runtime
    data = {
        "cupy_version": cupy.__version__,
        "numpy_version": numpy.__version__,
        "cublas_source": f"{CUBLAS_SOURCE}.pyx/.pxd at {cublas_ref}",
        "modules": modules,
        "classes": {path: sorted(dir(resolve(path))) for path in CLASSES},
        "numpy_identical": sorted(n for n in dir(cupy) if not n.startswith("_")
                                  and getattr(cupy, n) is numpy_attr(n)),
        "ufuncs": ufunc_table(cupy),
        "keywords": keyword_table(cupy),
        "constants": {
            "cupy_backends.cuda.libs.cublas": cublas_constants,
            "cupy.cuda.runtime": {n: getattr(runtime, n) for n in dir(runtime)
                                  if not n.startswith("_") and isinstance(getattr(runtime, n), int)},
        },
        "runtime_version": runtime.runtimeGetVersion(),
    }
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} (cupy {cupy.__version__})")


if __name__ == "__main__":
    main()
