"""Stop signals: finish the step, save, exit with 128 + the signal's number.

A scheduler sends SIGTERM, a closed terminal SIGHUP, Ctrl-C SIGINT. The first one is noted
and the loop stops after its step (gpt's Trainer saves first); a second one stops at once
(StoppedAtOnce), for a user who does not want to wait.
"""
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StoppedAtOnce(Exception):
    """A second stop signal arrived: leave now, without finishing the step."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class StopSignals:
    """with StopSignals() as stop: ... stop.signum is the first stop signal received (None
    before any); the handlers before the block come back after it."""

    def __init__(self):
        self.signum = None

    def _received(self, signum, frame):
        if self.signum is not None:
            raise StoppedAtOnce(signum)
        self.signum = signum

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._received) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
