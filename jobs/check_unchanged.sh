#!/usr/bin/env bash
# Results of a refactoring unchanged? Runs `mlscale predict` (built-in example, with and without
# the energy terms), `mlscale electrons` and `mlscale energy` (MALA's Be2 snapshot 0) on 1, 2 and 3
# ranks with the code of BASE (a git revision) and of the working tree, and compares results.json
# (every key but timings, memory and provenance), dos.csv and the printed lines.
#   bash jobs/check_unchanged.sh BASE [--kb2014]
# --kb2014: run the working tree with Boltzmann's constant of CODATA 2014 (what electrons.py used
# before mlscale/units.py), to show that the constant is the only difference.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; shim=${2:-}
root=$(pwd); work=$(mktemp -d); be=${MLSCALE_MALA_DATA:-$root/../shared/mala-test-data}/Be2
git worktree add -q "$work/base" "$base"
trap 'git worktree remove --force "$work/base"' EXIT
cat > "$work/kb2014.py" <<'PY'
import sys
import mlscale.electrons as electrons
electrons.KB_EV_PER_K = 8.617330337217213e-05
from mlscale.cli import main
sys.exit(main())
PY
export OMP_NUM_THREADS=1
run() {  # run NAME SRC RANKS ARGS...: one mlscale command with the code in SRC
    local name=$1 src=$2 n=$3; shift 3
    local entry=(-m mlscale); [ "$src" = "$root" ] && [ "$shim" = --kb2014 ] && entry=("$work/kb2014.py")
    (cd "$work" && PYTHONPATH=$src mpiexec -n "$n" python "${entry[@]}" "$@" > "$work/$name.txt" 2>&1)
}
for side in base new; do
    src=$root; [ $side = base ] && src=$work/base
    for n in 1 2 3; do
        run $side-al$n "$src" $n predict -o "$work/$side-al$n"
        run $side-bee$n "$src" $n electrons "$be/Be_snapshot0.out.npy" --energy-grid -5 2.5 11 \
            --temperature 298 --electrons 4 --cell-from "$be/Be_snapshot0.out" -o "$work/$side-bee$n"
        run $side-ben$n "$src" $n energy "$be/Be_snapshot0.dens.npy" --structure "$be/Be_snapshot0.out" \
            --pseudopotentials "$be"
    done
    run $side-ale "$src" 1 predict --pseudopotentials /usr/share/espresso/pseudo -o "$work/$side-ale"
done
python - "$work" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1]); skip = {"timings_s", "cpu_timings_s", "peak_memory_per_rank_MiB", "provenance"}
for run in ["al1", "al2", "al3", "ale", "bee1", "bee2", "bee3"]:
    a = json.loads((work / f"base-{run}" / "results.json").read_text())
    b = json.loads((work / f"new-{run}" / "results.json").read_text())
    diff = {k: (a[k], b.get(k)) for k in a if k not in skip and a[k] != b.get(k)}
    same_dos = (work / f"base-{run}" / "dos.csv").read_bytes() == (work / f"new-{run}" / "dos.csv").read_bytes()
    printed = [l for l in (work / f"base-{run}.txt").read_text().splitlines() if "written" not in l]
    printed_new = [l for l in (work / f"new-{run}.txt").read_text().splitlines() if "written" not in l]
    print(f"{run}: results.json {'identical' if not diff else diff}; dos.csv "
          f"{'identical' if same_dos else 'differs'}; printed {'identical' if printed == printed_new else 'differs'}")
for run in ["ben1", "ben2", "ben3"]:
    same = (work / f"base-{run}.txt").read_text() == (work / f"new-{run}.txt").read_text()
    print(f"{run}: printed {'identical' if same else 'differs'}")
PY
