"""Shared by the tests of models as files: a small CPU model."""
from gpt.config import GPTConfig
from gpt.model import GPT
from minigrad import Backend

CPU = Backend("cpu", "float32")


def small_model(vocab_size=100, seed=0, block_size=16):
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=block_size, vocab_size=vocab_size), CPU, seed=seed)
