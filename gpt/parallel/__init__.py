"""Data parallelism: one batch over many workers.

    workers.py   processes on one machine, sharing the parameters and gradients (any device)
    ranks.py     MPI ranks (mpirun, Slurm): the world, its collectives, errors every rank shares
    sync.py      the gradient sum between ranks: replicated, or ZeRO stage 1 (AdamW's state sharded)
"""
