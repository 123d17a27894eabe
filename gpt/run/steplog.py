"""The loss curve as a run makes it: a record per step, read back from the device in windows.

A step's loss and gradient norm stay where they were computed (0-d device arrays on a GPU),
so the step waits for nothing; every --log-interval (and before an evaluation or a save) the
window's values come back in one copy, the window's wall time is spread over its steps, and a
non-finite loss or norm stops the run with one line (Diverged).
"""
import math
import time

from ..errors import UserError


class Diverged(UserError):
    """The loss or the gradient norm became non-finite (the same on every rank: they are summed)."""


class StepLog:
    """history: the curve's records (loss_curve.json's), continued from a checkpoint's;
    elapsed: training seconds so far, summed over resumed sessions; left(): what a stop leaves
    behind, in words (gpt.run.files.RunFiles.left)."""

    def __init__(self, backend, history, elapsed, tokens_per_step, left, clipping):
        self.backend, self.history, self.elapsed = backend, history, elapsed
        self.tokens_per_step, self.left, self.clipping = tokens_per_step, left, clipping
        self.pending = []                        # this window's records, loss and norm not read back yet
        self.window_start = time.perf_counter()

    def add(self, step, loss, lr, norm):
        """The record of a finished step -> it (its loss and norm still on the device)."""
        record = {"step": step, "train_loss": loss, "val_loss": None, "lr": lr, "grad_norm": norm,
                  "tokens": step * self.tokens_per_step, "elapsed": None}
        self.history.append(record)
        self.pending.append(record)
        return record

    def read_back(self):
        """The pending records' losses and norms as floats (one device sync), the window's time
        spread over them -> the window's tokens/s; Diverged if any is not finite."""
        window = time.perf_counter() - self.window_start         # includes waiting for the device
        records, self.pending = self.pending, []
        if not records:
            return 0.0
        xp = self.backend.xp
        host = self.backend.to_host(xp.stack([xp.asarray(v) for r in records
                                              for v in (r["train_loss"], r["grad_norm"])]))
        for i, r in enumerate(records):                           # host: (2 n,) loss, norm, loss, ...
            r["train_loss"], r["grad_norm"] = float(host[2 * i]), float(host[2 * i + 1])
            r["elapsed"] = round(self.elapsed + window * (i + 1) / len(records), 3)
        self.elapsed += window
        for r in records:
            for key, what in (("grad_norm", "gradient norm"), ("train_loss", "loss")):
                if not math.isfinite(r[key]):
                    advice = "a lower --lr" + ("" if self.clipping else " or --grad-clip 1.0")
                    raise Diverged(f"the {what} became {r[key]} at step {r['step']}; stopping ({self.left()}); "
                                   f"try {advice}")
        return len(records) * self.tokens_per_step / window

    def restart_window(self):
        """Time from now: what came since the last read-back (an evaluation, a save) is not training."""
        if not self.pending:
            self.window_start = time.perf_counter()
