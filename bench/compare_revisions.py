"""Training-step speed of two checkouts of this project, interleaved run for run.

    git worktree add ../before <commit>
    python bench/compare_revisions.py --old ../before --repeat 2 -- --preset medium --vocab-size 65 \
        --block-size 256 --batch-size 16 --runs 7

runs `bench/train_step.py` of the old tree and of this one (`--new`, default: this checkout)
in turns, old, new, old, new, ... (--repeat pairs), with the arguments after `--`, each in its
own process with its own tree first on the import path, and prints both trees' tokens/s and
peak memory per run and the median ratio new / old. Add --vs-torch after `--` to race PyTorch
in each run too (its tokens/s is then printed beside ours).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train_step(tree, args):
    """{framework: (tokens/s, peak MiB)} from one run of tree/bench/train_step.py."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, os.path.join(tree, "bench", "train_step.py"), *args],
                         capture_output=True, text=True, env=env, cwd=tree)
    if out.returncode != 0:
        sys.exit(f"error: {tree}/bench/train_step.py failed:\n{out.stderr}")
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("minigrad", "pytorch"):
            rows[cells[0]] = (float(cells[1].replace(",", "")), float(cells[8].replace(",", "")))
    peak = re.search(r"matmul peak (\d+) GFLOP/s", out.stdout)
    return rows, int(peak.group(1)) if peak else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the other checkout (e.g. a git worktree)")
    p.add_argument("--new", default=HERE, help="this checkout (default)")
    p.add_argument("--repeat", type=int, default=2, help="old/new pairs of runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- then bench/train_step.py's arguments")
    a = p.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    results = {"old": [], "new": []}
    for i in range(a.repeat):
        for name, tree in (("old", a.old), ("new", a.new)):
            rows, peak = run_train_step(tree, args)
            results[name].append(rows)
            torch = f", pytorch {rows['pytorch'][0]:,.0f} tokens/s" if "pytorch" in rows else ""
            print(f"run {i + 1} {name}: {rows['minigrad'][0]:,.0f} tokens/s, peak {rows['minigrad'][1]:,.0f} MiB"
                  f"{torch} (matmul peak {peak} GFLOP/s)", flush=True)
    old = statistics.median(r["minigrad"][0] for r in results["old"])
    new = statistics.median(r["minigrad"][0] for r in results["new"])
    ratios = [n["minigrad"][0] / o["minigrad"][0] for o, n in zip(results["old"], results["new"])]
    print(f"median tokens/s: old {old:,.0f}, new {new:,.0f}; new / old per pair: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
