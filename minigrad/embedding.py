"""Token + position embedding: the first layer of GPT-2.

forward:  out[b, t, :] = wte[idx[b, t], :] + wpe[t, :]
backward: dwpe[t]      += sum_b dout[b, t]
          dwte[v]      += sum over all (b, t) with idx[b, t] == v of dout[b, t]
The token-embedding gradient is a scatter-add: a token id that appears several times in the
batch receives the sum of all its rows (`add.at`, unlike `dwte[idx] += ...`, which would keep
only one of the repeated writes).
"""
from .backend import get_array_module


def embedding_forward(idx, wte, wpe):
    """idx (B, T) int token ids, wte (V, C), wpe (block_size, C) -> out (B, T, C)."""
    T = idx.shape[1]
    out = wte[idx]      # (B, T, C) gathered token rows (a new array)
    out += wpe[:T]      # (T, C) broadcast over the batch
    return out, idx


def embedding_backward(dout, cache, dwte, dwpe):
    """dout (B, T, C); accumulates into dwte (V, C) and dwpe (block_size, C).

    Returns None: token ids are integers and have no gradient.
    """
    xp = get_array_module(dout)
    idx = cache                                   # (B, T)
    B, T, C = dout.shape
    dwpe[:T] += dout.sum(axis=0)                  # (T, C)
    xp.add.at(dwte, idx.reshape(-1), dout.reshape(B * T, C))
    return None
