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

from . import attention, crossentropy, cuda, dropout, embedding, gelu, layernorm, linear, optim
from .cpu import (
    attention as cpu_attention,
    crossentropy as cpu_crossentropy,
    gelu as cpu_gelu,
    layernorm as cpu_layernorm,
    linear as cpu_linear,
    optim as cpu_optim,
)

KERNELS = ("fast", "reference")

OP_NAMES = (
    "embedding_forward", "embedding_backward", "linear_forward", "linear_backward",
    "layernorm_forward", "layernorm_backward", "residual_layernorm_forward", "gelu_forward", "gelu_backward",
    "dropout_forward", "dropout_backward", "attention_forward", "attention_backward",
    "cross_entropy_forward", "cross_entropy_backward", "clip_grad_norm", "adamw_update",
)


def reference_ops():
    """{op name: reference function}."""
    modules = (embedding, linear, layernorm, gelu, dropout, attention, crossentropy, optim)
    return {name: getattr(m, name) for m in modules for name in OP_NAMES if hasattr(m, name)}


def cpu_ops(threads):
    """{op name: fast NumPy function} for the ops minigrad/cpu/ implements."""
    modules = (cpu_linear, cpu_layernorm, cpu_gelu, cpu_attention, cpu_crossentropy, cpu_optim)
    ops = {name: getattr(m, name) for m in modules for name in OP_NAMES if hasattr(m, name)}
    ops["adamw_update"] = cpu_optim.ChunkedAdamW(threads)
    return ops


def kernels(device, kind="fast", threads=1, tf32=True):
    """A namespace holding every op in OP_NAMES for `device` ('cpu' or 'cuda').

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
            ops.update(cuda.fast_ops(tf32=tf32))
    return SimpleNamespace(kind=kind, device=device, **ops)
