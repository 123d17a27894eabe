"""The fake GPUs (H200s: device 0 alone, or CUPY_STANDIN_GPUS of them): Device, streams,
events, and the CUDA runtime calls. The current device is per thread (state.current_device);
each allocation belongs to the device current when it was made.

Everything runs synchronously on the host, so synchronizing only counts (a sync)."""
import itertools
import threading
import time

from _standin import memory, state
from _standin.names import CONSTANTS, NAMES, restrict

MULTIPROCESSORS = 132
ATTRIBUTES = {   # cupy.cuda.Device().attributes (cudaDevAttr names without the prefix)
    "MaxThreadsPerBlock": 1024, "MaxBlockDimX": 1024, "MaxBlockDimY": 1024, "MaxBlockDimZ": 64,
    "MaxGridDimX": 2**31 - 1, "MaxGridDimY": 65535, "MaxGridDimZ": 65535,
    "MaxSharedMemoryPerBlock": 49152, "MaxSharedMemoryPerBlockOptin": 232448,
    "MaxSharedMemoryPerMultiprocessor": 233472, "WarpSize": 32,
    "MultiProcessorCount": MULTIPROCESSORS, "ComputeCapabilityMajor": 9,
    "ComputeCapabilityMinor": 0, "L2CacheSize": 52428800, "MaxThreadsPerMultiProcessor": 2048,
    "MaxRegistersPerBlock": 65536, "ClockRate": 1980000, "MemoryClockRate": 3201000,
    "GlobalMemoryBusWidth": 6144, "TotalConstantMemory": 65536,
}
LIMITS = {  # kernel launch limits the fake GPU enforces
    "block": (ATTRIBUTES["MaxBlockDimX"], ATTRIBUTES["MaxBlockDimY"], ATTRIBUTES["MaxBlockDimZ"]),
    "grid": (ATTRIBUTES["MaxGridDimX"], ATTRIBUTES["MaxGridDimY"], ATTRIBUTES["MaxGridDimZ"]),
    "threads": ATTRIBUTES["MaxThreadsPerBlock"],
    "shared_mem": ATTRIBUTES["MaxSharedMemoryPerBlock"],
}
_ERRORS = {
    101: ("cudaErrorInvalidDevice", "invalid device ordinal"),
    400: ("cudaErrorInvalidResourceHandle", "invalid resource handle"),
}
_handles = itertools.count(0x5600_0000, 0x100)   # fake stream and event handles


class CUDARuntimeError(RuntimeError):
    """A CUDA runtime API error, as `cupy_backends.cuda.api.runtime.CUDARuntimeError`."""

    def __init__(self, status):
        self.status = status
        name, text = _ERRORS[status]
        super().__init__(f"{name}: {text}")


def _check_device(device_id):
    if not 0 <= device_id < state.n_devices:
        raise CUDARuntimeError(101)


class Device:
    """A CUDA device (an H200); Device() is the current one."""
    __slots__ = ("id",)

    def __init__(self, device=None):
        self.id = state.current_device() if device is None else int(device)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __int__(self):
        return self.id

    def __enter__(self):
        """Makes this device current until __exit__, which restores the previous one."""
        _check_device(self.id)
        _previous_devices().append(state.current_device())
        state.set_current_device(self.id)
        return self

    def __exit__(self, *exc):
        state.set_current_device(_previous_devices().pop())

    def use(self):
        _check_device(self.id)
        state.set_current_device(self.id)

    def synchronize(self):
        _check_device(self.id)
        state.record("syncs")

    @property
    def compute_capability(self):
        _check_device(self.id)
        return "90"

    @property
    def mem_info(self):
        _check_device(self.id)
        return memory.mem_get_info()

    @property
    def attributes(self):
        _check_device(self.id)
        return dict(ATTRIBUTES)

    @property
    def cublas_handle(self):
        return get_cublas_handle()


restrict(Device, "cupy.cuda.Device", module="cupy.cuda.device")
_entered = threading.local()


def _previous_devices():
    """This thread's stack of the devices that `with Device(i):` blocks replaced."""
    if not hasattr(_entered, "stack"):
        _entered.stack = []
    return _entered.stack


class Stream:
    """A CUDA stream. `with stream:` or `stream.use()` makes it current."""

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else (2 if ptds else next(_handles))
        self.device_id = -1 if null or ptds else state.current_device()
        self._non_blocking, self._priority = non_blocking, priority or 0

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"

    def __eq__(self, other):
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self):
        return self.ptr

    def __enter__(self):
        _current_streams.append(self)
        return self

    def __exit__(self, *exc):
        _current_streams.pop()

    def use(self):
        _current_streams[-1:] = [self]
        return self

    @property
    def is_non_blocking(self):
        return self._non_blocking

    @property
    def priority(self):
        return self._priority

    @property
    def done(self):
        return True

    def synchronize(self):
        state.record("syncs")

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        pass


Stream.null = Stream(null=True)
Stream.ptds = Stream(ptds=True)
restrict(Stream, "cupy.cuda.Stream", module="cupy.cuda.stream")
_current_streams = []


