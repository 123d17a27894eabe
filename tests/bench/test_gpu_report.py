"""bench/gpu_report.sh, the one-shot GPU report, and the largest-batch search of
bench/train_step.py: run end to end under the CuPy stand-in (a fake GPU), within the device
tool's limits (at most 8 files, 2 folders deep, come back), and steps that overrun their
budget or fail are stopped without ending the report."""
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_report  # noqa: E402
import train_step  # noqa: E402


def test_the_report_runs_every_step_under_the_standin(tmp_path):
    """--smoke: every step on tiny models, a plain checkout (the repository on PYTHONPATH by the
    report itself, nothing installed needed), two files in OUT, the work directory removed."""
    out = tmp_path / "report"
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT / "tests" / "support" / "cupy_standin"))
    result = subprocess.run([str(ROOT / "bench" / "gpu_report.sh"), str(out), "--smoke"], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p.relative_to(out) for p in out.rglob("*")]
    assert sorted(map(str, files)) == ["details.tar.gz", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    for number, (name, _, _) in enumerate(gpu_report.STEPS, 1):
        assert f"== {number}. {name} (budget" in summary and re.search(rf"-- {number}\. .*: [\d.]+ s", summary), name
    assert re.search(r"^16 of 16 passed$", summary, re.M), summary          # the self-test, TF32 check included
    assert re.search(r"^1 passed$", summary, re.M)                            # a [gpu] test, on the fake GPU
    assert re.search(r"^packages: numpy yes, cupy yes", summary, re.M)
    assert "resume bit-identical (params, adam_m, adam_v after 20 steps): True" in summary
    assert "done: 30 steps" in summary and "step failed" not in summary
    assert summary.count("| minigrad") == 3 and "largest batch of minigrad alone: 32" in summary
    with tarfile.open(out / "details.tar.gz") as tar:
        logs = [m for m in tar.getmembers() if m.isfile()]
        assert len(logs) == len(gpu_report.STEPS) and all(m.name.count("/") == 1 and m.size for m in logs)
    work = re.search(r"checkpoint (\S+)/default/ckpt.npz", summary).group(1)
    assert not os.path.exists(work)


def test_a_step_past_its_budget_is_stopped_with_its_children(tmp_path):
    """Report.run: past its timeout the whole process group gets SIGTERM (then SIGKILL), the
    status says 'timeout' and the output so far is kept."""
    r = gpu_report.Report(str(tmp_path / "out"), budget=60, smoke=True)
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo started; sleep 60"
    started = time.monotonic()
    status, output = r.run("slow.txt", ["sh", "-c", script], timeout=3)
    assert status == "timeout" and "started" in output and time.monotonic() - started < 30
    assert _ends(int(pid_file.read_text()))
    r.close()


def test_what_a_finished_command_leaves_running_is_stopped(tmp_path):
    r = gpu_report.Report(str(tmp_path / "out"), budget=60, smoke=True)
    pid_file = tmp_path / "child.pid"
    status, _ = r.run("quick.txt", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}"], timeout=30)
    assert status == 0 and _ends(int(pid_file.read_text()))
    r.close()


def _ends(pid, within=10):
    """Whether process `pid` is gone (or a zombie) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return not _alive(pid)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failing_step_does_not_end_the_report_and_a_spent_budget_skips(tmp_path, monkeypatch, capsys):
    def broken(r, timeout):
        raise RuntimeError("no GPU today")

    def fine(r, timeout):
        r.write("fine ran")

    def slow(r, timeout):
        time.sleep(3.5)                                  # leaves under 5 s of the 8: too little for a step

    monkeypatch.setattr(gpu_report, "STEPS", [("broken", 5, broken), ("fine", 5, fine), ("slow", 5, slow),
                                              ("late", 5, fine), ("unchosen", 5, fine)])
    out = tmp_path / "out"
    assert gpu_report.main([str(out), "--steps", "1-4", "--budget", str(8 + gpu_report.GRACE)]) == 0
    summary = (out / "summary.txt").read_text()
    assert "step failed: RuntimeError: no GPU today" in summary and "fine ran" in summary
    assert "== 4. late: skipped, the report's budget is spent" in summary and "unchosen" not in summary
    assert sorted(p.name for p in out.iterdir()) == ["details.tar.gz", "summary.txt"]


@pytest.mark.parametrize("limit, cap, expected", [(88, 4096, 88), (100, 4096, 96), (5000, 4096, 4096),
                                                  (88, 32, 32), (7, 4096, 7), (1, 4096, 1), (0, 4096, 0)])
def test_the_largest_batch_search(limit, cap, expected):
    """Doubling from 16, then bisecting to within an eighth, never past the cap, and each size
    tried at most once."""
    tried = []

    def fits(b):
        tried.append(b)
        return b <= limit
    best = train_step.largest_batch(fits, 16, cap)
    assert best == expected and len(tried) == len(set(tried)) <= 13
    assert best <= limit and (best == cap or limit - best <= max(1, best // 8))


def test_a_batch_that_does_not_fit_is_reported_and_its_memory_freed(standin):
    """try_batch: out of device memory is {'fits': False}, and what the failed step held is
    given back; a batch that fits then runs."""
    from gpt.config import GPTConfig
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=512)
    fits = train_step.try_batch("minigrad", cfg, 2, "fast", "cuda", runs=1)
    assert fits["fits"] and len(fits["times"]) == 1
    base = standin.live_bytes()
    standin.set_memory_limit(base + 4 * 2**20)
    try:
        assert train_step.try_batch("minigrad", cfg, 256, "fast", "cuda", runs=1) == {"fits": False}
        assert standin.live_bytes() <= base
        assert train_step.try_batch("minigrad", cfg, 2, "fast", "cuda", runs=1)["fits"]
    finally:
        standin.set_memory_limit(None)


@pytest.mark.parametrize("steps", ["x", "9", "2-x", "0"])
def test_a_bad_steps_list_is_argparse_s_one_line(tmp_path, capsys, steps):
    with pytest.raises(SystemExit) as stop:
        gpu_report.main([str(tmp_path / "out"), "--steps", steps])
    assert stop.value.code == 2 and "argument --steps:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                  # refused before anything is written
