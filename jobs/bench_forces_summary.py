"""Medians of ``jobs/bench_forces_compare.sh``'s runs: CPU seconds per phase, energy only
and with forces, before and after, and the forces/energy ratio of each.

    python jobs/bench_forces_summary.py OUT_DIR
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys


def load(out: str, version: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(out, f"{version}.*.json"))):
        if os.path.getsize(path) == 0:  # a run still going (or failed)
            continue
        with open(path) as f:
            runs.extend(json.load(f)["runs"])
    return runs


def summary(runs: list[dict]) -> dict:
    """Median CPU s per phase and of the total, per kind of run; median ratio of the
    pairs (forces / energy of the same repeat)."""
    result: dict = {"repeats": len(runs)}
    for kind in ("energy", "forces"):
        phases = sorted({p for run in runs for p in run[kind]["phases_cpu_s"]})
        result[kind] = {p: statistics.median(run[kind]["phases_cpu_s"].get(p, 0.0)
                                             for run in runs) for p in phases}
        result[kind]["total_cpu"] = statistics.median(
            sum(run[kind]["phases_cpu_s"].values()) for run in runs)
        result[kind]["wall"] = statistics.median(run[kind]["wall_s"] for run in runs)
    ratios = [sum(run["forces"]["phases_cpu_s"].values())
              / sum(run["energy"]["phases_cpu_s"].values()) for run in runs]
    result["ratio_cpu"] = sorted(round(r, 2) for r in ratios)
    result["ratio_cpu_median"] = statistics.median(ratios)
    return result


def main(out: str) -> None:
    loads = []
    for path in sorted(glob.glob(os.path.join(out, "*.load"))):
        with open(path) as f:
            loads += [float(line.split("load average:")[1].split(",")[0]) for line in f]
    report = {v: summary(load(out, v)) for v in ("before", "after")}
    report["load_average_1min"] = [min(loads), max(loads)] if loads else None
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
