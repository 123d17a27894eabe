"""The backend (device choice, array module) and the CuPy API surface the engine relies on.

The CuPy checks read the source of minigrad (its subpackages included) and gpt with `ast`
and look every `xp.` name up in CuPy's namespace, so they run without a GPU (CuPy imports
without one).
"""
import ast
import inspect
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from minigrad import Backend, DeviceError, get_array_module, resolve_device

ROOT = pathlib.Path(__file__).resolve().parents[2]
MINIGRAD = ROOT / "minigrad"
ENGINE = sorted(MINIGRAD.rglob("*.py"))                 # the layers and their fast versions
SOURCES = ENGINE + sorted((ROOT / "gpt").glob("*.py"))  # ... and the model, which runs on the device too
ARRAY_MODULES = ("xp", "cupy")          # names (or <anything>.<name>) that hold numpy or cupy
TOOLING = {"backend.py", "gradcheck.py"}  # allowed to import numpy; everything else is layer code
DEVICE_CODE = MINIGRAD / "cuda"           # CUDA kernels and their launches: CuPy by definition


def cuda_answers():
    """True when CuPy imports and a CUDA device runs a kernel (independent of minigrad)."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0 and cupy.zeros(1).sum().item() == 0
    except Exception:
        return False


def test_cpu_backend_uses_numpy():
    """Backend("cpu"): numpy, float32 by default, host copies are numpy."""
    be = Backend("cpu")
    assert be.name == "cpu" and be.xp is np and be.dtype is np.float32
    assert Backend("cpu", "float64").dtype is np.float64
    assert isinstance(be.to_host(be.asarray([1.0, 2.0])), np.ndarray)
    be.synchronize()


def test_unknown_dtype_raises():
    with pytest.raises(DeviceError, match="float16"):
        Backend("cpu", "float16")


def test_auto_resolves_to_cpu_without_gpu():
    """'auto' picks cuda only when a device answers."""
    assert resolve_device("auto") == ("cuda" if cuda_answers() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_gpu_raises_clear_error():
    """--device cuda on a machine without a usable GPU: DeviceError saying so and what to use."""
    if cuda_answers():
        pytest.skip("a CUDA device answers here")
    with pytest.raises(DeviceError, match=r"--device cuda is not available: .*; use --device cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "", None])
def test_unknown_device_raises(name):
    with pytest.raises(DeviceError, match="unknown device.*auto, cpu, cuda"):
        resolve_device(name)


def test_get_array_module_of_numpy_is_numpy():
    assert get_array_module(np.zeros(3, np.float32)) is np
    assert get_array_module(np.float32(1.0)) is np


def test_importing_minigrad_does_not_import_cupy():
    """CuPy stays optional and free: a plain import never loads it."""
    code = "import minigrad, sys; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MINIGRAD.parent)


def test_layer_code_imports_neither_numpy_nor_cupy():
    """Layers take their array module from their inputs (get_array_module), never import one."""
    for path in ENGINE:
        if path.name in TOOLING or DEVICE_CODE in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("numpy", "cupy") for n in names), \
                    f"{path.name}:{node.lineno} imports an array module"


# ---- the CuPy API surface ----------------------------------------------------------------

def attribute_chain(node):
    """'xp.add.at' for the Attribute chain xp.add.at (also self.xp.add.at or
    model.backend.xp.add.at), else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
        if isinstance(node, ast.Attribute) and node.attr in ARRAY_MODULES:
            node = ast.Name(id=node.attr)          # self.backend.xp -> xp
    if isinstance(node, ast.Name) and node.id in ARRAY_MODULES:
        return ".".join([node.id] + parts[::-1])
    return None


def engine_uses():
    """(xp chains with their call keywords, ndarray attributes, Generator methods) over SOURCES:
    {'xp.add.at': {keywords}, ...}, {'reshape': {keywords}, ...}, {'random': {keywords}}.
    In gpt/, where host-side NumPy code sits beside device code, only the xp chains count."""
    chains, methods, rng_methods = {}, {}, {}
    ndarray_names = set(dir(np.ndarray))
    for path in SOURCES:
        in_engine = path in ENGINE
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
                continue                                    # only the outermost of a chain
            call = parents.get(node)
            kws = {k.arg for k in call.keywords} if isinstance(call, ast.Call) and call.func is node else set()
            chain = attribute_chain(node)
            if chain is not None:
                chains.setdefault(chain.replace("cupy.", "xp.", 1), set()).update(kws)
            elif not in_engine:
                continue
            elif isinstance(node.value, ast.Name) and node.value.id == "rng":
                rng_methods.setdefault(node.attr, set()).update(kws)
            elif node.attr in ndarray_names and not (isinstance(node.value, ast.Name)
                                                     and node.value.id in ("math", "np")):
                methods.setdefault(node.attr, set()).update(kws)
    return chains, methods, rng_methods


def accepted_keywords(obj, cupy):
    """Keyword names `obj` accepts, or None when it cannot be told."""
    if isinstance(obj, cupy.ufunc):
        return {"out", "dtype"}                     # cupy.ufunc.__call__'s documented keywords
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def check_exists(owner, path, kws, cupy, missing):
    obj = owner
    for part in path.split("."):
        if not hasattr(obj, part):
            missing.append(f"{path} (no {part!r})")
            return
        obj = getattr(obj, part)
    accepted = accepted_keywords(obj, cupy)
    if accepted is not None and not kws <= accepted:
        missing.append(f"{path} does not take {sorted(kws - accepted)}")


def test_engine_uses_only_functions_cupy_has():
    """Every xp.<name> (and chain, e.g. xp.add.at, cupy.RawModule, xp.cuda...), every
    ndarray attribute and every rng method minigrad uses exists in CuPy and takes the keywords
    used with it (where CuPy exposes a signature)."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed; cannot check its API")
    chains, methods, rng_methods = engine_uses()
    assert len(chains) >= 10, f"found too few xp. uses to trust the scan: {sorted(chains)}"
    assert {"xp.add.at", "xp.matmul", "xp.RawModule"} <= set(chains)
    assert {"reshape", "transpose", "sum", "astype"} <= set(methods)
    missing = []
    for chain, kws in chains.items():
        check_exists(cupy, chain.split(".", 1)[1], kws, cupy, missing)
    for name, kws in methods.items():
        check_exists(cupy.ndarray, name, kws, cupy, missing)
    for name, kws in rng_methods.items():
        check_exists(cupy.random.Generator, name, kws, cupy, missing)
    assert not missing, f"not in CuPy: {missing}"
