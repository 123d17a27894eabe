"""minigrad: explicit forward/backward pairs for the layers of GPT-2, on NumPy or CuPy.

Every `<layer>_forward(...)` returns (out, cache); every `<layer>_backward(dout, cache, *grads)`
adds weight gradients into the arrays it is given and returns the input gradient. The names
exported here are the reference pairs; `kernels(device, "fast")` hands out the same ops with
the device's fast implementations where there are some (minigrad/cpu/, minigrad/cuda/).
"""
from .attention import attention_backward, attention_forward
from .backend import Backend, DeviceError, get_array_module, resolve_device
from .crossentropy import cross_entropy_backward, cross_entropy_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward
from .gelu import gelu_backward, gelu_forward
from .kernels import KERNELS, kernels
from .layernorm import layernorm_backward, layernorm_forward
from .linear import linear_backward, linear_forward
from .ops import OP_NAMES
from .optim import AdamW, adamw_update, clip_grad_norm, lr_at
