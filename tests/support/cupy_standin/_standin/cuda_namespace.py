"""What the fake cupy.cuda modules hold (each a table of real CuPy names)."""
import importlib

from _standin import device, kernels, memory

RUNTIME = device.RUNTIME
DEVICE = device.DEVICE
STREAM = device.STREAM
DRIVER = {"CUDADriverError": device.CUDADriverError}
COMPILER = {"CompileException": kernels.CompileException}
MEMORY = {"OutOfMemoryError": memory.OutOfMemoryError, "MemoryPool": memory.MemoryPool,
          "MemoryPointer": memory.MemoryPointer, "Memory": memory.Memory,
          "CUDARuntimeError": device.CUDARuntimeError}


def is_available():
    return True


CUDA = {**STREAM, "Device": device.Device, "get_cublas_handle": device.get_cublas_handle,
        "get_device_id": device.getDevice, "MemoryPool": memory.MemoryPool,
        "MemoryPointer": memory.MemoryPointer, "Memory": memory.Memory,
        "is_available": is_available}


def lazy_cuda(name):
    """cupy.cuda.cublas, loaded on first use as in CuPy."""
    if name == "cublas":
        return importlib.import_module("cupy_backends.cuda.libs.cublas")
    raise LookupError(name)
