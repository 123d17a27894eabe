"""How much memory a training run needs, how much the machine has, and a refusal when it
does not fit, before the run allocates it.

A run holds, in bytes of the training dtype (s bytes per number, P = buffer_size(config)):

    parameters    P s            one buffer (shared by the CPU worker processes)
    gradients     P s n          one buffer per worker (n workers; 1 on a GPU)
    AdamW         2 P s          the moments m and v
    activations   sum over the workers' shards of the peak of one forward + backward

Activations, for a shard of b rows of T tokens (N = b T), width C, H heads, L blocks and the
padded vocabulary Vp. The numbers are what the fast kernels (minigrad/cpu/, minigrad/cuda/)
keep in their caches from forward until backward, counted array by array:

    each block   16 N C + 2 N + A      ln_1: xhat (N, C), rstd (N, 1)
                                       attention: its input, q, k, v, y (N, C) each; probs A
                                       ln_2: xhat, rstd, and its output (c_fc's input)
                                       MLP: GELU's input (CUDA) or derivative (CPU) (N, 4C)
                                       and its output (c_proj's input) (N, 4C)
    A            CUDA: b H T^2, the whole square of attention probabilities;
                 CPU: b H sum_k (e_k - s_k) e_k over the query blocks [s_k, e_k) of 64 rows,
                 only the causal part (about b H T (T + 64) / 2)
    ln_f         2 N C + N             xhat, rstd and its output (the tied head's input)
    head         N Vp                  the logits, then the softmax and its gradient in place
                 + 17 N bytes (CPU: two int64 indices and a flag per token) or 3 N (CUDA)
    dropout      CPU: b H T^2 (the mask) + A (dropped probs) + 2 N C (two masks) per block,
    (p > 0)           + N C for the embeddings; CUDA: b H T^2 per block (dropped probs)

Backward frees nothing of that until it ends, and needs temporaries on top, W: the most of
them alive at one time (x is the residual stream's gradient, da and dm its branches'):

    head         Vp C + N C            CPU: the tied head's weight gradient (Vp, C) before it
                                       is added into wte's (CUDA accumulates in place)
    MLP          10 N C                dx, da, and c_proj's and GELU's input gradients (N, 4C)
    attention    CPU: 6 N C + G        dx, dm, dy, dq dk dv, and G: the score gradients of
                                       two query blocks, b H ((e_k - s_k) e_k + (e_j - s_j) e_j)
                                       for the largest neighbours k, j = k + 1 (the loop makes
                                       block k's before it lets block j's go)
                 CUDA: 11 N C + b H T^2  dx, dm, dy twice, dq, dk, dv, dqkv (3), dx, and the
                                       score gradients

With dropout on the CPU the forward has a peak of its own: the last block's (b, H, T, T) mask
is hashed from a uint64 index through five uint32 arrays (28 bytes per element) while the
caches of the blocks before it are held. The activations are the larger of the two peaks.
Micro-batches (--grad-accum) run one after another, so they cost no memory. Not counted: the
interpreter, the corpus (memory-mapped) and the batches of token ids.
"""
import os
import resource
from dataclasses import dataclass

import numpy as np

from minigrad.cpu.attention import QUERY_BLOCK, query_blocks

from ..errors import UserError
from ..model import buffer_size

HASH_BYTES = 28           # bytes per element the dropout mask's hash holds at its peak
GiB, MiB = 2**30, 2**20


