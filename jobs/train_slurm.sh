#!/usr/bin/env bash
#SBATCH --job-name=mlscale-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=TERM@180
#SBATCH --output=mlscale-train-%j.out
#
# Data-parallel training with srun: one rank per task, torch threads = cpus-per-task.
#
#   sbatch jobs/train_slurm.sh train.toml [more `mlscale train` options]
#   sbatch --gpus-per-node=4 jobs/train_slurm.sh train.toml --device cuda   (NCCL)
#
# train.toml: the `mlscale train` options (see jobs/train_mpirun.sh, docs/training.md);
# set `checkpoint` there. --signal=TERM@180 makes Slurm send SIGTERM 3 minutes before
# the time limit: every rank finishes its step, rank 0 writes the checkpoint and the
# job exits non-zero. Submitting the same script again resumes from the
# checkpoint, bit for bit, as long as the number of tasks is unchanged.
# MLSCALE_VENV: the venv with mlscale (default: ./.venv); DISTRIBUTED: ddp or horovod;
# SRUN_MPI: srun's MPI plugin (default pmi2, which the pip MPICH speaks; with the site's
# MPI use the plugin its documentation names, e.g. pmix; docs/usage.md "Slurm").
# Since Slurm 22.05 srun no longer inherits --cpus-per-task from the job: it is passed
# explicitly (-c), else every rank gets one core for its torch threads.
set -euo pipefail
config=${1:?usage: sbatch jobs/train_slurm.sh CONFIG.toml [options]}
shift
. "${MLSCALE_VENV:-.venv}/bin/activate"
threads=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=$threads
# rank 0's node hosts the torch.distributed rendezvous (set MASTER_ADDR to pick an interface)
checkpoint=$(python - "$config" <<'PY'
import json, sys, tomllib
path = sys.argv[1]
data = tomllib.load(open(path, "rb")) if path.endswith(".toml") else json.load(open(path))
print(data.get("checkpoint", ""))
PY
)
resume=()
if [ -n "$checkpoint" ] && [ -f "$checkpoint" ]; then
    echo "resuming from $checkpoint"
    resume=(--resume "$checkpoint")
fi
export SRUN_CPUS_PER_TASK=$threads
srun --kill-on-bad-exit=1 --mpi="${SRUN_MPI:-pmi2}" -c "$threads" \
    mlscale train --config "$config" --threads "$threads" \
    --distributed "${DISTRIBUTED:-ddp}" "${resume[@]}" "$@"
