#!/usr/bin/env bash
# One tunelog sweep worker per SLURM array task, one GPU each, all on one study.
#   export TUNELOG_STORAGE=postgresql://USER:PASSWORD@db-host:5432/optuna   # the study (shared); past a dozen
#                                                     tasks grpc://STUDY_HOST:13000 (study_server.sh) instead
#   export MLFLOW_TRACKING_URI=http://mlflow-host:5000                      # the runs (shared)
#   sbatch --export=ALL,SPEC=examples/demo/demo.yaml examples/cluster/slurm_array.sh
# Every task runs the same command; the first to start makes the sweep run and queues the named
# configs, the others join; a task that dies has its trial re-queued by the others; the last one to
# finish closes the sweep run. --n-trials is the study's total, not each task's.
#SBATCH --job-name=tunelog-sweep
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=tunelog-sweep-%A_%a.log
set -euo pipefail
: "${SPEC:?set SPEC to the spec file}" "${TUNELOG_STORAGE:?set TUNELOG_STORAGE}" "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI}"
N_TRIALS="${N_TRIALS:-40}"
cd "${SLURM_SUBMIT_DIR:-.}"
exec tunelog sweep "${SPEC}" --storage "${TUNELOG_STORAGE}" --n-trials "${N_TRIALS}"
