#!/usr/bin/env bash
# The suite under load, as CI's shared machine sees it: two busy-loop processes keep both cores
# busy while the whole suite runs RUNS times in a row (default 3). Exits non-zero on the first
# failing run; the busy loops are stopped however the script ends.
#   bash scripts/stress_tests.sh [RUNS] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
shift || true
PY=${PYTHON:-.venv/bin/python}
busy=()
cleanup() { for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for _ in 1 2; do
  "$PY" -c "while True: pass" &
  busy+=("$!")
done
for run in $(seq 1 "$RUNS"); do
  start=$(date +%s)
  echo "== stress run $run of $RUNS (two busy loops on $(nproc) cores)"
  "$PY" -m pytest -q -p no:cacheprovider "$@"
  echo "== stress run $run passed in $(( $(date +%s) - start )) s"
done
echo "stress: $RUNS of $RUNS runs passed under load"
