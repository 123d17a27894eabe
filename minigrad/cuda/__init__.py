"""Fused CUDA kernels for the GPU path, with the reference signatures.

    ops = minigrad.kernels("cuda", "fast")       # calls fast_ops() below

Each module here holds the device version of one reference module (minigrad/<layer>.py):
Python that allocates the outputs and launches kernels from src/*.cu (one CuPy RawModule
per float type, minigrad/cuda/module.py) or cuBLAS (gemm.py). The reference pair is each
kernel's specification: selftest.py holds every op to it, on random inputs with odd
shapes, and fast_ops() runs those checks once per process on first use, so an op whose
kernels fail to compile or disagree with the reference on this GPU is replaced by the
reference pair, with a one-line warning.

Importing this package imports no CuPy; fast_ops() does.
"""

OP_MODULES = {
    "linear": ("linear_forward", "linear_backward"),
    "layernorm": ("layernorm_forward", "layernorm_backward", "residual_layernorm_forward"),
    "elementwise": ("gelu_forward", "gelu_backward", "dropout_forward", "dropout_backward"),
    "attention": ("attention_forward", "attention_backward"),
    "crossentropy": ("cross_entropy_forward", "cross_entropy_backward"),
    "embedding": ("embedding_forward", "embedding_backward"),
    "optim": ("clip_grad_norm", "adamw_update"),
}


def cuda_ops():
    """{op name: CUDA function} for every op in OP_MODULES, unchecked."""
    import importlib
    ops = {}
    for module_name, names in OP_MODULES.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        ops.update({name: getattr(module, name) for name in names})
    return ops


def fast_ops(tf32=True, check=True):
    """{op name: CUDA function}. tf32: float32 matrix products on TF32 tensor cores.
    check: run the self-test first (once per process and TF32 mode) and leave out the ops
    that fail it, so that the caller's reference ops stand in for them."""
    from . import gemm
    ops = cuda_ops()
    if check:
        from .selftest import failing_ops
        for name in failing_ops(tf32):
            ops.pop(name, None)
    gemm.ALLOW_TF32 = tf32                     # after the self-test, which sets its own modes
    return ops
