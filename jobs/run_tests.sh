#!/usr/bin/env bash
# The full test suite: ruff and mypy, tests that need several MPI ranks (2 and 3), then the
# serial suite.
# Run from an activated venv (bash jobs/install.sh --tests; . .venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
status=0
echo "== lint (ruff) and types (mypy)"
ruff check mlscale tests jobs examples || status=1
mypy || status=1
echo "== tests on 2 MPI ranks"
mpiexec -n 2 python -m pytest --with-mpi -m mpi -q -p no:cacheprovider tests || status=1
echo "== tests on 3 MPI ranks"
mpiexec -n 3 python -m pytest --with-mpi -m mpi -q -p no:cacheprovider tests || status=1
echo "== serial tests (each MPI test also runs here on 1 rank where it allows it)"
python -m pytest -q tests || status=1
exit $status