class NotEnoughMemoryError(UserError):
    """The run needs more memory than the machine or GPU has available."""


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a training run needs, by part (see the module's docstring)."""
    params: int
    grads: int            # all workers' gradient buffers
    adam: int
    activations: int      # all workers' shards together
    workers: int          # worker processes, each with a gradient buffer (1: the batch in one)
    batch_size: int
    block_size: int
    device: str           # 'cpu' or 'cuda'

    @property
    def total(self):
        return self.params + self.grads + self.adam + self.activations

    @property
    def model(self):
        """What the run needs whatever the batch: parameters, one gradient buffer, AdamW."""
        return self.params + self.grads // self.workers + self.adam


def estimate(config, batch_size, n_workers=1, dtype_itemsize=4, device="cpu", optimizer_shards=1):
    """MemoryNeed of training `config` on batches of batch_size x block_size tokens, split by
    rows over n_workers processes (CPU), in a dtype of dtype_itemsize bytes. Under mpirun,
    batch_size is this rank's rows; optimizer_shards: the ranks sharing AdamW's state (ZeRO 1).

    The batch is split into min(n_workers, batch_size) shards of at most ceil(B / shards)
    rows, and with more than one shard every worker gets its gradient buffer (DataParallel
    may run small batches as one shard: then the run needs less)."""
    shards = min(n_workers, batch_size) if device == "cpu" else 1
    workers = n_workers if shards > 1 else 1
    rows = -(-batch_size // shards)
    P = buffer_size(config) * dtype_itemsize
    return MemoryNeed(params=P, grads=P * workers, adam=2 * -(-P // optimizer_shards),
                      activations=shards * shard_activations(config, rows, dtype_itemsize, device),
                      workers=workers, batch_size=batch_size, block_size=config.block_size, device=device)


def attention_probs(b, H, T, device):
    """Elements of the attention probabilities one block keeps: A in the module's docstring."""
    if device == "cuda":
        return b * H * T * T
    return b * H * sum((e - s) * e for s, e in query_blocks(T, QUERY_BLOCK))


def score_gradients(b, H, T):
    """Elements of the CPU attention backward's score gradients at their most: G above."""
    sizes = [(e - s) * e for s, e in query_blocks(T, QUERY_BLOCK)]
    return b * H * max(map(sum, zip(sizes, sizes[1:] + [0])))


def shard_activations(config, b, s, device):
    """Peak bytes of one forward + backward over b rows: the module docstring's formula."""
    C, H, L, T, Vp = config.n_embd, config.n_head, config.n_layer, config.block_size, config.padded_vocab_size
    N, A, square = b * T, attention_probs(b, H, T, device), b * H * T * T
    cpu, dropout = device == "cpu", config.dropout > 0
    block = 16 * N * C + 2 * N + A
    if dropout:
        block += square + A + 2 * N * C if cpu else square
    embeddings = N * C if cpu and dropout else 0
    outside = embeddings + 2 * N * C + N + N * Vp
    index_bytes = 17 * N if cpu else 3 * N * s            # the loss's per-token arrays
    if cpu:
        workspace = max(Vp * C + N * C, 10 * N * C, 6 * N * C + score_gradients(b, H, T))
    else:
        workspace = 11 * N * C + square                    # the attention's: always the most
    backward = (L * block + outside + workspace) * s + index_bytes
    forward = (((L - 1) * block + embeddings) * s + HASH_BYTES * square) if cpu and dropout else 0
    return max(backward, forward)


# ---------------------------------------------------------------------------- what there is


def available(backend, meminfo="/proc/meminfo", cgroup_root="/sys/fs/cgroup",
              own_cgroup="/proc/self/cgroup", status="/proc/self/status"):
    """Bytes the run may still allocate on the backend's device, or None when unknown.

    GPU: the device's free memory plus what CuPy's pool holds free. Host: the least of
    MemAvailable, the headroom of every memory cgroup limit over this process (a container's
    limit is what the out-of-memory killer enforces) and the headroom under RLIMIT_AS."""
    if backend.name == "cuda":
        import cupy
        free, _ = cupy.cuda.runtime.memGetInfo()
        return free + cupy.get_default_memory_pool().free_bytes()
    limits = [memory_available(meminfo), cgroup_headroom(cgroup_root, own_cgroup), address_space_headroom(status)]
    limits = [n for n in limits if n is not None]
    return min(limits) if limits else None


def _read_fields(path):
    """{key: int} of a file of 'key value [unit]' or 'key: value [unit]' lines (unit kB
    multiplied out); {} when it cannot be read. Lines that are not numbers are skipped."""
    fields = {}
    try:
        with open(path) as f:
            lines = f.read(1 << 20).splitlines()
    except (OSError, UnicodeDecodeError):
        return fields
    for line in lines:
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0]] = int(parts[1]) * (1024 if parts[2:] == ["kB"] else 1)
    return fields


def _read_number(path):
    """The integer a one-number file holds ('max' and unreadable files: None)."""
    try:
        with open(path) as f:
            text = f.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def memory_available(meminfo="/proc/meminfo"):
    """MemAvailable of /proc/meminfo (free memory plus what the kernel can reclaim), else the
    free pages os.sysconf reports, else None."""
    found = _read_fields(meminfo).get("MemAvailable")
    if found is not None:
        return found
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# (limit file, usage file, the memory.stat keys of reclaimable page cache), under a cgroup's
# directory: cgroup v2, then v1 (whose controller has a hierarchy of its own, memory/).
CGROUP_FILES = {"v2": ("memory.max", "memory.current", ("active_file", "inactive_file")),
                "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_active_file", "total_inactive_file"))}


