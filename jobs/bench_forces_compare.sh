#!/bin/bash
# Forces against energy only, before and after a change, interleaved in one run:
#
#     bash jobs/bench_forces_compare.sh BASE_COMMIT [ROUNDS] [OUT_DIR]
#
# Exports BASE_COMMIT's and HEAD's mlscale/ and jobs/ (committed trees only: work in
# progress of others is left out) into OUT_DIR, then per round runs
# jobs/bench_forces.py --repeat 1 for each (one thread, nice 5), the load average before
# and after each, and prints the median per phase (jobs/bench_forces_summary.py).
set -euo pipefail
base=${1:?usage: bench_forces_compare.sh BASE_COMMIT [ROUNDS] [OUT_DIR]}
rounds=${2:-3}
out=${3:-$(mktemp -d)}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
mkdir -p "$out/before" "$out/after"
git -C "$repo" archive "$base" mlscale jobs | tar -x -C "$out/before"
git -C "$repo" archive HEAD mlscale jobs | tar -x -C "$out/after"
lscpu > "$out/lscpu.txt"
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
for r in $(seq "$rounds"); do
  for v in before after; do
    uptime > "$out/$v.$r.load"
    (cd "$out" && PYTHONPATH="$out/$v" nice -n 5 "$python" "$out/$v/jobs/bench_forces.py" \
        --repeat 1 > "$out/$v.$r.json")
    uptime >> "$out/$v.$r.load"
  done
done
"$python" "$repo/jobs/bench_forces_summary.py" "$out"
