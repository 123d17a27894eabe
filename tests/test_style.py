"""ruff's lint over the repository (pyproject.toml's [tool.ruff]: pyflakes, pycodestyle's errors,
lines of at most 120 characters, sorted imports): unused or undefined names, long lines and
unsorted imports fail the suite."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e \".[dev]\")")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
