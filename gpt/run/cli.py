"""What train.py and sample.py share: bad input as one line and exit status 2, number flags."""
import argparse
import math
import os
import sys
from contextlib import contextmanager

from minigrad.backend import out_of_memory_message

from ..errors import UsageError, UserError

__all__ = ["LineParser", "UsageError", "UserError", "keep_writing_if_closed", "number", "run_main"]


class LineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UsageError (one line) instead of usage + exit."""

    def error(self, message):
        raise UsageError(f"{message} (see python {self.prog} --help)")


def number(kind, check, bound):
    """An argparse type: parse `kind` and require check(value); argparse names the flag."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
        if not (math.isfinite(value) and check(value)):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    return parse


def run_main(body, interrupted="interrupted", out_of_memory="use a smaller model"):
    """body() -> exit status. A UserError (gpt/errors.py) prints one `error: ...` line and
    gives status 2, and so does running out of host or GPU memory (with the advice
    `out_of_memory`); Ctrl-C prints `interrupted` and gives 130; a closed stdout ends quietly."""
    try:
        return body()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"error: {out_of_memory_message(e)}; {out_of_memory}", file=sys.stderr)
        return 2
    except BrokenPipeError:                      # stdout closed early (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit's flush
        return 128 + 13                          # what SIGPIPE's default would have given
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


class _SurvivingStream:
    """A text stream that turns into /dev/null once its reader is gone (a closed pipe, a hung-up
    terminal, a full disk under a redirect): writing to it never raises."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError:
            self._drop()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except OSError:
            self._drop()

    def _drop(self):
        devnull = open(os.devnull, "w")
        try:                         # the interpreter's flush at exit then goes nowhere, quietly
            os.dup2(devnull.fileno(), self._stream.fileno())
        except (OSError, ValueError):
            pass
        self._stream = devnull

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def keep_writing_if_closed():
    """Within it, sys.stdout and sys.stderr survive their readers (train.py: a run piped into
    `head`, or whose terminal closed, goes on training and saving)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _SurvivingStream(sys.stdout), _SurvivingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