def cgroup_dirs(cgroup_root="/sys/fs/cgroup", own_cgroup="/proc/self/cgroup"):
    """[(directory, version)] of this process's memory cgroups and all their ancestors, the
    ones that exist under cgroup_root. /proc/self/cgroup has 'id:controllers:path' lines:
    '0::/path' for v2, 'n:memory:/path' for v1. A container that shows its own cgroup as the
    root has its path hidden: walking up from it ends at the root, which is then its own."""
    try:
        with open(own_cgroup) as f:
            lines = f.read(1 << 16).splitlines()
    except (OSError, UnicodeDecodeError):
        lines = ["0::/", "1:memory:/"]
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            base, version = cgroup_root, "v2"
        elif "memory" in controllers.split(","):
            base, version = os.path.join(cgroup_root, "memory"), "v1"
        else:
            continue
        names = [p for p in path.split("/") if p and p != ".."]
        for depth in range(len(names), -1, -1):
            directory = os.path.join(base, *names[:depth])
            if os.path.isdir(directory) and (directory, version) not in found:
                found.append((directory, version))
    return found


def cgroup_headroom(cgroup_root="/sys/fs/cgroup", own_cgroup="/proc/self/cgroup"):
    """The least (limit - usage + reclaimable page cache) over the memory cgroups that hold
    this process; None when none has a limit."""
    headrooms = []
    for directory, version in cgroup_dirs(cgroup_root, own_cgroup):
        limit_file, usage_file, cache_keys = CGROUP_FILES[version]
        limit = _read_number(os.path.join(directory, limit_file))
        usage = _read_number(os.path.join(directory, usage_file))
        if limit is None or usage is None:
            continue
        stat = _read_fields(os.path.join(directory, "memory.stat"))
        cache = sum(stat.get(key, 0) for key in cache_keys)
        headrooms.append(max(limit - max(usage - cache, 0), 0))
    return min(headrooms) if headrooms else None


def address_space_headroom(status="/proc/self/status"):
    """RLIMIT_AS (the soft limit) minus this process's address space (VmSize), or None
    without a limit."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY or limit < 0:
        return None
    return max(limit - _read_fields(status).get("VmSize", 0), 0)


# ---------------------------------------------------------------------------- the check


def check_fits(need, available, sharing=1):
    """NotEnoughMemoryError, one line with both figures and what to lower, when the run
    needs more than is available (to each of `sharing` ranks on one machine, its share).
    available None (unknown): nothing is checked."""
    if available is not None:
        available //= sharing                    # MPI ranks on one machine share it
    if available is None or need.total <= available:
        return
    unit, name = (GiB, "GiB") if max(need.total, available) >= GiB else (MiB, "MiB")
    digits = 1 if unit == GiB else 0
    size = lambda n: f"{n / unit:.{digits}f}"                               # noqa: E731
    workers = f" for {need.workers} workers" if need.workers > 1 else ""
    parts = (f"parameters {size(need.params)}, gradients {size(need.grads)}{workers}, AdamW {size(need.adam)}, "
             f"activations {size(need.activations)} for {need.batch_size} x {need.block_size} tokens")
    where = "the GPU has" if need.device == "cuda" else "this machine has"
    if sharing > 1:                              # MPI ranks on one machine: each gets its share
        where = f"each of the {sharing} ranks on this machine has"
    if need.model > available:
        advice = "the model alone does not fit: choose a smaller --preset or --n-layer / --n-embd"
    else:
        advice = ("lower --batch-size (--grad-accum keeps the tokens per step), --block-size"
                  + (" or --workers" if need.workers > 1 else ""))
    raise NotEnoughMemoryError(f"the run needs about {size(need.total)} {name} ({parts}) but {where} "
                               f"{size(available)} {name} available; {advice}")


def check_training_memory(config, backend, batch_size, n_workers, optimizer_shards=1, ranks_here=1):
    """check_fits for training a model of `config` on `backend`, before anything of it is
    allocated, on batches of batch_size rows over n_workers CPU worker processes (and AdamW's
    state split over optimizer_shards ranks). ranks_here: the MPI ranks on this machine, which
    share its memory (on a GPU each rank has its own)."""
    need = estimate(config, batch_size, n_workers, np.dtype(backend.dtype).itemsize, backend.name, optimizer_shards)
    check_fits(need, available(backend), ranks_here if backend.name == "cpu" else 1)
