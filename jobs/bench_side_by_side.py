"""Two revisions of mlscale side by side: `mlscale predict` of the built-in example,
interleaved runs, median wall and CPU seconds per phase (descriptors, network,
electrons, output) and the whole job's wall time.

    python jobs/bench_side_by_side.py BASE_REVISION [--repeats 5] [--ranks 1]

BASE_REVISION is checked out into a temporary git worktree; the working tree is the
other side. Each run is a fresh `mpiexec -n RANKS python -m mlscale predict` with one
thread per rank; the two sides take turns, so load changes hit both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(src: Path, out: Path, ranks: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, "-m", "mlscale", "predict",
                    "-o", str(out)], check=True, env=env, cwd=out.parent,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    return {"job_wall_s": wall, **{f"cpu_{k}_s": v for k, v in results["cpu_timings_s"].items()},
            **{f"wall_{k}_s": v for k, v in results["timings_s"].items()},
            "peak_MiB": results["peak_memory_per_rank_MiB"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ranks", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "-q", str(base), args.base], check=True,
                       cwd=ROOT)
        try:
            sides = {"base": base, "new": ROOT}
            for src in sides.values():  # warm the numba cache of each side
                run(src, Path(tmp) / "warm", args.ranks)
            records = {name: [] for name in sides}
            for _ in range(args.repeats):
                for name, src in sides.items():
                    records[name].append(run(src, Path(tmp) / name, args.ranks))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    keys = records["base"][0].keys()
    print(f"load average {os.getloadavg()[0]:.1f}; {args.repeats} interleaved runs per side, "
          f"{args.ranks} rank(s); medians")
    print(f"{'':22s}{'base':>10s}{'new':>10s}{'new/base':>10s}")
    for key in keys:
        b = statistics.median(r[key] for r in records["base"])
        n = statistics.median(r.get(key, float("nan")) for r in records["new"])
        print(f"{key:22s}{b:10.3f}{n:10.3f}{n / b:10.3f}")


if __name__ == "__main__":
    main()
