#!/usr/bin/env bash
# The aluminium data set of the shipped model (mlscale/data/al_model.safetensors), generated
# snapshot by snapshot into compact records that are committed to git (format, settings
# and cost: docs/dft_settings.md, "The converged data set").
#
#   bash jobs/make_al_dataset.sh [QE_PROCESSES] [ROUNDS]      (defaults 2 and 11)
#
# 32-atom fcc Al (a = 4.05 Å), two EMT Langevin trajectories: 298 K (seed 2026) and 600 K
# (seed 600). Each round adds one snapshot of each: al298_00, al600_00, al298_01, ...
# pw.x SCF with 4×4×4 shifted k-points (32 k-points in a displaced cell) at T_e = 298 K,
# LDOS on -4.5..13.0 eV (0.1 eV, 176 energies) in one pass from the wavefunctions.
# ≈ 7-8 min per snapshot on the idle 2-core machine (docs/dft_settings.md). The shipped
# model trains on rounds 0-6 and validates on al298_02; rounds 7-10 are its held-out
# records (jobs/train_al_model.sh, docs/accuracy.md).
# Results: data/al_k4/<name>.info.json + <name>.npz (LDOS at every 3rd grid point per axis
# in float16, density and DOS at all points; commit these), full snapshots in
# data/al_k4/full/ (gitignored). Interrupt and rerun at will: snapshots with a record are
# skipped, and a snapshot whose QE stages finished is not recomputed.
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${1:-2}
ROUNDS=${2:-11}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
COMMON=(--element Al --lattice 4.05 --repeat 2 2 2
        --pseudo Al=Al.pz-vbc.UPF --ecutwfc 20 --kpoints 4 4 4 --kshift 1 1 1
        --temperature 298 --nbnd 112 --mixing-beta 0.7 --conv-thr 1e-7
        --emin -4.5 --de 0.1 --ne 176 --ldos-broadening 0.05 --ldos-tool wavefunctions
        --np "$NP" --pools "$NP" --no-openpmd
        --records data/al_k4 --record-stride 3 --record-dtype float16)
for ((count = 1; count <= ROUNDS; count++)); do
    "$PYTHON" -m mlscale datagen --out data/al_k4/full --prefix al298 \
        --ionic-temperature 298 --seed 2026 --count "$count" "${COMMON[@]}"
    "$PYTHON" -m mlscale datagen --out data/al_k4/full --prefix al600 \
        --ionic-temperature 600 --seed 600 --count "$count" "${COMMON[@]}"
done
