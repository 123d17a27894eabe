"""Token + position embedding on CUDA: the reference's signature (minigrad/embedding.py).

The backward is deterministic: the reference's scatter-add (add.at) would be atomicAdd on
a GPU, whose order, and so whose rounding, changes from run to run. Instead the ids are
sorted with their positions (one cupy.sort), and each run of one id is summed by one
thread per channel in position order.
"""
import cupy

from .module import i32, i64, launch, launch_elementwise


def embedding_forward(idx, wte, wpe):
    """idx (B, T) int64 token ids, wte (V, C), wpe (block_size, C) -> out (B, T, C)."""
    B, T = idx.shape
    C = wte.shape[1]
    if idx.dtype != cupy.int64:
        raise TypeError(f"token ids must be int64, got {idx.dtype}")
    out = cupy.empty((B, T, C), dtype=wte.dtype)
    launch_elementwise("embedding_forward", wte.dtype, out.size, idx, wte, wpe, out, i64(B * T), i32(T), i32(C))
    return out, idx


def embedding_backward(dout, cache, dwte, dwpe):
    """dout (B, T, C); accumulates into dwte (V, C) and dwpe (block_size, C). Returns None."""
    idx = cache
    B, T, C = dout.shape
    BT = B * T
    keys = cupy.empty(BT, dtype=cupy.int64)
    launch_elementwise("embedding_sort_keys", dout.dtype, BT, idx, keys, i64(BT))
    keys = cupy.sort(keys)                                   # id-major, positions ascending
    launch("embedding_backward_wte", dout.dtype, BT, min(1024, 32 * -(-C // 32)), keys, dout, dwte, i64(BT), i32(C))
    launch_elementwise("embedding_backward_wpe", dout.dtype, T * C, dout, dwpe, i32(B), i32(T), i32(C))
    return None
