#!/usr/bin/env bash
# Build Horovod 0.28.1 (PyTorch + MPI, CPU operations over MPI) into mlscale's venv.
#
#   bash jobs/install_horovod.sh            (after bash jobs/install.sh; ~10 min on 2 cores)
#   VENV=/path/to/venv bash jobs/install_horovod.sh
#
# Horovod 0.28.1 compiles its PyTorch extension with -std=c++14, but torch 2.13's
# headers need C++17: a small compiler wrapper rewrites the flag. Horovod is built
# against the MPI found first in PATH (here the venv's mpich, the one mpi4py uses);
# on a cluster, load the site MPI (and build mpi4py against it) before running this.
# Afterwards `mlscale train --distributed horovod` works and the Horovod tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
. "$venv/bin/activate"
python -c "import torch, mpi4py" || { echo "install mlscale first (bash jobs/install.sh)"; exit 1; }
command -v cmake >/dev/null || python -m pip install -q cmake
command -v mpicxx >/dev/null || { echo "no mpicxx in PATH (pip install mpich, or load your MPI)"; exit 1; }

wrapper_dir=$(mktemp -d)
trap 'rm -rf "$wrapper_dir"' EXIT
real_cxx=$(command -v "${CXX:-c++}")
cat > "$wrapper_dir/c++17" <<EOF
#!/usr/bin/env bash
args=()
for arg in "\$@"; do
    case "\$arg" in -std=c++14|-std=gnu++14) arg=-std=c++17 ;; esac
    args+=("\$arg")
done
exec "$real_cxx" "\${args[@]}"
EOF
chmod +x "$wrapper_dir/c++17"

export CXX="$wrapper_dir/c++17"
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_CPU_OPERATIONS=MPI
export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1
export MAKEFLAGS="-j${JOBS:-2}"
# no build isolation: Horovod's build imports the installed torch 2.13
python -m pip install --no-cache-dir --no-build-isolation --no-binary horovod "horovod==0.28.1"
python -c "import horovod, horovod.torch as hvd; hvd.init(); print('horovod', horovod.__version__, 'MPI:', hvd.mpi_built())"
