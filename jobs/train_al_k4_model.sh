#!/usr/bin/env bash
# Train an aluminium LDOS model on the converged data set's compact records (data/al_k4).
#
#   bash jobs/train_al_k4_model.sh [SEED] [OUT] [OPTION ...]
#                     (defaults 1, out/k4m/m<SEED>.safetensors; OPTIONs go to `mlscale train`
#                      after the recipe's own and win, e.g. --band-weight 1 --electron-fermi-level 7.63)
#   TRAIN="al298_00 ..." bash jobs/train_al_k4_model.sh ...   (other training records)
#
# Split by record: train al298_00 al298_01 al600_00 al600_01 (or TRAIN); validation
# al298_02 (early stopping, best epoch); held out for docs/accuracy.md: al298_03 al298_04
# al600_02 al600_03 al600_04 (the records neither this split nor docs/accuracy.md's
# eight-record split B trains on). Arrays: jobs/export_k4_records.py (descriptors
# recomputed at the records' stride-3 points, 3,375 per snapshot). One rank, one torch thread, fixed seed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SEED=${1:-1}
OUT=${2:-out/k4m/m$SEED.safetensors}
shift $(( $# < 2 ? $# : 2 ))
D=out/al_k4_train
TRAIN=${TRAIN:-al298_00 al298_01 al600_00 al600_01}
VALIDATION=al298_02
"$PYTHON" jobs/export_k4_records.py data/al_k4 "$D" $TRAIN $VALIDATION
pairs() { for name in "$@"; do echo "$D/$name.in.npy:$D/$name.out.npy"; done; }
mkdir -p "$(dirname "$OUT")"
rm -f "${OUT%.safetensors}.checkpoint.safetensors"
OMP_NUM_THREADS=1 nice -n 5 "$PYTHON" -m mlscale train \
    --train $(pairs $TRAIN) --validation $(pairs $VALIDATION) \
    --energy-grid -4.5 0.1 176 --temperature 298 --species Al --valence-electrons Al=3 \
    --ecutrho 80 \
    --layers 91 400 400 176 --activation LeakyReLU --output-scaling global \
    --epochs 150 --batch-size 256 --learning-rate 1e-4 --lr-patience 5 --lr-factor 0.5 \
    --patience 15 --seed "$SEED" --threads 1 \
    -o "$OUT" "$@"
