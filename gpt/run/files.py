"""The files of a run in --out-dir: every name, and the writing of them.

    ckpt.npz          the checkpoint (gpt.files.checkpoint): parameters, AdamW's moments, the curve
    ckpt.prev.npz     the checkpoint before it, kept when the next save replaces it
    loss_curve.json   a copy of the curve, for people and plots
    loss_curve.svg    its plot (gpt.run.plot)
    config.json       the model's config and the run's options, written when a run starts
    cache/            the tokenized corpus of a BPE run (gpt.data.token_cache)
    .lock             who holds the directory (gpt.run.rundir)

Every file is written atomically (gpt.files.atomic); under mpirun only rank 0 writes.
"""
import os
import re

from ..files.atomic import write_json
from ..files.checkpoint import CHECKPOINT_NAME, PREVIOUS_NAME, save_checkpoint
from .plot import write_loss_plot

CURVE_NAME = "loss_curve.json"
PLOT_NAME = "loss_curve.svg"
CONFIG_NAME = "config.json"
CACHE_NAME = "cache"
LOCK_NAME = ".lock"
RUN_FILES = (CHECKPOINT_NAME, PREVIOUS_NAME, CURVE_NAME, PLOT_NAME, CONFIG_NAME)   # what --overwrite removes
# A temporary file of gpt.files.atomic.replacing: ".<name>.<8 random characters>.tmp" (tempfile.mkstemp),
# or "<name>.tmp", for a run file or a token cache file ("<corpus>-<8 hex>-<tokenizer>.bin|json").
RUN_FILE = "(" + "|".join(map(re.escape, RUN_FILES)) + r"|.+-[0-9a-f]{8}-.+\.(bin|json))"
TEMPORARY = re.compile(rf"(\.{RUN_FILE}\.[a-z0-9_]{{8}}|{RUN_FILE})\.tmp")


class RunFiles:
    """The files one run writes into out_dir. writes: whether this process writes them
    (rank 0); resumed_from: the checkpoint file the run was read from, if any."""

    def __init__(self, out_dir, writes=True, resumed_from=None):
        self.out_dir, self.writes = out_dir, writes
        self.checkpoint = os.path.join(out_dir, CHECKPOINT_NAME)
        # The next save keeps the checkpoint there as ckpt.prev.npz only when it is known good:
        # this run read it, or wrote it.
        self.keep_previous = resumed_from == self.checkpoint
        self.saved_step = None                   # the step of the last checkpoint this session wrote

    def save(self, step, params, adam_m, adam_v, meta, history):
        """The checkpoint (the curve inside), then its copies for people: the curve and the
        plot. A full disk or a read-only directory is one WriteError line."""
        if self.writes:
            save_checkpoint(self.checkpoint, params, adam_m, adam_v, meta, history, keep_previous=self.keep_previous)
        self.saved_step, self.keep_previous = step, True     # saved, whatever becomes of its copies
        if self.writes:
            write_json(os.path.join(self.out_dir, CURVE_NAME), history)
            write_loss_plot(os.path.join(self.out_dir, PLOT_NAME), history)

    def write_config(self, config, options):
        if self.writes:
            write_json(os.path.join(self.out_dir, CONFIG_NAME), {"model": config, "options": options})

    def left(self):
        """What a run that stops now leaves behind, for its last message."""
        if self.saved_step is not None:
            return f"the checkpoint of step {self.saved_step} is in {self.checkpoint}"
        if os.path.exists(self.checkpoint):
            return f"the previous checkpoint in {self.checkpoint} is unchanged"
        return "no checkpoint was written"


def remove_stale_temporaries(directory):
    """Remove the temporary files that runs killed mid-write left in `directory` -> how many.
    Only call it while holding the directory (gpt.run.rundir): another run's are not stale."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        path = os.path.join(directory, name)
        if TEMPORARY.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
                removed += 1
            except OSError:
                pass
    return removed
