"""GPT-2 on minigrad: the model first, then what trains and serves it.

    config.py     GPTConfig and the presets
    model.py      parameter layout, init, forward, backward: calls the ops it is handed
    generate.py   sampling and the KV cache
    errors.py     the errors a user sees as one line (UserError and its kinds)
    export.py     python -m gpt.export: a run as a Hugging Face directory
    data/         corpus -> tokens -> batches
    parallel/     worker processes, MPI ranks, ZeRO
    files/        checkpoints and other formats: atomic writes, untrusted reads
    run/          the command line, the run directory, memory checks, plots
"""
