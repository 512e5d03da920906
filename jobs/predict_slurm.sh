#!/usr/bin/env bash
#SBATCH --job-name=mlscale-predict
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=32
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mlscale-predict-%j.out
#
# Predict the electronic structure of a large structure with srun: one rank per core.
#
#   sbatch jobs/predict_slurm.sh STRUCTURE MODEL OUTPUT_DIR [more `mlscale predict` options]
#   e.g. sbatch jobs/predict_slurm.sh al_131k.xyz al.safetensors run1 --pseudopotentials pseudo/
#
# Size the job first: `mlscale plan STRUCTURE --model MODEL --ranks N` prints the
# points, atoms, memory and time per rank. Each rank owns one block of the grid and
# writes its block of OUTPUT_DIR/density.h5; results.json appears last.
# MLSCALE_VENV: the venv with mlscale (default: ./.venv); SRUN_MPI: srun's MPI plugin
# (default pmi2, which the pip MPICH speaks; with the site's MPI use the plugin its
# documentation names, e.g. pmix; docs/usage.md "Slurm"). Without the right plugin every
# task would be an MPI world of one rank: mlscale then stops with an error.
# Since Slurm 22.05 srun no longer inherits --cpus-per-task: it is passed explicitly.
set -euo pipefail
structure=${1:?usage: sbatch jobs/predict_slurm.sh STRUCTURE MODEL OUTPUT_DIR [options]}
model=${2:?model file}
output=${3:?output directory}
shift 3
. "${MLSCALE_VENV:-.venv}/bin/activate"
threads=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=$threads NUMBA_NUM_THREADS=$threads SRUN_CPUS_PER_TASK=$threads
srun --kill-on-bad-exit=1 --mpi="${SRUN_MPI:-pmi2}" -c "$threads" \
    mlscale predict "$structure" --model "$model" --output "$output" "$@"