def get_current_stream(device_id=-1):
    return _current_streams[-1] if _current_streams else Stream.null


class Event:
    """A CUDA event. Work runs synchronously here, so an event records the host's clock."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.ptr = next(_handles)
        self._timing, self._recorded, self._time = not disable_timing, False, None

    @property
    def done(self):
        return True

    def record(self, stream=None):
        self._recorded, self._time = True, time.perf_counter()

    def synchronize(self):
        state.record("syncs")


restrict(Event, "cupy.cuda.Event", module="cupy.cuda.stream")


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events with timing (host time between the records)."""
    for event in (start_event, end_event):
        if not (event._timing and event._recorded):
            raise CUDARuntimeError(400)
    return (end_event._time - start_event._time) * 1e3


def get_cublas_handle():
    from _standin import cublas
    return cublas.default_handle()


# ---- cupy.cuda.runtime --------------------------------------------------------------------

def getDeviceCount():
    return state.n_devices


def getDevice():
    return state.current_device()


def setDevice(device):
    _check_device(device)
    state.set_current_device(device)


def deviceSynchronize():
    state.record("syncs")


def streamSynchronize(stream):
    state.record("syncs")


def eventSynchronize(event):
    state.record("syncs")


def memGetInfo():
    return memory.mem_get_info()


def runtimeGetVersion():
    return NAMES["runtime_version"]


def driverGetVersion():
    return NAMES["runtime_version"]


def getDeviceProperties(device):
    """The cudaDeviceProp fields CuPy returns, for the fake H200."""
    _check_device(device)
    a = ATTRIBUTES
    return {
        "name": b"NVIDIA H200 (cupy stand-in)", "totalGlobalMem": memory.total_device_bytes(),
        "sharedMemPerBlock": a["MaxSharedMemoryPerBlock"], "regsPerBlock": a["MaxRegistersPerBlock"],
        "warpSize": a["WarpSize"], "maxThreadsPerBlock": a["MaxThreadsPerBlock"],
        "maxThreadsDim": LIMITS["block"], "maxGridSize": LIMITS["grid"],
        "clockRate": a["ClockRate"], "totalConstMem": a["TotalConstantMemory"],
        "major": 9, "minor": 0, "multiProcessorCount": MULTIPROCESSORS,
        "sharedMemPerBlockOptin": a["MaxSharedMemoryPerBlockOptin"],
        "sharedMemPerMultiprocessor": a["MaxSharedMemoryPerMultiprocessor"],
        "maxThreadsPerMultiProcessor": a["MaxThreadsPerMultiProcessor"],
        "l2CacheSize": a["L2CacheSize"], "memoryClockRate": a["MemoryClockRate"],
        "memoryBusWidth": a["GlobalMemoryBusWidth"], "concurrentKernels": 1, "ECCEnabled": 1,
        "pciBusID": device, "pciDeviceID": 0, "pciDomainID": 0, "unifiedAddressing": 1,
        "managedMemory": 1, "integrated": 0, "canMapHostMemory": 1, "computeMode": 0,
    }


def deviceGetAttribute(attrib, device):
    """A cudaDevAttr* value (those in ATTRIBUTES)."""
    _check_device(device)
    for name, value in CONSTANTS["cupy.cuda.runtime"].items():
        if value == attrib and name.startswith("cudaDevAttr") and name[11:] in ATTRIBUTES:
            return ATTRIBUTES[name[11:]]
    raise NotImplementedError(f"cupy stand-in: device attribute {attrib} is not implemented")


RUNTIME = {
    **CONSTANTS["cupy.cuda.runtime"],
    "CUDARuntimeError": CUDARuntimeError,
    **{fn.__name__: fn for fn in (getDeviceCount, getDevice, setDevice, deviceSynchronize,
                                   streamSynchronize, eventSynchronize, memGetInfo,
                                   runtimeGetVersion, driverGetVersion, getDeviceProperties,
                                   deviceGetAttribute)},
}
def get_compute_capability(device_id):
    _check_device(device_id)
    return "90"


DEVICE = {"Device": Device, "get_cublas_handle": get_cublas_handle,
          "get_device_id": getDevice, "get_compute_capability": get_compute_capability}
STREAM = {"Stream": Stream, "Event": Event, "get_current_stream": get_current_stream,
          "get_elapsed_time": get_elapsed_time}


_DRIVER_ERRORS = {1: ("CUDA_ERROR_INVALID_VALUE", "invalid argument"),
                  500: ("CUDA_ERROR_NOT_FOUND", "named symbol not found")}


class CUDADriverError(RuntimeError):
    """A CUDA driver API error, as `cupy.cuda.driver.CUDADriverError`."""

    def __init__(self, status):
        self.status = status
        name, text = _DRIVER_ERRORS[status]
        super().__init__(f"{name}: {text}")

    def __reduce__(self):
        return type(self), (self.status,)


restrict(CUDADriverError, "cupy.cuda.driver.CUDADriverError", module="cupy.cuda.driver")
