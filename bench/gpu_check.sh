#!/usr/bin/env bash
# One call on a lent GPU: set up from the repo's own files, then every CUDA path in one table (bench/gpu_check.py).
# Logs go under $OUT (the device tool's folder that comes back; a temp folder elsewhere). Under 8 minutes on one
# H100: setup (torch's CUDA build from PyPI) 2-4 min, the steps at most 150-240 s each, most far less.
# Without CUDA every step says "no CUDA here" in one line and it exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
export OUT
if ! EXTRAS=realweights bash scripts/setup.sh > "$OUT/setup.log" 2>&1; then
  echo "gpu_check: setup failed: $(tail -n 1 "$OUT/setup.log")"
  exit 1
fi
.venv/bin/python bench/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log" | grep -v "^  " | tail -n 12
