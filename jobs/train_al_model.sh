#!/usr/bin/env bash
# Train the shipped aluminium LDOS model, mlscale/data/al_model.safetensors, from data/al.
#
#   bash jobs/train_al_model.sh
#
# Data: bash jobs/make_al_dataset.sh -> data/al/al_00 .. al_11 (docs/dft_settings.md).
# Split by snapshot: al_00..al_07 train, al_08 validation (learning-rate schedule, early
# stopping, best epoch, choice of settings), al_09..al_11 held out for docs/accuracy.md
# (examples/accuracy.py; docs/accuracy.md says which models were evaluated on them).
# Fixed seed and settings, one rank with one torch thread: rerunning gives the same model
# (other rank or thread counts agree to round-off). Then examples/accuracy.py measures the
# errors on al_08 against DFT and writes the model with them, the DFT settings and the data
# description in its metadata to mlscale/data/al_model.safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DATA=data/al
WORK=out/al_model
TRAIN="al_00 al_01 al_02 al_03 al_04 al_05 al_06 al_07"
VALIDATION=al_08
for name in $TRAIN $VALIDATION; do
    if [ ! -f "$DATA/$name.info.json" ]; then
        echo "train_al_model: $DATA/$name is not finished; run bash jobs/make_al_dataset.sh" >&2
        exit 1
    fi
done
pairs() { for name in "$@"; do echo "$DATA/$name.in.npy:$DATA/$name.out.npy"; done; }
mkdir -p "$WORK"
rm -f "$WORK/al_model.checkpoint.safetensors"   # start afresh, never resume an older run

# energy grid, temperature, ecutrho and valence: the data set's (checked by accuracy.py)
OMP_NUM_THREADS=1 nice -n 10 "$PYTHON" -m mlscale train \
    --train $(pairs $TRAIN) --validation $(pairs $VALIDATION) \
    --energy-grid -4.5 0.1 176 --temperature 298 --species Al --valence-electrons Al=3 \
    --ecutrho 80 \
    --layers 91 400 400 176 --activation LeakyReLU --output-scaling global \
    --epochs 12 --batch-size 256 --learning-rate 1e-4 --lr-patience 2 --lr-factor 0.5 \
    --patience 4 --seed 1 --threads 1 \
    -o "$WORK/al_model.safetensors"

OMP_NUM_THREADS=1 nice -n 10 "$PYTHON" examples/accuracy.py \
    --model "$WORK/al_model.safetensors" --data "$DATA" --snapshots $VALIDATION \
    --work "$WORK/validation" --record mlscale/data/al_model.safetensors \
    --description "32-atom fcc Al cells (a = 4.05 Å) from a seeded EMT Langevin MD at 298 K \
(seed 2026, a snapshot every 100 fs, jobs/make_al_dataset.sh); QE 6.7 LDA (Al.pz-vbc.UPF), \
20/80 Ry, 2x2x2 shifted k-points, Fermi-Dirac 298 K; LDOS -4.5..13.0 eV step 0.1 eV, \
broadening 0.05 eV (docs/dft_settings.md). Train: $TRAIN (all 45^3 grid points each); \
validation: $VALIDATION; held out: al_09 al_10 al_11 (docs/accuracy.md)."
echo "train_al_model: wrote mlscale/data/al_model.safetensors"
