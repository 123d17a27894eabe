"""Text in, batches out.

    corpus.py        the documents of --data and the byte-level token stream (memory-mapped)
    token_cache.py   a BPE corpus tokenized once on all cores, cached and checked on every use
    tokenizers.py    the tokenizer a run names (byte, GPT-2 BPE) and the local-vocabulary view
    batches.py       the train/validation split and the (seed, step, micro)-determined batches
"""
