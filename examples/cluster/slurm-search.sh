#!/usr/bin/env bash
# A search spread over a Slurm allocation: one coordinator step (the optimiser, on CPU) and
# one `hf-tailor worker` per GPU, all on the study kept in PostgreSQL.
#
#   sbatch --nodes=2 --gpus-per-node=8 examples/cluster/slurm-search.sh
#
# Needs: a PostgreSQL database reachable from the nodes (HF_TAILOR_STORAGE, password in
# PGPASSWORD or ~/.pgpass, not on the command line), HF_HOME on storage every node mounts
# (the family is pulled there once with `hf-tailor pull`), the task files on shared storage.
#SBATCH --job-name=hf-tailor-search
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
set -euo pipefail

export HF_HOME="${HF_HOME:-/shared/hf-home}"          # shared: every worker opens the same files
export HF_HUB_OFFLINE=1                                # pulled beforehand; workers never download
export HF_TAILOR_STORAGE="${HF_TAILOR_STORAGE:-postgresql://tailor@db.cluster:5432/tailor}"
study="${STUDY:-llama-13b-keep30}"
out="${OUT:-/shared/searches/$study}"

# The coordinator: proposes, keeps the queue filled, takes results, scores the finalists.
# --workers 0: it scores no trials itself. Re-running this script continues the study.
srun --ntasks=1 --gpus-per-task=1 --exclusive \
    hf-tailor search --sources /shared/sources.yaml --keep-layers 30 \
        --tasks mmlu=/shared/data/mmlu,wsc=/shared/data/wsc.parquet --trials 500 \
        --storage "$HF_TAILOR_STORAGE" --study "$study" --workers 0 --device cuda:0 --out "$out" &

# One worker per GPU of the allocation (Slurm sets CUDA_VISIBLE_DEVICES per task, so each
# sees its GPU as cuda:0). Workers wait for the study to appear and exit when it is done.
srun --ntasks="$(( SLURM_NTASKS - 1 ))" --gpus-per-task=1 \
    hf-tailor worker --storage "$HF_TAILOR_STORAGE" --study "$study" --device cuda:0 &

wait
