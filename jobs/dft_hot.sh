#!/usr/bin/env bash
# Extrapolation snapshot of issue 12: one 32-atom fcc Al cell at a higher ionic temperature
# than the training data (298 K and 600 K), DFT at the data set's settings (4×4×4 shifted
# k-points, jobs/make_al_dataset.sh's COMMON flags), as a compact record
# data/al_k4/al<T>_00.{npz,info.json} (an evaluation record: never in a training set).
#
#   nohup bash jobs/dft_hot.sh [T_K] [SEED] [QE_PROCESSES] > out/dft_hot.log 2>&1 &
#       (defaults 900 K, seed 900, 2 processes; resumable like make_al_dataset.sh)
#
# Thermal displacements as the data set makes them: EMT Langevin MD of the 2×2×2
# conventional cell at T (mlscale datagen --ionic-temperature T --seed SEED), first
# snapshot after 500 + 50 steps. Electronic temperature 298 K, as the data set.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-900}
SEED=${2:-900}
NP=${3:-2}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PYTHON" -m mlscale datagen --out data/al_k4/full --prefix "al${T}" \
    --ionic-temperature "$T" --seed "$SEED" --count 1 \
    --element Al --lattice 4.05 --repeat 2 2 2 \
    --pseudo Al=Al.pz-vbc.UPF --ecutwfc 20 --kpoints 4 4 4 --kshift 1 1 1 \
    --temperature 298 --nbnd 112 --mixing-beta 0.7 --conv-thr 1e-7 \
    --emin -4.5 --de 0.1 --ne 176 --ldos-broadening 0.05 --ldos-tool wavefunctions \
    --np "$NP" --pools "$NP" --nice 10 --no-openpmd \
    --records data/al_k4 --record-stride 3 --record-dtype float16
