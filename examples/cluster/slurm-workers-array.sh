#!/usr/bin/env bash
# More workers for a running study, as a Slurm job array (one GPU each); add or cancel array
# tasks at any time: a cancelled worker loses at most the trial it was scoring, which the
# coordinator queues again once its heartbeat stops (--stale-after).
#
#   sbatch --array=0-15 examples/cluster/slurm-workers-array.sh
#SBATCH --job-name=hf-tailor-worker
#SBATCH --gpus=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
set -euo pipefail
export HF_HOME="${HF_HOME:-/shared/hf-home}"
export HF_HUB_OFFLINE=1
export HF_TAILOR_STORAGE="${HF_TAILOR_STORAGE:-postgresql://tailor@db.cluster:5432/tailor}"
exec hf-tailor worker --storage "$HF_TAILOR_STORAGE" --study "${STUDY:-llama-13b-keep30}" --device cuda:0
