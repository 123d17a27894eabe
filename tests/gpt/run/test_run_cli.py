"""gpt.run.cli: what train.py and sample.py share at the command line, tested directly."""
import argparse
import io
import sys

import pytest

from gpt.errors import UsageError, UserError
from gpt.run.cli import LineParser, keep_writing_if_closed, number, run_main


def test_a_bad_flag_is_a_usage_error_naming_the_help():
    p = LineParser(prog="tool.py")
    p.add_argument("--n", type=number(int, lambda v: v > 0, "> 0"))
    with pytest.raises(UsageError, match=r"--n: must be > 0, got 0 \(see python tool.py --help\)"):
        p.parse_args(["--n", "0"])
    with pytest.raises(UsageError, match="unrecognized arguments: --what"):
        p.parse_args(["--what"])


@pytest.mark.parametrize("text, why", [("x", "expects a number"), ("nan", "must be"), ("inf", "must be"),
                                       ("-1", "must be >= 0")])
def test_number_refuses_what_is_not_a_bounded_finite_number(text, why):
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        number(float, lambda v: v >= 0, ">= 0")(text)
    assert number(float, lambda v: v >= 0, ">= 0")("2.5") == 2.5


def _raising(error):
    def body():
        raise error
    return body


@pytest.mark.parametrize("error, status, line", [
    (UserError("the data is missing"), 2, "error: the data is missing"),
    (MemoryError(), 2, "error: out of memory: an allocation failed"),
    (KeyboardInterrupt(), 130, "stopped by the user"),
])
def test_run_main_turns_errors_into_one_line_and_a_status(capsys, error, status, line):
    assert run_main(_raising(error), interrupted="stopped by the user", out_of_memory="use less") == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(line)
    assert run_main(lambda: 7) == 7


def test_a_closed_stream_turns_into_dev_null(monkeypatch):
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            raise ValueError("no file descriptor")
    monkeypatch.setattr(sys, "stdout", Closed())
    with keep_writing_if_closed():
        print("written into a closed pipe")                 # raises nothing
        print("and again")
    assert isinstance(sys.stdout, Closed)                    # restored after the block
