#!/usr/bin/env bash
# The candidate model of issue 12 (docs/accuracy.md "The blind table"): split T13, seed 2,
# last layer refitted with the training records' DOS weighted (mu = 10).
#
#   bash jobs/train_al_k4_candidate.sh [OUT]      (default data/models/al_k4_t13mu10.safetensors)
#
# One rank, one torch thread: the weights are the same bit for bit on a rerun (compare the
# metadata's tensors_sha256; the file's own hash differs, the metadata holds wall times).
# ~1 min training on an idle machine, seconds for the refit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${1:-data/models/al_k4_t13mu10.safetensors}
T13="al298_00 al298_01 al298_05 al298_06 al600_00 al600_01 al600_05 al600_06
     al298_03 al298_04 al600_02 al600_03 al600_04"
TRAIN="$T13" bash jobs/train_al_k4_model.sh 2 out/k4c/t13base2.safetensors
mkdir -p "$(dirname "$OUT")"
OMP_NUM_THREADS=1 "$PYTHON" jobs/snapshot_refit.py out/k4c/t13base2.safetensors \
    --train $T13 --check al298_02 al600_07 --mu 10 --write "$OUT"
echo "train_al_k4_candidate: wrote $OUT"
