"""What the stand-in records (launches, syncs, transfers, GEMM and NCCL calls), what tests
inject (NumPy twins of custom kernels, compile failures, the number of GPUs) and the current
device. `standin` is the public face of this."""
import collections
import importlib
import json
import os
import pathlib
import sys
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Frames in these files are the stand-in's own; a count's site is the first frame outside them.
_OWN_PREFIXES = tuple(str(ROOT / d) + "/" for d in ("_standin", "cupy", "cupy_backends"))
_OWN_FILES = {str(ROOT / "standin.py")}

GemmCall = collections.namedtuple("GemmCall", "function m n k batch compute_type site")
GemmCall.__doc__ = """One cuBLAS GEMM call: function name, sizes, batchCount, computeType (the
cuBLAS enum, e.g. 77 = CUBLAS_COMPUTE_32F_FAST_TF32; for sgemm/dgemm the implied 68/70), site."""
NcclCall = collections.namedtuple("NcclCall", "function count dtype rank site")
NcclCall.__doc__ = """One NCCL collective: function name (allReduce, reduceScatter, allGather), count
(elements: per rank's slice for reduceScatter and allGather, as NCCL counts), NumPy dtype name,
the communicator rank, site."""

KINDS = ("launches", "syncs", "h2d", "d2h")


class Counts:
    """Integer totals of kernel launches, device->host synchronizations and host<->device
    transfers; `by_site` splits them by the calling line ("path:line" -> {kind: n}), `kernels`
    counts custom-kernel launches by twin name, `gemm_log` lists cuBLAS GEMM calls, `nccl_log`
    NCCL collectives."""

    def __init__(self):
        self.launches = self.syncs = self.h2d = self.d2h = 0
        self.by_site = {}
        self.kernels = collections.Counter()
        self.gemm_log = []
        self.nccl_log = []

    def __repr__(self):
        return (f"Counts(launches={self.launches}, syncs={self.syncs}, h2d={self.h2d}, "
                f"d2h={self.d2h})")

    def as_dict(self):
        """{'launches': n, 'syncs': n, 'h2d': n, 'd2h': n}"""
        return {kind: getattr(self, kind) for kind in KINDS}


counts = Counts()   # global totals since import or reset(); by_site stays empty (see record)
active = []         # the Counts of the counting() contexts now open, outermost first
_own_code = {}      # code object -> whether it belongs to the stand-in


def _is_own(code):
    own = _own_code.get(code)
    if own is None:
        name = code.co_filename
        own = _own_code[code] = name.startswith(_OWN_PREFIXES) or name in _OWN_FILES
    return own


def site():
    """'path:line' of the innermost frame outside the stand-in (the product or test code)."""
    frame = sys._getframe(1)
    while frame is not None and _is_own(frame.f_code):
        frame = frame.f_back
    return "?" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


def record(kind, n=1):
    """Adds n to `kind` (one of KINDS) in the global totals and in every open counting()
    context; the call site is looked up only while a context is open (it is the main cost)."""
    setattr(counts, kind, getattr(counts, kind) + n)
    if active:
        where = site()
        for c in active:
            setattr(c, kind, getattr(c, kind) + n)
            per_site = c.by_site.get(where)
            if per_site is None:
                per_site = c.by_site[where] = dict.fromkeys(KINDS, 0)
            per_site[kind] += n


def record_kernel(twin_name):
    """One custom-kernel launch (counted as a launch, and by name)."""
    record("launches")
    for c in [counts, *active]:
        c.kernels[twin_name] += 1


def record_gemm(function, m, n, k, batch, compute_type):
    """One cuBLAS GEMM call (counted as a launch, and logged)."""
    record("launches")
    call = GemmCall(function, m, n, k, batch, compute_type, site())
    for c in [counts, *active]:
        c.gemm_log.append(call)


# CUPY_STANDIN_NCCL_LOG: a file every process appends its NCCL calls to, one JSON line each, for
# a test to read after the ranks of an mpirun exit.
NCCL_LOG = os.environ.get("CUPY_STANDIN_NCCL_LOG")


def record_nccl(function, count, dtype, rank):
    """One NCCL collective (counted as a launch, logged, and written to NCCL_LOG if set) with
    `callers`: the qualified names of the functions outside the stand-in, innermost first."""
    record("launches")
    call = NcclCall(function, count, dtype.name, rank, site())
    for c in [counts, *active]:
        c.nccl_log.append(call)
    if NCCL_LOG:
        line = json.dumps({**call._asdict(), "callers": _callers()})
        with open(NCCL_LOG, "a", encoding="utf-8") as f:   # one write: lines of ranks do not mix
            f.write(line + "\n")


def _callers():
    frame, names = sys._getframe(1), []
    while frame is not None:
        if not _is_own(frame.f_code):
            names.append(frame.f_code.co_qualname)
        frame = frame.f_back
    return names


def reset():
    """Zeroes the global totals (in place: references to `counts` stay valid)."""
    counts.__init__()


# ---- NumPy twins of custom kernels --------------------------------------------------------

TWINS = {}
_twins_loaded = False


def load_twins():
    """Merges the TWINS dict of tests/support/cupy_standin/twins.py (if the file exists; imported as
    the module `twins`, this directory being first on sys.path) into TWINS, once; entries
    already set (by a test) win."""
    global _twins_loaded
    if _twins_loaded:
        return
    _twins_loaded = True
    path = ROOT / "twins.py"
    if path.exists():
        module = importlib.import_module("twins")
        if pathlib.Path(module.__file__).resolve() != path:
            raise ImportError(f"cupy stand-in: `import twins` found {module.__file__}, not {path}")
        for name, fn in module.TWINS.items():
            TWINS.setdefault(name, fn)


def twin(name):
    """The NumPy twin registered for kernel `name`; NotImplementedError if there is none."""
    load_twins()
    fn = TWINS.get(name)
    if fn is None:
        raise NotImplementedError(f"no NumPy twin for kernel {name}")
    return fn


# ---- injected compile failures ------------------------------------------------------------

_failures = []   # pending: kernel base names, or None for "any kernel"


def fail_compile(name=None):
    """The next compilation of kernel `name` (its base name, template arguments stripped; None:
    of any kernel) raises cupy.cuda.compiler.CompileException. Calls accumulate."""
    _failures.append(name)


def take_failure(name):
    """True (and consumes it) when a failure is pending for kernel `name`."""
    for i, pending in enumerate(_failures):
        if pending is None or pending == name:
            del _failures[i]
            return True
    return False


def clear_failures():
    _failures.clear()


# ---- the fake machine's GPUs ------------------------------------------------------------------

def _gpus():
    value = os.environ.get("CUPY_STANDIN_GPUS", "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"cupy stand-in: CUPY_STANDIN_GPUS={value!r} is not a number of GPUs >= 1")
    return int(value)


n_devices = _gpus()         # CUPY_STANDIN_GPUS identical fake H200s (default 1)
_current = threading.local()   # the current device is per host thread, as in CUDA


def current_device():
    return getattr(_current, "id", 0)


def set_current_device(device_id):
    _current.id = device_id
