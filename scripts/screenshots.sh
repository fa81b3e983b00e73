#!/usr/bin/env bash
# Headless screenshots of what a user sees in the MLflow UI after the README's demo:
#   the experiment's runs page (headed by its description, the changelog summary, and the sweep
#   tree), the sweep run (its note: the leaderboard), its best trial, the compare view of the sweep's
#   trials, the experiment's Models tab (each trained adapter a LoggedModel), and the champion's registered
#   version (an MLflow model). The trial's page shows its datasets, system metrics and model metrics.
# usage: scripts/screenshots.sh [STORE_URI] [EXPERIMENT] [OUT_DIR]
#   STORE_URI  default sqlite:///mlruns/mlflow.db (run the README's headline command first)
#   EXPERIMENT default demo;  OUT_DIR default docs/img
# needs: chromium (apt-get install chromium) and the project's .venv (scripts/setup.sh).
# It starts `mlflow ui` on a free port of 127.0.0.1 and stops it however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE="${1:-sqlite:///mlruns/mlflow.db}"
EXPERIMENT="${2:-demo}"
OUT="${3:-docs/img}"
PY="${PYTHON:-.venv/bin/python}"
BROWSER="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$BROWSER" ] || { echo "screenshots.sh: no chromium found; apt-get install chromium" >&2; exit 2; }
mkdir -p "$OUT"

PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$PY" -m mlflow ui --backend-store-uri "$STORE" --host 127.0.0.1 --port "$PORT" >"$OUT/.mlflow-ui.log" 2>&1 &
UI_PID=$!
trap 'kill "$UI_PID" 2>/dev/null; wait "$UI_PID" 2>/dev/null || true; rm -f "$OUT/.mlflow-ui.log"' EXIT
URL="http://127.0.0.1:$PORT"
for _ in $(seq 1 240); do  # the server's health answer, not a fixed sleep (up to 2 minutes)
  curl -sf "$URL/health" >/dev/null && break
  kill -0 "$UI_PID" 2>/dev/null || { cat "$OUT/.mlflow-ui.log" >&2; exit 1; }
  sleep 0.5
done

# the ids to visit: the experiment, its latest sweep run, that sweep's best trial and its trials
read -r EXP SWEEP BEST TRIALS CHAMPION < <(MLFLOW_TRACKING_URI="$STORE" "$PY" - "$EXPERIMENT" <<'EOF'
import json, sys
from mlflow import MlflowClient
client = MlflowClient()
exp = client.get_experiment_by_name(sys.argv[1])
if exp is None:
    sys.exit(f"screenshots.sh: no experiment {sys.argv[1]!r} in the store; run the README's headline command first")
sweeps = client.search_runs([exp.experiment_id], "tags.`tunelog.kind` = 'sweep'", order_by=["start_time DESC"])
if not sweeps:
    sys.exit("screenshots.sh: no sweep run in the experiment")
sweep = sweeps[0]
trials = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'")
best = sweep.data.tags.get("tunelog.best_run_id") or trials[0].info.run_id
champion = ""
for model in client.search_registered_models():
    if "champion" in (model.aliases or {}):
        champion = f"{model.name}/versions/{model.aliases['champion']}"
        break
print(exp.experiment_id, sweep.info.run_id, best, json.dumps([t.info.run_id for t in trials[:6]]).replace(" ", ""), champion or "-")
EOF
)

shot() {  # shot NAME URL: an 1800x1000 PNG after the page's scripts have run
  "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1800,1000 \
    --virtual-time-budget=20000 --screenshot="$OUT/$1.png" "$2" >/dev/null 2>&1
  echo "wrote $OUT/$1.png"
}
ML="workflowType=machine_learning"  # the UI's model-training view, not its GenAI one
shot experiment "$URL/#/experiments/$EXP/runs?$ML"   # the description's first line heads the page
shot trial "$URL/#/experiments/$EXP/runs/$BEST?$ML"
shot compare "$URL/#/compare-runs?runs=$TRIALS&experiments=[\"$EXP\"]&$ML"
shot sweep-run "$URL/#/experiments/$EXP/runs/$SWEEP?$ML"
shot models "$URL/#/experiments/$EXP/models?$ML"   # every trained adapter, a LoggedModel with its eval metric
[ "$CHAMPION" = "-" ] || shot champion "$URL/#/models/$CHAMPION"   # the registered version: an MLflow model
