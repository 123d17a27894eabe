"""tiktoken's "gpt2" encoding, built offline, as the reference the tests compare against.

``tiktoken.get_encoding("gpt2")`` would download ``vocab.bpe`` and ``encoder.json``. We
build the same ``tiktoken.Encoding`` from local copies instead, with tiktoken's own pieces:
its loader ``data_gym_to_mergeable_bpe_ranks`` (which also checks that the two files
agree), and the pattern, special token and vocabulary size of ``openai_public.gpt2``.
The files come from ``../shared/gpt2`` where present, else from the bundled
``bpe/assets/gpt2`` (the same content under Hugging Face's names).
"""

import os
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED_GPT2 = ROOT.parent / "shared" / "gpt2"
BUNDLED_GPT2 = ROOT / "bpe" / "assets" / "gpt2"


def tiktoken_or_skip():
    """Import tiktoken, or skip the calling test (or module) with a clear message."""
    import pytest

    return pytest.importorskip("tiktoken", reason="tiktoken is not installed (pip install -r requirements-dev.txt)")


@cache
def gpt2_encoding():
    """tiktoken's gpt2 Encoding, loaded from local files only."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    if (SHARED_GPT2 / "vocab.bpe").exists():
        vocab_bpe, encoder_json = SHARED_GPT2 / "vocab.bpe", SHARED_GPT2 / "encoder.json"
    else:
        vocab_bpe, encoder_json = BUNDLED_GPT2 / "merges.txt", BUNDLED_GPT2 / "vocab.json"
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""  # read the local paths directly, cache nothing
    try:
        ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(vocab_bpe), encoder_json_file=str(encoder_json))
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={openai_public.ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )
