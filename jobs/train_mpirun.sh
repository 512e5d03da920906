#!/usr/bin/env bash
# Data-parallel training with plain mpirun/mpiexec (workstation or a node without Slurm).
#
#   NP=4 bash jobs/train_mpirun.sh train.toml [more `mlscale train` options]
#
# train.toml holds the `mlscale train` options (see docs/training.md), e.g.
#   train = ["snap0.in.npy:snap0.out.npy", "snap1.in.npy:snap1.out.npy"]
#   validation = ["snap2.in.npy:snap2.out.npy"]
#   energy-grid = [-5.0, 2.5, 11]
#   temperature = 298.0
#   species = ["Be"]
#   output = "be_model.safetensors"
#   checkpoint = "be_model.checkpoint.safetensors"
#   checkpoint-every = 5
# If the checkpoint file exists the run continues from it (--resume); a SIGTERM
# (kill -TERM, a scheduler) writes it and stops all ranks.
# NP: ranks (default 2); THREADS: torch threads per rank (default cores / NP);
# MPIEXEC: launcher (default mpiexec); DISTRIBUTED: ddp or horovod (default ddp).
set -euo pipefail
config=${1:?usage: NP=N bash jobs/train_mpirun.sh CONFIG.toml [options]}
shift
np=${NP:-2}
threads=${THREADS:-$(( $(nproc) / np > 0 ? $(nproc) / np : 1 ))}
export OMP_NUM_THREADS=$threads
checkpoint=$(python - "$config" <<'PY'
import json, sys, tomllib
path = sys.argv[1]
data = tomllib.load(open(path, "rb")) if path.endswith(".toml") else json.load(open(path))
print(data.get("checkpoint", ""))
PY
)
resume=()
if [ -n "$checkpoint" ] && [ -f "$checkpoint" ]; then
    echo "resuming from $checkpoint"
    resume=(--resume "$checkpoint")
fi
exec ${MPIEXEC:-mpiexec} -n "$np" mlscale train --config "$config" --threads "$threads" \
    --distributed "${DISTRIBUTED:-ddp}" "${resume[@]}" "$@"
