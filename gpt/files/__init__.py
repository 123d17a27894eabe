"""Files written atomically and read as untrusted.

    atomic.py        atomic writes; a write error as one line
    untrusted.py     strict JSON, bounded counts, short quotes of what a file held
    checkpoint.py    ckpt.npz: parameters, AdamW's moments, the loss curve, checked metadata
    safetensors.py   the safetensors format, read within the file's bounds
    hf.py            the Hugging Face GPT-2 directory, out (export_hf) and in (load_hf_gpt2)
    loading.py       a model and its tokenizer from a checkpoint or a Hugging Face directory
"""
