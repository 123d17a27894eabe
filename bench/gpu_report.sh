#!/usr/bin/env bash
# One-shot report of where the CUDA path stands, on one NVIDIA GPU with the project's
# dependencies installed (no network needed). Everything goes into the directory given:
#
#     bench/gpu_report.sh /tmp/gpu_report        # about 8 minutes at most
#
# 1. the kernels' self-test against their reference pairs (python -m minigrad.cuda.selftest)
# 2. the whole test suite with real CuPy (the CUDA tests then also run on the GPU itself)
# 3. resume on the GPU: 20 steps straight vs 10 + --resume 10, parameters compared bitwise
# 4. bench/train_step.py --device cuda vs PyTorch eager (TF32 and bf16 autocast): GPT-2 124M
#    at T=1024, B=16 and the largest B that fits, and the char model 6/6/384 at T=256, B=64
# 5. a 60-second default training run on the GPU, showing the loss fall
set -u
out=${1:?usage: bench/gpu_report.sh OUTPUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
export XDG_CACHE_HOME="$out/cache"          # a fresh self-test, not a cached verdict
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$out/summary.txt"; }

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
  python -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
  git log -1 --format='commit %h %cd' ; } 2>&1 | tee -a "$out/summary.txt"

log "1. self-test"
timeout 120 python -m minigrad.cuda.selftest 2>&1 | tee "$out/selftest.txt" | tail -3 | tee -a "$out/summary.txt"

log "2. test suite (real CuPy)"
timeout 240 python -m pytest -q -rs > "$out/pytest.txt" 2>&1; tail -5 "$out/pytest.txt" | tee -a "$out/summary.txt"

log "3. resume bit-identical on the GPU"
run=(python train.py --device cuda --sample-tokens 0 --eval-interval 10 --log-interval 5 --max-steps 20)
timeout 120 "${run[@]}" --out-dir "$out/straight" > "$out/resume.txt" 2>&1
timeout 120 "${run[@]}" --out-dir "$out/resumed" --max-steps 10 >> "$out/resume.txt" 2>&1
timeout 120 "${run[@]}" --out-dir "$out/resumed" --resume >> "$out/resume.txt" 2>&1
python - "$out" <<'PY' 2>&1 | tee -a "$out/summary.txt"
import sys, numpy as np
a, b = (np.load(f"{sys.argv[1]}/{d}/ckpt.npz") for d in ("straight", "resumed"))
same = all(np.array_equal(a[k], b[k]) for k in ("params", "adam_m", "adam_v"))
print("resume bit-identical:", same)
PY

log "4. benchmarks"
bench() { timeout 150 python bench/train_step.py --device cuda --runs 10 --vs-torch "$@" 2>&1; }
bench --preset gpt2 --block-size 1024 --batch-size 16 | tee "$out/bench_gpt2_b16.txt" | tail -6 | tee -a "$out/summary.txt"
for B in 64 48 32; do                        # the largest batch that fits, largest first
  if bench --preset gpt2 --block-size 1024 --batch-size $B > "$out/bench_gpt2_b$B.txt" && grep -q ratio "$out/bench_gpt2_b$B.txt"; then
    tail -6 "$out/bench_gpt2_b$B.txt" | tee -a "$out/summary.txt"; break
  fi
  echo "B=$B does not fit (or timed out)" | tee -a "$out/summary.txt"
done
bench --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 --vocab-size 65 --batch-size 64 \
  | tee "$out/bench_char.txt" | tail -6 | tee -a "$out/summary.txt"

log "5. 60-second default run"
timeout 60 python train.py --device cuda --out-dir "$out/default" > "$out/train_default.txt" 2>&1
grep -E "^step|^done|^device" "$out/train_default.txt" | tee -a "$out/summary.txt"
log "done: $out/summary.txt"
