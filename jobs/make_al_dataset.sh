#!/usr/bin/env bash
# Regenerate the aluminium training data set into data/al/ (settings: docs/dft_settings.md).
#
#   bash jobs/make_al_dataset.sh [QE_PROCESSES]     (default 2)
#
# 12 snapshots al_00..al_11 of a 32-atom fcc Al supercell (a = 4.05 Å) from a seeded
# EMT Langevin MD at 298 K; pw.x SCF at T_e = 298 K, pp.x LDOS on -4.5..13.0 eV (0.1 eV;
# E_F is near 7.77 eV, so the grid reaches ~5.2 eV above it).
# Interrupt and rerun at will: finished snapshots (al_XX.info.json present) are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${1:-2}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec nice -n 10 "$PYTHON" -m mlscale datagen --out data/al --prefix al \
    --element Al --lattice 4.05 --repeat 2 2 2 --ionic-temperature 298 --count 12 --seed 2026 \
    --pseudo Al=Al.pz-vbc.UPF --ecutwfc 20 --kpoints 2 2 2 --kshift 1 1 1 \
    --temperature 298 --nbnd 104 --mixing-beta 0.7 --conv-thr 1e-7 \
    --emin -4.5 --de 0.1 --ne 176 --ldos-broadening 0.05 --ldos-tool pp.x \
    --np "$NP" --pools "$NP"
