"""The op registry: the names every implementation of the layers provides.

An op is one function of a layer's forward/backward pair, or of the optimizer. The reference
implementations live in minigrad/<layer>.py; minigrad/cpu/ and minigrad/cuda/ hold faster
ones with the same signatures, in modules named as the reference's (cuda/gelu.py beside
gelu.py), each defining the ops it speeds up and no others. `collect` gathers what a package
defines; minigrad/kernels.py lays the fast ops of a device over the reference ones.
"""
import importlib
import importlib.util

OP_NAMES = (
    "embedding_forward", "embedding_backward", "linear_forward", "linear_backward",
    "layernorm_forward", "layernorm_backward", "residual_layernorm_forward", "gelu_forward", "gelu_backward",
    "dropout_forward", "dropout_backward", "attention_forward", "attention_backward",
    "cross_entropy_forward", "cross_entropy_backward", "clip_grad_norm", "adamw_update",
)
# The layer modules, by file name: minigrad/<name>.py, and where they exist cpu/<name>.py, cuda/<name>.py.
LAYER_MODULES = ("embedding", "linear", "layernorm", "gelu", "dropout", "attention", "crossentropy", "optim")


def collect(package):
    """{op name: function} for the ops that `package`'s layer modules define themselves (an op a
    module imports from a sibling, as attention imports linear's, is its sibling's)."""
    ops = {}
    for name in LAYER_MODULES:
        if importlib.util.find_spec(f"{package}.{name}") is None:
            continue
        module = importlib.import_module(f"{package}.{name}")
        ops.update({op: fn for op in OP_NAMES if getattr(fn := getattr(module, op, None), "__module__", None)
                    == module.__name__})
    return ops


def reference_ops():
    """{op name: reference function}: every op, from minigrad/<layer>.py."""
    return collect(__package__)
