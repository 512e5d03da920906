"""mlscale.costmodel.measure: the fits recover known constants from runs made up from
them, and `mlscale bench` + `mlscale plan` predict a real share of a larger job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlscale.costmodel.measure import (
    BenchPlan,
    bench_supercell,
    energy_costs,
    fit_runs,
    split_neighbours,
)
from mlscale.errors import MlscaleError


def env():
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
    out.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return out


def mlscale(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mlscale", *map(str, args)], env=env(),
                          capture_output=True, text=True, timeout=timeout)


# --- fits of made-up runs --------------------------------------------------------------------

TRUE = {"startup_s": 2.5, "descriptor_point_s": 3e-5, "network_mac_s": 4e-11,
        "electrons_point_energy_s": 7e-9, "output_point_s": 2e-8, "overhead_MiB": 250.0,
        "point_bytes": 690.0, "chunk_point_bytes": 4400.0}
MACS, ENERGIES = 264800, 171


def made_up_run(points: int, chunk_points: int, noise: float = 0.0) -> dict:
    """A share run whose CPU times and peak follow the model exactly (``noise``: relative
    error added to the startup only)."""
    phases = {"descriptors": TRUE["descriptor_point_s"] * points,
              "network": TRUE["network_mac_s"] * MACS * points,
              "electrons": TRUE["electrons_point_energy_s"] * ENERGIES * points,
              "output": TRUE["output_point_s"] * points}
    peak = (TRUE["overhead_MiB"] + (TRUE["point_bytes"] * points
                                    + TRUE["chunk_point_bytes"] * chunk_points) / 2**20)
    return {"points": points, "chunk_points": chunk_points, "cpu_phases_s": phases,
            "cpu_s": TRUE["startup_s"] * (1 + noise) + sum(phases.values()), "peak_MiB": peak}


def test_fit_runs_recovers_the_constants_the_runs_were_made_from():
    runs = [made_up_run(n, 8192, noise) for n, noise in ((25000, 0.01), (50000, 0.0),
                                                         (100000, -0.02))]
    clean = [made_up_run(50000, 8192), made_up_run(100000, 8192), made_up_run(100000, 32768)]
    fit = fit_runs(runs, clean, MACS, ENERGIES)
    assert set(fit) == set(TRUE)
    for name, value in TRUE.items():
        assert fit[name] == pytest.approx(value, rel=1e-9), name  # startup: median noise 0


def test_fit_runs_counts_a_second_density_pass_once():
    """A share whose solved Fermi level fell outside its first window made a second pass
    (results.json counts): its descriptor and network time is (2·points + estimate) and
    its electrons time 2× the one-pass model's; the fit scales it back and recovers the
    constants, where taking it at face value would not."""
    def two_pass(run, estimate):
        phases = run["cpu_phases_s"]
        factor = (2 * run["points"] + estimate) / (run["points"] + estimate)
        added = 0.0
        for phase, f in (("descriptors", factor), ("network", factor), ("electrons", 2.0)):
            added += phases[phase] * (f - 1)
            phases[phase] *= f
        run["cpu_s"] += added
        run["counts"] = {"density_passes": 2, "estimate_points": estimate}
        return run

    runs = [made_up_run(n, 8192) for n in (25000, 50000, 100000)]
    for run in runs:
        run["counts"] = {"density_passes": 1, "estimate_points": run["points"] // 27}
    runs[0] = two_pass(runs[0], 25000 // 27)
    clean = [made_up_run(50000, 8192), made_up_run(100000, 8192), made_up_run(100000, 32768)]
    fit = fit_runs(runs, clean, MACS, ENERGIES)
    for name, value in TRUE.items():
        assert fit[name] == pytest.approx(value, rel=1e-9), name
    for run in runs:
        del run["counts"]
    assert fit_runs(runs, clean, MACS, ENERGIES)["descriptor_point_s"] != pytest.approx(
        TRUE["descriptor_point_s"], rel=1e-3)


def test_fit_runs_never_gives_negative_slopes():
    runs = [made_up_run(n, 8192) for n in (25000, 50000, 100000)]
    for run in runs:
        run["cpu_phases_s"]["output"] = 1.0 - run["points"] * 1e-6  # falls with the points
    clean = [made_up_run(50000, 8192), made_up_run(100000, 8192), made_up_run(100000, 32768)]
    clean[2]["peak_MiB"] = clean[1]["peak_MiB"] - 1.0  # a larger chunk that costs less
    fit = fit_runs(runs, clean, MACS, ENERGIES)
    assert fit["output_point_s"] == 0.0 and fit["chunk_point_bytes"] == 0.0


def test_split_neighbours_separates_the_cost_per_neighbour():
    # cost per point a + b·ν; the in-process timing at ν1, ν2 carries any common factor
    a, b, nu1, nu2 = 1e-5, 4e-7, 25.8, 25.8 / 1.3**3
    timing = {"neighbours": [nu1, nu2], "seconds": [3.0 * (a + b * nu1), 3.0 * (a + b * nu2)]}
    per_point, per_neighbour = split_neighbours(a + b * nu1, timing)
    assert per_point == pytest.approx(a, rel=1e-12)
    assert per_neighbour == pytest.approx(b, rel=1e-12)


def test_bench_supercell_holds_twice_the_points():
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    big, shape, reps = bench_supercell(atoms, (18, 18, 18), 250000)
    # (2 · 250,000 / 18³)^(1/3) = 4.39: 5 repetitions, 90³ = 729,000 points
    assert (reps, shape, len(big)) == (5, (90, 90, 90), 4 * 125)
    assert np.prod(shape) >= 2 * 250000 > np.prod([18 * 4] * 3)


def test_bench_plan_refuses_too_few_points():
    with pytest.raises(MlscaleError, match="--points must be >= 1000"):
        BenchPlan(points=999)
    with pytest.raises(MlscaleError, match="--chunk-points positive"):
        BenchPlan(points=1000, chunk_points=0)
    with pytest.raises(MlscaleError, match="or neither"):
        BenchPlan(pseudopotentials_dir="/some/dir")


def test_the_cost_model_does_not_import_the_pipeline():
    code = ("import sys, mlscale.costmodel.measure, mlscale.costmodel; "
            "print(sorted(m for m in sys.modules if m in ('mlscale.inference', 'torch')))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, env=env())
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "[]"


# --- predictions against a real run ---------------------------------------------------------


@pytest.mark.slow
def test_plan_predicts_a_real_share(al_model, tmp_path):
    """bench measures on the 256-atom supercell with shares of up to 117,649 points; the
    plan for 4 ranks (250,000 points per rank, about twice the largest share) must match the
    real share's CPU time within 40 % and its peak memory within 25 %."""
    from mlscale.examples import DATA
    from mlscale.io.structure import read_structure, write_structure

    constants = tmp_path / "bench.json"
    run = mlscale("bench", "--model", al_model, "--points", 120000, "-o", constants,
                  timeout=1200)
    assert run.returncode == 0, run.stderr
    supercell = tmp_path / "al256.xyz"
    write_structure(supercell, read_structure(DATA / "al_example.xyz").repeat((2, 2, 2)))
    planned = mlscale("plan", supercell, "--model", al_model, "--ranks", 4, "--chunk-points",
                      8192, "--constants", constants, "--json")
    assert planned.returncode == 0, planned.stderr
    predicted = json.loads(planned.stdout)
    assert predicted["load"]["points"] == 100 * 50 * 50  # pw.x's 100³ grid, 1 x 2 x 2 blocks
    # The share twice, its smaller CPU time counted: on a shared VM other load only adds
    # time. Time within 40 %: on the 2-core VM (2026-12-03, otherwise idle) three runs of
    # this test gave measured/planned 0.72, 1.35 and 0.86 — the bench's and the share's
    # CPU seconds each moved by ±20 % from run to run; memory stays within 25 %.
    cpu_runs = []
    for attempt in range(2):
        share = tmp_path / f"share{attempt}"
        child = subprocess.Popen([sys.executable, "-m", "mlscale", "predict", supercell,
                                  "--model", al_model, "--descriptors", "native",
                                  "--only-rank", "3/4", "--chunk-points", "8192", "-o", share],
                                 env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        log = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, log
        cpu_runs.append(usage.ru_utime + usage.ru_stime)
    cpu_s = min(cpu_runs)
    # the share's own high-water mark (results.json); wait4's ru_maxrss would include
    # this pytest process's memory, which Linux carries over at fork
    peak_MiB = json.loads((tmp_path / "share0" / "results.json").read_text())[
        "peak_memory_per_rank_MiB"]
    print(f"predicted {predicted['time_s']['total']:.2f} s, {predicted['memory_MiB']['total']:.0f}"
          f" MiB; measured {cpu_runs} s CPU, {peak_MiB:.0f} MiB")
    assert predicted["time_s"]["total"] == pytest.approx(cpu_s, rel=0.4)
    assert predicted["memory_MiB"]["total"] == pytest.approx(peak_MiB, rel=0.25)


def test_energy_costs_measure_on_a_repeated_grid_that_holds_a_smaller_sphere():
    """The 21³ grid of the built-in example holds the 20 Ry sphere, its 42³ repeat only
    18.6 Ry (an even grid's G box): the bench measures the energy phase anyway."""
    from mlscale.energy import find_pseudopotentials
    from mlscale.examples import builtin_example
    from mlscale.grid import Grid

    pseudo = "/usr/share/espresso/pseudo"
    if not os.path.exists(f"{pseudo}/Al.pz-vbc.UPF"):
        pytest.skip("no Al pseudopotential")
    atoms = builtin_example().repeat((2, 2, 2))
    costs = energy_costs(atoms, Grid(np.array(atoms.cell[:]), (42, 42, 42)),
                         find_pseudopotentials(pseudo, {"Al"}), 20.0)
    # the traced peak per point of the energy terms, fixed part included: the FFT's work
    # arrays (16.2 bytes per point) and, on this coarse mesh (a long real-space Ewald
    # cutoff), ~4 MiB of the Ewald sum's periodic images and pairs: 71 bytes per point
    # (before issue 16: 99 + those); on the shipped model's 90³ bench grid 17.3
    assert costs["energy_point_s"] > 0 and 16 < costs["energy_point_bytes"] < 90
