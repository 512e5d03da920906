#!/usr/bin/env bash
# Issue 16's checks on one GPU, in one prepared run of at most ~8 minutes:
#   1. environment (numba, numba.cuda, torch CUDA, the GPUs)
#   2. GPU vs CPU descriptor kernel under the acceptance metric: Al (shipped settings,
#      45³ grid) and Be2 (18×18×27)
#   3. throughput at twojmax 10 with the shipped network: descriptors and network
#      separately (grid points/s), the kernel's FLOP rate against the FP64 peak
#   4. predict --device cuda vs predict --network torch on the CPU (built-in example):
#      results.json to 1e-8 relative
#   5. a 108,000-atom thermal Al cell (the built-in example repeated 15³, 672³ grid)
#      end to end with --device cuda: time and memory per phase (results.json) and the
#      GPU's memory (nvidia-smi samples)
# At most ~8 minutes (step limits; the big run gets what is left of 460 s). Writes
# $OUT/gpu_check/*.json and the merged
# $OUT/gpu_check/summary.json (OUT: the device tool's output folder, default
# ./gpu_check_out). Each step has its own time limit; the script goes on after a failed
# step (its status is in steps.txt). Needs mlscale installed in the Python it runs
# ($PYTHON, else .venv/bin/python, else python) with numba's CUDA target and a CUDA torch.
#
#   bash jobs/gpu_check.sh            # on a machine with a CUDA GPU and the venv
set -u
cd "$(dirname "$0")/.."
DIR="${OUT:-$PWD/gpu_check_out}/gpu_check"
mkdir -p "$DIR"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-16}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree's mlscale, installed or not
: > "$DIR/steps.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, record status and time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$DIR/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - t0))" | tee -a "$DIR/steps.txt"
}

nvidia-smi > "$DIR/nvidia-smi.txt" 2>&1 || true
step env 30 "$PY" jobs/gpu_check.py env "$DIR/env.json"
step descriptors 75 "$PY" jobs/gpu_check.py descriptors "$DIR/descriptors.json"
step throughput 75 "$PY" jobs/gpu_check.py throughput "$DIR/throughput.json"

rm -rf "$DIR/cpu_run" "$DIR/gpu_run"
step predict_cpu 45 "$PY" -m mlscale predict --network torch -o "$DIR/cpu_run"
step predict_gpu 60 "$PY" -m mlscale predict --device cuda -o "$DIR/gpu_run"
step compare 15 "$PY" jobs/gpu_check.py compare "$DIR/cpu_run" "$DIR/gpu_run" \
    "$DIR/predict_compare.json"

step structure 30 "$PY" jobs/gpu_check.py structure 15 "$DIR/al108000.xyz"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$DIR/gpu_memory_samples.csv" 2>/dev/null &
SAMPLER=$!
BIG="${TMPDIR:-/tmp}/mlscale_gpu_check_big"  # its density.h5 (2.4 GB) stays out of $OUT
rm -rf "$BIG"
LIMIT=$(( 460 - SECONDS ))  # what is left of the 8 minutes (the steps before are quick)
[ "$LIMIT" -lt 60 ] && LIMIT=60
step predict_108000_atoms "$LIMIT" "$PY" -m mlscale predict "$DIR/al108000.xyz" --device cuda \
    --chunk-points 262144 -o "$BIG"
kill "$SAMPLER" 2>/dev/null || true
"$PY" - "$DIR" "$BIG" <<'EOF'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
used = [float(line.split(",")[1]) for line in
        (d / "gpu_memory_samples.csv").read_text().splitlines() if line.count(",") == 1]
big = Path(sys.argv[2]) / "results.json"
out = {"gpu_memory_used_peak_MiB": max(used) if used else None,
       "results": json.loads(big.read_text()) if big.is_file() else None,
       "log_tail": (d / "predict_108000_atoms.log").read_text()[-2000:]}
(d / "big.json").write_text(json.dumps(out, indent=2))
EOF
rm -rf "$DIR/al108000.xyz" "$BIG"
"$PY" jobs/gpu_check.py summary "$DIR" "$DIR/summary.json"
cat "$DIR/steps.txt"
