#!/usr/bin/env bash
# The one-shot GPU report (bench/gpu_report.py): bench/gpu_report.sh OUT [--steps 6-8] [--smoke]
# Runs on a plain checkout with the preinstalled packages; PYTHON picks the interpreter.
exec "${PYTHON:-python3}" "$(dirname "$0")/gpu_report.py" "$@"
