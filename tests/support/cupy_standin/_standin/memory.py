"""Fake device memory: every NumPy buffer behind a fake array is an allocation with a unique
fake device address range; live bytes are tracked (weakrefs free them) and limited on demand.

An allocation is keyed by its *root*, the NumPy array that owns the memory (views share it), and
belongs to the device that was current when it was made.
Addresses start at 0x7e00_0000_0000 (clear of where Linux maps host memory), 256-byte aligned,
with a 64 KiB unmapped gap after each allocation, so a device pointer resolves to exactly one
allocation and an out-of-bounds access is caught rather than landing in a neighbour.
"""
import bisect
import os
import weakref

import numpy as np
from _standin import state
from _standin.names import hidden, restrict

BASE_ADDRESS = 0x7E00_0000_0000
ALIGN = 256
GAP = 64 * 1024
DEVICE_BYTES = 141 * 10**9   # what memGetInfo reports as total without a limit (an H200)


class OutOfMemoryError(MemoryError):
    """Out-of-memory error (CuPy's message formats).

    Args:
        size (int): Size of memory about to be allocated.
        total (int): Size of memory successfully allocated so far.
        limit (int): Allocation limit.
    """

    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        if limit == 0:
            msg = f"Out of memory allocating {size:,} bytes"
            if total != -1:
                msg += f" (allocated so far: {total:,} bytes)."
        else:
            msg = (f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, "
                   f"limit set to: {limit:,} bytes).")
        super().__init__(msg)

    def __reduce__(self):
        return type(self), (self._size, self._total, self._limit)


restrict(OutOfMemoryError, "cupy.cuda.memory.OutOfMemoryError", module="cupy.cuda.memory")


class Allocation:
    """One fake device allocation: [ptr, ptr + nbytes) on device `device_id`, holding `root`'s
    memory (host_address: where root's memory starts on the host, once needed)."""
    __slots__ = ("ptr", "nbytes", "device_id", "ref", "host_address")

    def get_root(self):
        return self.ref()


_by_root = {}        # id(root) -> Allocation
_starts = []         # sorted start addresses of live allocations
_by_start = {}       # start address -> Allocation
_next_address = BASE_ADDRESS
live_bytes = 0
# Total device memory: standin.set_memory_limit, or CUPY_STANDIN_MEMORY_LIMIT (bytes) for a
# subprocess, such as a train.py run that is to run out of memory.
device_limit = int(os.environ["CUPY_STANDIN_MEMORY_LIMIT"]) if os.environ.get("CUPY_STANDIN_MEMORY_LIMIT") else None
pool_limit = 0       # MemoryPool.set_limit (0: none), as in CuPy


def host_address(a):
    """The host address of the first element of NumPy array `a`."""
    return a.__array_interface__["data"][0]


def check_room(nbytes):
    """OutOfMemoryError if allocating nbytes more would pass the device or pool limit."""
    if pool_limit and live_bytes + nbytes > pool_limit:
        raise OutOfMemoryError(nbytes, live_bytes, pool_limit)
    if device_limit is not None and live_bytes + nbytes > device_limit:
        raise OutOfMemoryError(nbytes, live_bytes)


def root_of(a):
    """The NumPy array that owns the memory of view `a` (`a` itself for an owner)."""
    root, base = a, a.base
    while base is not None:
        if isinstance(base, np.ndarray):
            root = base
        base = getattr(base, "base", None)
    return root


