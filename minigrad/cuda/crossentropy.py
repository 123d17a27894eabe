"""Softmax cross-entropy on CUDA: the reference's signature (minigrad/crossentropy.py).

Like llm.c's fused classifier, it never materializes the probabilities: the forward keeps
each row's max and sum of exp (two kernels: the rows, then the mean over the valid targets,
counted on the device, so nothing waits for the host), and the backward overwrites the
logits with their gradient in place, one kernel. The loss is a 0-d device array.
"""
import cupy

from .module import i32, i64, launch, real

THREADS = 1024


def cross_entropy_forward(logits, targets, ignore_index=-1, vocab_size=None):
    """logits (B, T, Vp), targets (B, T) int64 -> loss (0-d array). Reuses logits' memory
    in backward (the reference's contract)."""
    Vp = logits.shape[-1]
    V = Vp if vocab_size is None else vocab_size
    N = logits.size // Vp
    rowmax, rowsum, nll = (cupy.empty(N, dtype=logits.dtype) for _ in range(3))
    targets = targets.reshape(-1)
    if targets.dtype != cupy.int64:
        raise TypeError(f"targets must be int64, got {targets.dtype}")
    launch("crossentropy_forward", logits.dtype, N, THREADS, logits, targets, rowmax, rowsum, nll, i32(V), i32(Vp),
           i64(ignore_index))
    loss_and_count = cupy.empty(2, dtype=logits.dtype)
    launch("crossentropy_loss", logits.dtype, 1, THREADS, nll, targets, loss_and_count, i64(N), i64(ignore_index))
    cache = (logits, rowmax, rowsum, targets, loss_and_count, V, ignore_index)
    return loss_and_count[0], cache


def cross_entropy_backward(dloss, cache):
    """dloss: upstream scalar -> dlogits (B, T, Vp), written over the forward's logits."""
    logits, rowmax, rowsum, targets, loss_and_count, V, ignore_index = cache
    Vp = logits.shape[-1]
    launch("crossentropy_backward", logits.dtype, logits.size // Vp, THREADS, logits, rowmax, rowsum, targets,
           loss_and_count, real(logits.dtype, float(dloss)), i32(V), i32(Vp), i64(ignore_index))
    return logits
