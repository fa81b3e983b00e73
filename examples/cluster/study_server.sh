#!/usr/bin/env bash
# The study server for many workers (past a dozen): one process holds the study database's connections,
# every worker talks to it over gRPC and holds none (docs/operations.md: workers x pool vs max_connections).
#   export TUNELOG_DB=postgresql://USER:PASSWORD@db-host:5432/optuna
#   sbatch --export=ALL examples/cluster/study_server.sh        # note the node it lands on: STUDY_HOST
#   export TUNELOG_STORAGE=grpc://STUDY_HOST:13000             # then, for the workers:
#   sbatch --export=ALL,SPEC=examples/demo/demo.yaml examples/cluster/slurm_array.sh
# Without SLURM, the same command on any host the workers reach (a VM beside the database, a Deployment).
#SBATCH --job-name=tunelog-study-server
#SBATCH --cpus-per-task=2
#SBATCH --time=7-00:00:00
#SBATCH --output=tunelog-study-server-%j.log
set -euo pipefail
: "${TUNELOG_DB:?set TUNELOG_DB to the study database URL}"
echo "study server on $(hostname): workers use --storage grpc://$(hostname):${STUDY_PORT:-13000}"
exec tunelog study-server --storage "${TUNELOG_DB}" --host 0.0.0.0 --port "${STUDY_PORT:-13000}" --connections 4
