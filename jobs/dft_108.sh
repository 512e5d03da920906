#!/usr/bin/env bash
# DFT of the 108-atom thermal Al cell that jobs/al_size_transfer.py predicts (issue 12,
# size transfer): 3×3×3 conventional fcc (a = 4.05 Å), EMT Langevin MD at 298 K, seed 108.
#
#   mkdir -p out/dft108; nohup bash jobs/dft_108.sh [KX KY KZ] [STOP_UTC] > out/dft108/kKXKYKZ.log 2>&1 &
#       (defaults 3 3 3 shifted and 18:25; run directory out/dft108/kKXKYKZ; resumable:
#        rerun the same command)
#
# The data set's settings (docs/dft_settings.md: LDA Al.pz-vbc.UPF, ecutwfc 20 Ry,
# ecutrho 80 Ry, Fermi-Dirac 298 K) with a shifted KX×KY×KZ grid; 3×3×3 shifted on the
# 12.15 Å cell (14 k-points with time reversal) samples the same as a 9×9×9 grid of the
# 4.05 Å cube, against the data set's 4×4×4 shifted on 8.1 Å (8×8×8): as dense or denser.
# nbnd 216 (162 occupied); conv_thr 1e-6 Ry for the cell (9e-9 Ry/atom).
# pw.x stops cleanly before STOP_UTC (max_seconds) and writes its restart files; rerunning
# this script then continues with restart_mode='restart'. When the SCF has converged it
# writes RUN/result.json and dos.txt (jobs/dft_cell.py result) and keeps the XML.
# Across machines (a session's machine may not outlive it; 3×3×3 takes ≈ 3.5 h on 2
# cores): after an unconverged stop the script copies pw.x's current density to
# data/dft108/kKXKYKZ/partial/ (charge-density.dat, ≈ 4 MB, and progress.txt); commit it.
# On a machine without the restart files it starts from that density (startingpot='file',
# fresh wavefunctions): the SCF continues from where the density was, less one costly
# first iteration (tested on a 4-atom cell: 8 iterations from scratch, 6 after 2 carried).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
KX=${1:-3}; KY=${2:-3}; KZ=${3:-3}
STOP=${4:-18:25}
RUN=out/dft108/k${KX}${KY}${KZ}
CARRY=data/dft108/k${KX}${KY}${KZ}/partial
mkdir -p "$RUN" out/size108
[ -f out/size108/al108.xyz ] || "$PYTHON" jobs/dft_cell.py structure al108 out/size108/al108.xyz
[ -f "$RUN/structure.xyz" ] || cp out/size108/al108.xyz "$RUN/structure.xyz"
if [ -f "$RUN/scf.out" ] && grep -q "convergence has been achieved" "$RUN/scf.out" \
        && grep -q "JOB DONE" "$RUN/scf.out"; then
    echo "SCF finished before"
else
    RESTART=()
    # pw.x's restart files (restart_scf, written at a clean max_seconds stop) or, after a
    # killed run, the wavefunction buffers and saved density: restart_mode='restart' reads
    # the wavefunctions and density (startingwfc/startingpot 'file') either way.
    if [ -f "$RUN/scf.out" ] && ls "$RUN"/qe_tmp/snapshot.restart_scf* "$RUN"/qe_tmp/snapshot.wfc* >/dev/null 2>&1; then
        RESTART=(--restart)
        mv "$RUN/scf.out" "$RUN/scf.out.$(date -u +%H%M%S)"
    elif [ -f "$CARRY/charge-density.dat" ]; then   # another machine's density
        mkdir -p "$RUN/qe_tmp/snapshot.save"
        cp "$CARRY/charge-density.dat" "$RUN/qe_tmp/snapshot.save/"
        [ -f "$RUN/scf.out" ] && mv "$RUN/scf.out" "$RUN/scf.out.$(date -u +%H%M%S)"
        RESTART=(--starting-density)
        echo "starting from the carried density: $(cat "$CARRY/progress.txt" 2>/dev/null)"
    fi
    SECONDS_LEFT=$(( $(date -u -d "$STOP" +%s) - $(date -u +%s) ))
    [ "$SECONDS_LEFT" -gt 600 ] || SECONDS_LEFT=86400   # past today's stop: no limit
    "$PYTHON" jobs/dft_cell.py input "$RUN/structure.xyz" "$RUN" --kpoints "$KX" "$KY" "$KZ" \
        --kshift 1 1 1 --nbnd 216 --conv-thr 1e-6 --mixing-beta 0.5 \
        --max-seconds "$SECONDS_LEFT" "${RESTART[@]}"
    echo "pw.x start $(date -u +%FT%TZ), ${KX}x${KY}x${KZ} shifted, max_seconds $SECONDS_LEFT ${RESTART[*]}"
    (cd "$RUN" && OMP_NUM_THREADS=1 nice -n 10 /usr/bin/mpirun --allow-run-as-root -np 2 \
        pw.x -nk 2 -in scf.in > scf.out 2>&1) || echo "pw.x exit status $?"
    echo "pw.x end $(date -u +%FT%TZ)"
fi
if grep -q "convergence has been achieved" "$RUN/scf.out"; then
    "$PYTHON" jobs/dft_cell.py result "$RUN"
    rm -f "$RUN"/qe_tmp/snapshot.wfc* "$RUN"/qe_tmp/snapshot.save/wfc*.dat
else
    if [ -f "$RUN/qe_tmp/snapshot.save/charge-density.dat" ]; then
        mkdir -p "$CARRY"
        cp "$RUN/qe_tmp/snapshot.save/charge-density.dat" "$CARRY/charge-density.dat.tmp"
        mv "$CARRY/charge-density.dat.tmp" "$CARRY/charge-density.dat"
        { echo "$(date -u +%FT%TZ): $(cat "$RUN"/scf.out* | grep -c '^ *iteration #') SCF iterations run in all on this machine;" \
               "last $(grep 'estimated scf accuracy' "$RUN/scf.out" | tail -1 | sed 's/ \+/ /g')"
        } > "$CARRY/progress.txt"
        echo "density carried to $CARRY: commit it (git add $CARRY) to continue on another machine"
    fi
    echo "not converged yet: rerun  nohup bash jobs/dft_108.sh $KX $KY $KZ > $RUN.log 2>&1 &"
fi
