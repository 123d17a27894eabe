"""Inverted dropout: zero each element with probability p and scale survivors by 1/(1-p),
so the expected activation is unchanged and evaluation needs no rescaling.

forward:  mask = keep / (1 - p),  out = x * mask      (identity at eval or p == 0)
backward: dx = dout * mask

The keep decisions are a counter-based hash, not draws from a random generator: element i
of a dropout site with seed s is kept when hash(s, i) >> 8 >= round(p * 2^24). Any device
can compute any element's decision on its own (a CUDA kernel recomputes the mask inside the
kernel that applies it, with no generator state), and every device draws the same masks.
hash is two rounds of Chris Wellons' `lowbias32` integer mixer, over the element's flat
index (its high 32 bits folded into the second round).

The index is the element's place in the whole batch: a tensor (b, ...) holding rows
first_row .. first_row + b - 1 of a batch hashes the indices first_row * (size of a row) + i.
So a batch split into shards (worker processes, MPI ranks) draws exactly the masks of the
whole batch in one piece, however it is split.
"""
import math

from .backend import get_array_module

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9       # 2^32 / golden ratio, spreads consecutive sites apart
KEEP_BITS = 24            # hash >> 8: 24 random bits per element, exact in float32


def mix32(x):
    """lowbias32 on a Python int or a uint32 array: a bijection of 32-bit words with low bias."""
    if isinstance(x, int):
        for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
            x = ((x ^ (x >> shift)) * mult) & M32
        return x ^ (x >> 16)
    u32 = x.dtype.type                                              # numpy.uint32
    x = x ^ (x >> u32(16))
    x *= u32(0x7FEB352D)
    x ^= x >> u32(15)
    x *= u32(0x846CA68B)
    x ^= x >> u32(16)
    return x


def site_seed(seed, site):
    """The seed of dropout site `site` (0, 1, ...) of a forward pass seeded with `seed`."""
    return mix32((seed ^ mix32((site * GOLDEN + 1) & M32)) & M32)


def keep_threshold(p):
    """Elements whose 24-bit hash is below this are dropped: round(p * 2^24)."""
    return int(round(p * (1 << KEEP_BITS)))


def element_hash(xp, seed, n, first=0):
    """(n,) uint32: hash(seed, i) for the flat indices i = first .. first + n - 1."""
    index = xp.arange(n, dtype=xp.uint64) + xp.uint64(first)
    low = index.astype(xp.uint32)                                   # (n,) i mod 2^32
    high = (index >> xp.uint64(32)).astype(xp.uint32)                # (n,) i div 2^32
    second = xp.uint32(mix32((seed + GOLDEN) & M32))
    return mix32(mix32(low ^ xp.uint32(seed)) ^ (high + second))


def dropout_mask(shape, p, seed, dtype, xp, first_row=0):
    """(shape) array of xp: 0 (probability p) and 1 / (1 - p), for dropout site `seed`; shape[0]
    counts batch rows, the first of them row first_row of the whole batch."""
    n = math.prod(shape)
    hashed = element_hash(xp, seed, n, first_row * (n // shape[0] if shape[0] else 0))   # (n,)
    kept = (hashed >> xp.uint32(32 - KEEP_BITS)) >= xp.uint32(keep_threshold(p))
    mask = kept.astype(dtype).reshape(shape)                            # (...) 0/1
    mask *= xp.dtype(dtype).type(1.0 / (1.0 - p))
    return mask


def dropout_forward(x, p, seed, train=True, first_row=0):
    """x (b, ...), p in [0, 1), seed this site's uint32 seed (site_seed), first_row the batch
    row of x[0] -> out (b, ...)."""
    if not train or p == 0.0:
        return x, None
    mask = dropout_mask(x.shape, p, seed, x.dtype, get_array_module(x), first_row)  # (b, ...)
    return x * mask, mask


def dropout_backward(dout, cache):
    """dout (...) -> dx (...)."""
    mask = cache
    return dout if mask is None else dout * mask
