"""mlscale.plan (against brute force and hand computations), `mlscale plan` / `mlscale bench`
on the command line, and the plan's predictions against a real run on this machine."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk

from mlscale.errors import MlscaleError
from mlscale.grid import Block, Decomposition
from mlscale.inference import slabs
from mlscale.plan import (BenchConstants, atoms_in_block, halo_atoms, halo_c, largest_block,
                          memory_MiB, neighbours_per_point, network_macs, plan, rank_load,
                          read_constants, smallest_ranks, time_s)

CONSTANTS = BenchConstants(
    machine="test", date="today", twojmax=10, layers=(91, 400, 400, 171), energies=171,
    startup_s=3.0, atom_s=2e-5, descriptor_point_s=2e-5, descriptor_neighbour_s=5e-7,
    network_mac_s=5e-11, electrons_point_energy_s=6e-9, output_point_s=1e-8,
    overhead_MiB=400.0, point_bytes=700.0, chunk_point_bytes=4000.0, atom_bytes=100.0,
    energy_point_s=4e-6, energy_point_bytes=120.0, energy_overhead_MiB=30.0)


def env():
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
    out.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return out


def mlscale(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mlscale", *map(str, args)], env=env(),
                          capture_output=True, text=True, timeout=timeout)


# --- which atoms a rank needs ---------------------------------------------------------------


def brute_force_near(pos_ac, cell_cv, grid_shape, block, cutoff):
    """Atoms with an image within ``cutoff`` of a point of the block (explicit images)."""
    points = (block.indices_g3().reshape(-1, 3) / np.array(grid_shape)) @ cell_cv
    near = set()
    for shift in itertools.product(range(-2, 3), repeat=3):
        images = pos_ac + np.array(shift) @ cell_cv
        for a, image in enumerate(images):
            if np.min(np.sum((points - image) ** 2, axis=1)) < cutoff**2:
                near.add(a)
    return near


@pytest.mark.parametrize("cubic", [True, False])
def test_halo_atoms_hold_every_atom_within_the_cutoff(cubic):
    atoms = bulk("Al", "fcc", a=4.05, cubic=cubic).repeat((4, 3, 3) if cubic else (6, 5, 5))
    atoms.rattle(0.3, seed=3)
    cell_cv = atoms.cell[:]
    shape = (16, 12, 12)
    frac_ac = atoms.positions @ np.linalg.inv(cell_cv)
    cutoff = 3.0
    for rank in (0, 5, 11):
        block = Decomposition(shape, 12).block(rank)
        chosen = set(halo_atoms(frac_ac, shape, block, halo_c(cell_cv, cutoff)).tolist())
        needed = brute_force_near(atoms.positions, cell_cv, shape, block, cutoff)
        assert needed <= chosen
        assert len(chosen) < len(atoms)  # a real selection, not everything


def test_halo_c_of_an_orthorhombic_cell():
    np.testing.assert_allclose(halo_c(np.diag([10.0, 20.0, 5.0]), 2.0), [0.2, 0.1, 0.4])


def test_atoms_in_block_partition_the_atoms():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.2, seed=1)
    frac_ac = atoms.get_scaled_positions()
    shape = (15, 15, 15)
    counts = [atoms_in_block(frac_ac, shape, b) for b in Decomposition(shape, 7).blocks()]
    assert sum(counts) == len(atoms)


def test_largest_block_is_the_largest():
    for shape, ranks in (((49, 49, 49), 8), ((10, 7, 3), 6), ((784, 784, 784), 4096),
                         ((30, 20, 11), 5)):
        sizes = [b.size for b in Decomposition(shape, ranks).blocks()] if ranks < 100 else [
            117649]
        assert largest_block(shape, ranks).size == max(sizes)


# --- counts by hand ----------------------------------------------------------------------------


def test_network_macs():
    assert network_macs((91, 400, 400, 171)) == 91 * 400 + 400 * 400 + 400 * 171 == 264800


def test_neighbours_per_point_of_fcc_aluminium():
    # 4 atoms per (4.05 Å)³, sphere of radius 4.67637 Å: 4/66.430125 · 428.366 = 25.793
    assert neighbours_per_point(4, 4.05**3, 4.67637) == pytest.approx(25.793, abs=2e-3)
    # and by counting around random points of a crystal
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((6, 6, 6))
    rng = np.random.default_rng(0)
    centre = atoms.cell.diagonal() / 2
    points = centre + rng.uniform(-2.025, 2.025, (400, 3))
    counts = [np.sum(np.linalg.norm(atoms.positions - p, axis=1) < 4.67637) for p in points]
    assert np.mean(counts) == pytest.approx(25.79, rel=0.03)


def test_rank_load_of_the_131072_atom_grid():
    # 784³ over 4096 ranks: 16 per axis, blocks of 49³ points; chunks of whole 49 x 49
    # planes: 8192 // 2401 = 3 planes = 7203 points, ceil(49 / 3) = 17 chunks
    load = rank_load((784, 784, 784), 4096, 8192)
    assert load.process_grid == (16, 16, 16)
    assert (load.points, load.min_points, load.chunk_points, load.chunks) == (117649, 117649,
                                                                               7203, 17)
    assert load.atoms_in_block is None


def test_rank_load_counts_atoms():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((8, 8, 8))  # 2048 atoms, 32.4 Å
    load = rank_load((64, 64, 64), 8, 4096, atoms.cell[:], atoms.get_scaled_positions(), 4.0)
    assert load.atoms_in_block == 2048 // 8  # a 16.2 Å cube of the crystal
    # the block's points span 0..15.69 Å per axis, widened by 4 Å: [-4, 19.69]. fcc sites
    # are (i, j, k)·2.025 Å with i + j + k even; i in -1..9 is 5 even and 6 odd values:
    # 5³ + 3·5·6² = 665 sites
    assert load.atoms_with_halo == 665


def test_slabs_split_planes_into_rows_when_a_plane_is_too_large():
    block = Block((2, 0, 5), (4, 100, 45))  # planes of 4000 points
    chunks = slabs(block, 1000)
    assert all(c.size <= 1000 for c in chunks) and len(chunks) == 2 * 4
    covered = np.concatenate([c.indices_g3().reshape(-1, 3) for c in chunks])
    np.testing.assert_array_equal(covered, block.indices_g3().reshape(-1, 3))  # C order


def test_memory_and_time_by_hand():
    memory = memory_MiB(CONSTANTS, 100000, 8000, 171, 1000)
    expected = 400 + (100000 * 700 + 8000 * 4000 + 1000 * 100) / 2**20
    assert memory["total"] == pytest.approx(expected)
    # 11 energies: 160 fewer float32 values per point
    assert memory_MiB(CONSTANTS, 100000, 8000, 11, 1000)["points"] == pytest.approx(
        100000 * (700 - 640) / 2**20)
    # with the energy phase the peak is the larger of the LDOS phase (60 bytes per point
    # for 11 energies, plus the chunk) and the energy phase (8 + 120 bytes per point)
    with_energy = memory_MiB(CONSTANTS, 100000, 8000, 11, 1000, energy=True)
    assert with_energy["total"] == pytest.approx(
        400 + 30 + (100000 * 60 + 8000 * 4000 + 1000 * 100) / 2**20)
    with_energy = memory_MiB(CONSTANTS, 10**6, 8000, 11, 1000, energy=True)
    assert with_energy["total"] == pytest.approx(400 + 30 + (10**6 * 128 + 1000 * 100) / 2**20)
    times = time_s(CONSTANTS, 100000, 25.0, 264800, 171, 1000, energy=True)
    assert times["descriptors"] == pytest.approx(100000 * (2e-5 + 25 * 5e-7))  # 3.25 s
    assert times["network"] == pytest.approx(100000 * 264800 * 5e-11)  # 1.324 s
    assert times["total"] == pytest.approx(3 + 0.02 + 3.25 + 1.324 + 0.1026 + 0.001 + 0.4)


def test_smallest_ranks():
    assert smallest_ranks(lambda p: 1000 / p <= 7, first=1) == 143

    def fits(p):
        if p == 143:
            raise MlscaleError("cannot split")
        return 1000 / p <= 7
    assert smallest_ranks(fits, first=100) == 144
    with pytest.raises(MlscaleError, match="fits the budget"):
        smallest_ranks(lambda p: False, first=1, tries=10)


def test_plan_finds_the_fewest_ranks_within_a_memory_budget():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True).repeat((8, 8, 8))
    args = (CONSTANTS, (140, 140, 140), atoms.cell[:], atoms.get_scaled_positions(),
            (91, 400, 400, 171), 171, 4.67637, 8192)
    result = plan(*args, memory_GiB=0.5)
    ranks = result["load"].ranks
    assert result["memory_MiB"]["total"] <= 512
    for fewer in range(1, ranks):
        try:
            assert plan(*args, ranks=fewer)["memory_MiB"]["total"] > 512
        except MlscaleError:
            pass  # a rank count the grid cannot be split into
    timed = plan(*args, time_budget_s=20.0)
    assert timed["time_s"]["total"] <= 20.0
    assert plan(*args, ranks=timed["load"].ranks - 1)["time_s"]["total"] > 20.0
    with pytest.raises(MlscaleError, match="below the fixed memory"):
        plan(*args, memory_GiB=0.3)


def test_constants_round_trip_and_bad_files(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({**CONSTANTS.to_dict(), "runs": []}))
    assert read_constants(path) == CONSTANTS
    with pytest.raises(MlscaleError, match="mlscale bench"):
        read_constants(tmp_path / "missing.json")
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(MlscaleError, match="not an mlscale-bench"):
        read_constants(path)
    path.write_text("{not json")
    with pytest.raises(MlscaleError, match="cannot read"):
        read_constants(path)


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def al_model(tmp_path_factory):
    """An untrained Al model: twojmax 10 (91 features), 91-400-400-171, ecutrho 100 Ry."""
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    torch.manual_seed(1)
    model = LDOSModel(ModelSettings(layers=(91, 400, 400, 171)))
    model.set_scaling(np.zeros(91), np.ones(91), np.full(171, 0.02), np.full(171, 1e-5))
    metadata = {"descriptors": BispectrumSettings(species=("Al",)).to_dict(),
                "energy_grid": EnergyGrid(-4.5, 0.1, 171).to_dict(), "temperature_K": 298.0,
                "species": ["Al"], "valence_electrons": {"Al": 3}, "ecutrho_Ry": 100.0}
    path = tmp_path_factory.mktemp("model") / "al.safetensors"
    save_model(path, model, metadata)
    return path


@pytest.fixture()
def constants_file(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(CONSTANTS.to_dict()))
    return path


def plan_cli(capsys, *args):
    """`mlscale plan ...` in this process: (exit status, stdout, stderr)."""
    from mlscale.cli import main

    status = main(["plan", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_plan_command_for_the_131072_atom_supercell(al_model, constants_file, capsys):
    from mlscale.examples import DATA

    status, out, err = plan_cli(capsys, "--supercell-of", DATA / "al_example.xyz", "--repeat",
                                16, 16, 16, "--model", al_model, "--ranks", 4096,
                                "--chunk-points", 8192, "--constants", constants_file, "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["grid"] == [784, 784, 784]  # QE's grid for 129.6 Å at 100 Ry
    assert result["atoms"] == 131072
    assert result["load"]["points"] == 117649
    assert 28 <= result["load"]["atoms_in_block"] <= 36  # 32 on average
    by_hand = memory_MiB(CONSTANTS, 117649, 7203, 171, 131072)["total"]
    assert result["memory_MiB"]["total"] == pytest.approx(by_hand)


def test_plan_command_bulk_crystal_and_errors(al_model, constants_file, capsys):
    crystal = ["--atoms", 2048, "--element", "Al", "--lattice", 4.05]
    status, out, err = plan_cli(capsys, *crystal, "--model", al_model, "--memory-per-rank", 0.6,
                                "--constants", constants_file)
    assert status == 0, err
    assert "the fewest with memory <= 0.6 GiB" in out
    for args, message in (([*crystal[:1], 2000, *crystal[2:], "--ranks", 2],
                           "not a cubic supercell"),
                          (["--ranks", 2], "give a structure"),
                          (crystal, "rank count or a memory or time budget"),
                          ([*crystal, "--ranks", 2, "--memory-per-rank", 1], "not both"),
                          ([*crystal, "--ranks", 2, "--constants", "/nonexistent/b.json"],
                           "run `mlscale bench`")):
        if "--constants" not in args:
            args = [*args, "--constants", constants_file]
        status, out, err = plan_cli(capsys, *args, "--model", al_model)
        assert status == 1 and err.startswith("mlscale: error:") and message in err, err


@pytest.mark.mpi(min_size=2)
def test_bench_refuses_several_ranks(al_model, capsys):
    from mlscale.cli import main

    assert main(["bench", "--model", str(al_model), "-o", "/nonexistent/b.json"]) == 1
    err = capsys.readouterr().err
    from mlscale.parallel import world

    if world().rank == 0:
        assert "one process" in err


# --- predictions against a real run ---------------------------------------------------------


@pytest.mark.slow
def test_plan_predicts_a_real_share_within_25_percent(al_model, tmp_path):
    """bench measures on the 256-atom supercell with shares of up to 117,649 points; the
    plan for 4 ranks (235,298 points per rank, twice the largest share) must match the
    real share's CPU time and peak memory within 25 %."""
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
    assert predicted["load"]["points"] == 98 * 49 * 49  # 98³ grid in 1 x 2 x 2 blocks
    child = subprocess.Popen([sys.executable, "-m", "mlscale", "predict", supercell, "--model",
                              al_model, "--descriptors", "native", "--only-rank", "3/4",
                              "--chunk-points", "8192", "-o", tmp_path / "share"], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, log
    cpu_s = usage.ru_utime + usage.ru_stime
    # the share's own high-water mark (results.json); wait4's ru_maxrss would include
    # this pytest process's memory, which Linux carries over at fork
    peak_MiB = json.loads((tmp_path / "share" / "results.json").read_text())[
        "peak_memory_per_rank_MiB"]
    print(f"predicted {predicted['time_s']['total']:.2f} s, {predicted['memory_MiB']['total']:.0f}"
          f" MiB; measured {cpu_s:.2f} s CPU, {peak_MiB:.0f} MiB")
    assert predicted["time_s"]["total"] == pytest.approx(cpu_s, rel=0.25)
    assert predicted["memory_MiB"]["total"] == pytest.approx(peak_MiB, rel=0.25)


@pytest.mark.mpi(min_size=2)
def test_ranks_with_different_chunk_counts_agree_with_one_rank(al_model):
    """Chunks are local work: ranks whose blocks split into different numbers of chunks
    must neither wait for each other per chunk nor change the result."""
    from mlscale import inference
    from mlscale.examples import builtin_example
    from mlscale.model import load_model
    from mlscale.parallel import self_comm, world

    comm = world()
    shape = (12, 12, 17)  # blocks of unequal size on 2, 3 and 4 ranks
    blocks = Decomposition(shape, comm.size).blocks()
    chunk = next(c for c in range(20, 400) if len({len(slabs(b, c)) for b in blocks}) > 1)
    model = load_model(al_model)
    metadata = model.info.metadata
    kwargs = dict(shape=shape, backend="native", chunk_points=chunk)
    ranks = inference.predict(builtin_example(), model, metadata, comm, **kwargs)
    one = inference.predict(builtin_example(), model, metadata, self_comm(), **kwargs)
    for key in ("fermi_energy_eV", "band_energy_eV", "number_of_electrons_from_density"):
        assert ranks[key] == pytest.approx(one[key], rel=1e-10), key
