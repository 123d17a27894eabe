"""Shared by the tests that run train.py as a user would: the repository, a fast run's flags,
running the command, and what a clean error looks like."""
import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "data", "tiny_shakespeare.txt")
# A very small, fast run: 2 layers of width 32, 32-token windows.
FAST = ["--preset", "tiny", "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--batch-size", "4",
        "--sample-tokens", "0", "--eval-steps", "2", "--log-interval", "1", "--warmup-steps", "2"]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_clean_error(result, *words):
    """Exit 2, no traceback, and one line on stderr starting with 'error:' (besides the
    progress bar, when training had started)."""
    assert result.returncode == 2, result.stderr
    lines = [line.strip() for line in result.stderr.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line and not line.startswith("training:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()