def _register(root):
    global _next_address, live_bytes
    nbytes = root.nbytes
    check_room(nbytes)
    alloc = Allocation()
    alloc.ptr, alloc.nbytes, alloc.host_address = _next_address, nbytes, None
    alloc.device_id = state.current_device()
    key, ptr = id(root), alloc.ptr

    def free(_ref):   # closes over plain values only: no reference cycle per allocation
        global live_bytes
        live_bytes -= nbytes
        _by_root.pop(key, None)
        _by_start.pop(ptr, None)
        i = bisect.bisect_left(_starts, ptr)
        if i < len(_starts) and _starts[i] == ptr:
            del _starts[i]

    alloc.ref = weakref.ref(root, free)
    _by_root[key] = alloc
    _by_start[alloc.ptr] = alloc
    _starts.append(alloc.ptr)          # addresses only grow, so the list stays sorted
    live_bytes += nbytes
    _next_address = -(-(_next_address + nbytes + GAP) // ALIGN) * ALIGN
    return alloc


def track(a):
    """Registers the memory of NumPy array `a` as device memory unless it already is (a view of
    a registered root). Returns True when this made a new allocation."""
    root = a if a.base is None else root_of(a)
    if id(root) in _by_root:
        return False
    _register(root)
    return True


def allocation_of(a):
    """The Allocation holding NumPy array `a` (registering its root if needed)."""
    root = a if a.base is None else root_of(a)
    alloc = _by_root.get(id(root))
    return alloc if alloc is not None else _register(root)


def _offset_in(alloc, a):
    """Byte offset of view `a`'s first element in allocation `alloc`."""
    if alloc.host_address is None:   # read lazily: __array_interface__ is slow, pointers are rare
        alloc.host_address = host_address(alloc.get_root())
    return host_address(a) - alloc.host_address


def resolve(ptr):
    """(Allocation, byte offset) of device address `ptr`; ValueError if no live allocation holds
    it (a pointer past the last byte is allowed: it is where a zero-size access would start)."""
    i = bisect.bisect_right(_starts, ptr) - 1
    if i >= 0:
        alloc = _by_start[_starts[i]]
        offset = ptr - alloc.ptr
        if offset <= alloc.nbytes and alloc.get_root() is not None:
            return alloc, offset
    raise ValueError(f"cupy stand-in: {ptr:#x} is not an address in live device memory")


def buffer_view(alloc, dtype, offset, shape, strides):
    """A NumPy view into allocation `alloc` (writable, sharing its memory): `shape` elements of
    `dtype` at byte `offset` with byte `strides`. The caller has checked the bounds."""
    root = alloc.get_root()
    flat = root.reshape(-1, order="A").view(np.uint8)
    return np.ndarray(shape, dtype, buffer=flat, offset=offset, strides=strides)


# ---- CuPy's memory objects ----------------------------------------------------------------

class Memory:
    """Memory allocation on a CUDA device (here: the allocation behind a fake array, which it
    keeps alive, as CuPy's does)."""
    __slots__ = ("ptr", "size", "device_id", "_root")

    def __init__(self, size):
        raise NotImplementedError("cupy stand-in: cupy.cuda.Memory(size) is not implemented; "
                                  "use cupy.empty(size, cupy.uint8).data")

    @property
    def device(self):
        from _standin.device import Device
        return Device(self.device_id)

    def __int__(self):
        return self.ptr


_, _set_root = hidden(Memory, "_root")


def _memory_of(alloc):
    """The Memory object of an allocation."""
    mem = object.__new__(Memory)
    mem.ptr, mem.size, mem.device_id = alloc.ptr, alloc.nbytes, alloc.device_id
    _set_root(mem, alloc.get_root())
    return mem


class MemoryPointer:
    """Pointer to a point on a device memory: `ptr` (int), `mem` (the whole allocation)."""
    __slots__ = ("ptr", "mem", "device_id")

    def __init__(self, mem, offset):
        self.mem, self.ptr, self.device_id = mem, mem.ptr + offset, mem.device_id

    @property
    def device(self):
        return self.mem.device

    def __int__(self):
        return self.ptr

    def __add__(self, offset):
        return MemoryPointer(self.mem, self.ptr - self.mem.ptr + offset)

    def __repr__(self):
        return f"<MemoryPointer {self.ptr:#x} (cupy stand-in)>"


def pointer_of(a):
    """MemoryPointer to the first element of NumPy array `a` (a fake's backing), like
    `cupy.ndarray.data`."""
    alloc = allocation_of(a)
    return MemoryPointer(_memory_of(alloc), _offset_in(alloc, a))


class MemoryPool:
    """The default memory pool. The stand-in caches nothing: used == total == live bytes."""
    __slots__ = ()

    def used_bytes(self):
        return live_bytes

    def total_bytes(self):
        return live_bytes

    def free_bytes(self):
        return 0

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def free_all_free(self):
        pass

    def get_limit(self):
        return pool_limit

    def set_limit(self, size=None, fraction=None):
        """Like CuPy: size in bytes, or fraction of the device's memory; 0/None: no limit."""
        global pool_limit
        if fraction is not None:
            pool_limit = int(total_device_bytes() * fraction)
        else:
            pool_limit = int(size or 0)


DEFAULT_POOL = MemoryPool()


def total_device_bytes():
    return DEVICE_BYTES if device_limit is None else device_limit


def mem_get_info():
    """(free, total) bytes, as cudaMemGetInfo reports them."""
    total = total_device_bytes()
    return max(total - live_bytes, 0), total


for _cls, _key in ((Memory, "cupy.cuda.Memory"), (MemoryPointer, "cupy.cuda.MemoryPointer"),
                   (MemoryPool, "cupy.cuda.MemoryPool")):
    restrict(_cls, _key, module="cupy.cuda.memory")
