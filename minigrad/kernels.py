"""The one place that chooses which implementation of each op a model runs.

    ops = kernels("cpu", "fast", threads=2)      # or "reference"; device "cpu" or "cuda"
    out, cache = ops.layernorm_forward(x, w, b)

"reference" is the plain pairs of minigrad/<layer>.py on any device: the math as written,
what a reader steps through in a debugger. "fast" replaces some of them with the device's
own implementations of the same signatures (minigrad/cpu/, minigrad/cuda/), which the tests
hold equal to the reference. Layers never ask which device they are on; the model calls the
ops it is handed.
"""
from types import SimpleNamespace

from .cpu.optim import ChunkedAdamW
from .ops import collect, reference_ops

KERNELS = ("fast", "reference")


def cpu_ops(threads):
    """{op name: fast NumPy function} for the ops minigrad/cpu/ implements; AdamW's update
    runs in chunks on `threads` threads."""
    return {**collect("minigrad.cpu"), "adamw_update": ChunkedAdamW(threads)}


def kernels(device, kind="fast", threads=1, tf32=True):
    """A namespace holding every op in minigrad.ops.OP_NAMES for `device` ('cpu' or 'cuda').

    threads: CPU threads for the fast AdamW update (the CPU data-parallel worker count).
    tf32: CUDA float32 matrix products on TF32 tensor cores (as PyTorch's allow_tf32)."""
    if kind not in KERNELS:
        raise ValueError(f"unknown kernels {kind!r}; choose one of {', '.join(KERNELS)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} for kernels; choose cpu or cuda")
    ops = reference_ops()
    if kind == "fast":
        if device == "cpu":
            ops.update(cpu_ops(threads))
        else:
            from . import cuda  # imports CuPy: only when asked
            ops.update(cuda.fast_ops(tf32=tf32))
    return SimpleNamespace(kind=kind, device=device, **ops)
