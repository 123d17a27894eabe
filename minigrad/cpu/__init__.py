"""Fast NumPy implementations of some of minigrad's pairs, with the reference signatures.

Each module here computes exactly its reference's math (minigrad/<layer>.py) with fewer
passes over memory: causal block skipping in attention, GELU's derivative in forward in
cache-sized row blocks, einsum row sums in LayerNorm, cross-entropy in the logits' memory,
the tied head's gradient in its memory order, and AdamW in cache-sized chunks on threads.
tests/minigrad/test_kernels.py holds each to its reference.
"""
