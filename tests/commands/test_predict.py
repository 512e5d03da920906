"""End-to-end `mlscale predict` / `mlscale electrons` under mpiexec: rank-count
invariance and one clear error line (no hang, no traceback) for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def mlscale(args, ranks=1, timeout=300, cwd=None):
    """Run the CLI as a fresh MPI job; returns CompletedProcess (text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
    env["OMP_NUM_THREADS"] = "1"
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mlscale", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd)


@pytest.fixture(scope="module")
def tiny_model(be2, tmp_path_factory):
    """An untrained Be model whose output stays near Be2's mean LDOS (sensible DOS)."""
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    torch.manual_seed(7)
    descriptors = np.load(be2 / "Be_snapshot0.in.npy")[..., 3:].reshape(-1, 91)
    ldos = np.load(be2 / "Be_snapshot0.out.npy").reshape(-1, 11)
    model = LDOSModel(ModelSettings(layers=(91, 16, 11), activation="Tanh"))
    model.set_scaling(descriptors.mean(0), descriptors.std(0) + 1e-12, ldos.mean(0),
                      0.05 * ldos.std(0) + 1e-12)
    metadata = {
        "descriptors": BispectrumSettings(species=("Be",)).to_dict(),
        "energy_grid": EnergyGrid(-5.0, 2.5, 11).to_dict(),
        "temperature_K": 298.0, "species": ["Be"], "valence_electrons": {"Be": 2},
        "ecutrho_Ry": 160.0,
    }
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, model, metadata)
    return path


@pytest.fixture(scope="module")
def rank_runs(be2, tiny_model, tmp_path_factory):
    """The same prediction on 1, 2 and 3 ranks (LAMMPS, the reference backend)."""
    out = {}
    for ranks in (1, 2, 3):
        directory = tmp_path_factory.mktemp(f"predict{ranks}")
        run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", tiny_model,
                       "--output", directory, "--descriptors", "lammps"], ranks=ranks)
        assert run.returncode == 0, run.stderr[-3000:]
        out[ranks] = directory
    return out


def test_predict_writes_results_dos_and_density(rank_runs):
    directory = rank_runs[1]
    results = json.loads((directory / "results.json").read_text())
    for key in ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV",
                "number_of_electrons", "atoms", "grid", "ranks", "timings_s"):
        assert key in results
    assert results["grid"] == [18, 18, 27]  # QE's grid for Be2 at ecutrho 160 Ry
    assert results["number_of_electrons_from_density"] == pytest.approx(4.0, rel=1e-8)
    dos = np.loadtxt(directory / "dos.csv", delimiter=",", skiprows=1)
    assert dos.shape == (11, 2)
    comments = [line for line in (directory / "dos.csv").read_text().splitlines()
                if line.startswith("#")]
    assert comments == [f"# fermi_energy_eV={results['fermi_energy_eV']:.12g}"]
    assert not list(directory.glob("*.tmp*")), "temporary files left behind"


def test_results_do_not_depend_on_rank_count(rank_runs):
    from mlscale.io.openpmd_io import read_openpmd

    reference = json.loads((rank_runs[1] / "results.json").read_text())
    density_ref = read_openpmd(rank_runs[1] / "density.h5", "Density")
    assert density_ref.shape == (18, 18, 27)
    for ranks in (2, 3):
        results = json.loads((rank_runs[ranks] / "results.json").read_text())
        assert results["ranks"] == ranks
        # the work counts: one density pass (or a second one at μ), the estimate's points
        assert results["counts"]["density_passes"] in (1, 2)
        assert 0 < results["counts"]["estimate_points"] < 18 * 18 * 27 / ranks
        for key in ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV",
                    "number_of_electrons"):
            assert results[key] == pytest.approx(reference[key], rel=1e-8, abs=1e-12), key
        density = read_openpmd(rank_runs[ranks] / "density.h5", "Density")
        np.testing.assert_allclose(density, density_ref, rtol=1e-6, atol=1e-12)
        dos = np.loadtxt(rank_runs[ranks] / "dos.csv", delimiter=",", skiprows=1)
        dos_ref = np.loadtxt(rank_runs[1] / "dos.csv", delimiter=",", skiprows=1)
        np.testing.assert_allclose(dos, dos_ref, rtol=1e-8)


def test_electrons_command_matches_on_ranks(be2, tmp_path):
    args = ["electrons", be2 / "Be_snapshot0.out.npy", "--energy-grid", -5, 2.5, 11,
            "--temperature", 298, "--electrons", 4, "--cell-from", be2 / "Be_snapshot0.out"]
    numbers = []
    for ranks in (1, 3):
        run = mlscale(args, ranks=ranks)
        assert run.returncode == 0, run.stderr
        numbers.append(json.loads(run.stdout))
    for key in ("fermi_energy_eV", "band_energy_eV", "number_of_electrons"):
        assert numbers[1][key] == pytest.approx(numbers[0][key], rel=1e-10)
    assert numbers[0]["number_of_electrons_from_density"] == pytest.approx(4.0, rel=1e-10)


# --- bad input: one error line, non-zero exit on every rank, no hang --------------------


def assert_clean_failure(run, pattern):
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("mlscale: error:")]
    assert len(lines) == 1, run.stderr[-3000:]
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in run.stderr


@pytest.fixture()
def be2_atoms(be2):
    from mlscale.io.structure import read_structure

    return read_structure(be2 / "Be_snapshot0.out")


def test_missing_structure_file(tiny_model, tmp_path):
    run = mlscale(["predict", tmp_path / "nope.xyz", "--model", tiny_model, "-o", tmp_path],
                  ranks=2)
    assert_clean_failure(run, "nope.xyz")


def test_unknown_species(tiny_model, tmp_path):
    from ase.build import bulk

    path = tmp_path / "al.xyz"
    bulk("Al", "fcc", a=4.05, cubic=True).write(path, format="extxyz")
    run = mlscale(["predict", path, "--model", tiny_model, "-o", tmp_path / "o"], ranks=2)
    assert_clean_failure(run, "Al")


def test_atoms_too_close(be2_atoms, tiny_model, tmp_path):
    atoms = be2_atoms.copy()
    atoms.positions[1] = atoms.positions[0] + [0.3, 0, 0]
    path = tmp_path / "close.xyz"
    atoms.write(path, format="extxyz")
    run = mlscale(["predict", path, "--model", tiny_model, "-o", tmp_path / "o"], ranks=2)
    assert_clean_failure(run, "0.3")


@pytest.mark.parametrize("damage", ["truncate", "version", "garbage"])
def test_corrupt_or_foreign_model(be2, tiny_model, tmp_path, damage):
    data = tiny_model.read_bytes()
    bad = tmp_path / "bad.safetensors"
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"\x00" * 64 + data[64:])
    else:
        import safetensors.torch

        from mlscale.model import METADATA_KEY

        tensors = safetensors.torch.load(data)
        with open(tiny_model, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        meta = json.loads(header["__metadata__"][METADATA_KEY])
        meta["format_version"] = 99
        bad.write_bytes(safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(meta)}))
    run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", bad, "-o", tmp_path / "o"],
                  ranks=2)
    assert_clean_failure(run, "bad.safetensors")


def test_ldos_energy_count_mismatch(be2, tmp_path):
    run = mlscale(["electrons", be2 / "Be_snapshot0.out.npy", "--energy-grid", -5, 2.5, 12,
                   "--temperature", 298, "--electrons", 4, "--cell-from",
                   be2 / "Be_snapshot0.out"], ranks=2)
    assert_clean_failure(run, "12")


def test_nan_in_ldos(be2, tmp_path):
    ldos = np.load(be2 / "Be_snapshot0.out.npy")
    ldos[17, 17, 26, 3] = np.nan  # lands on the last rank's block only
    path = tmp_path / "nan.out.npy"
    np.save(path, ldos)
    run = mlscale(["electrons", path, "--energy-grid", -5, 2.5, 11, "--temperature", 298,
                   "--electrons", 4, "--cell-from", be2 / "Be_snapshot0.out"], ranks=3)
    assert_clean_failure(run, "NaN")


def test_array_that_is_not_a_grid(be2, tmp_path):
    path = tmp_path / "flat.npy"
    np.save(path, np.ones((10, 11)))
    run = mlscale(["electrons", path, "--energy-grid", -5, 2.5, 11, "--temperature", 298,
                   "--electrons", 4, "--cell-from", be2 / "Be_snapshot0.out"], ranks=2)
    assert_clean_failure(run, "flat.npy")


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_descriptors_command_reproduces_mala_on_two_ranks(be2, tmp_path, suffix):
    out = tmp_path / f"be2{suffix}"
    run = mlscale(["descriptors", be2 / "Be_snapshot0.out", "--grid", 18, 18, 27, "-o", out],
                  ranks=2)
    assert run.returncode == 0, run.stderr[-3000:]
    if suffix == ".npy":
        ours = np.load(out)
    else:
        from mlscale.io.openpmd_io import read_openpmd

        ours = read_openpmd(out, "Bispectrum")
    reference = np.load(be2 / "Be_snapshot0.in.npy")[..., 3:]  # MALA's, float32
    assert ours.shape == (18, 18, 27, 91)
    scale = np.abs(reference).max(axis=(0, 1, 2))
    assert np.all(np.abs(ours - reference) <= 1e-6 * scale)


def test_native_descriptors_give_the_same_prediction(be2, tiny_model, rank_runs, tmp_path):
    """Issue 6: end-to-end predict with the native kernel equals the LAMMPS one (1e-8)."""
    run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", tiny_model, "--output",
                   tmp_path, "--descriptors", "native", "--chunk-points", 2000], ranks=2)
    assert run.returncode == 0, run.stderr[-3000:]
    native = json.loads((tmp_path / "results.json").read_text())
    reference = json.loads((rank_runs[1] / "results.json").read_text())
    assert reference["descriptor_backend"] == "lammps" and native["descriptor_backend"] == "native"
    for key in ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV",
                "number_of_electrons"):
        assert native[key] == pytest.approx(reference[key], rel=1e-8, abs=1e-12), key


def test_only_rank_shares_reproduce_the_full_run(be2, tiny_model, rank_runs, tmp_path):
    """Issue 7: the shares of a 3-rank job, each run alone on one process, give the full
    run's DOS (summed) and, at the full run's Fermi level, its density blocks."""
    from mlscale.io.openpmd_io import read_openpmd

    full = json.loads((rank_runs[3] / "results.json").read_text())
    density_full = read_openpmd(rank_runs[3] / "density.h5", "Density")
    density = np.full((18, 18, 27), np.nan)
    dos = 0.0
    for rank in range(3):
        out = tmp_path / f"share{rank}"
        run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", tiny_model, "--output",
                       out, "--descriptors", "native", "--only-rank", f"{rank}/3",
                       "--fermi-energy", repr(full["fermi_energy_eV"])])
        assert run.returncode == 0, run.stderr[-3000:]
        share = json.loads((out / "results.json").read_text())["share"]
        index = tuple(slice(a, b) for a, b in zip(share["block_start"], share["block_stop"]))
        density[index] = np.load(out / "density_block.npy")
        dos = dos + np.loadtxt(out / "dos.csv", delimiter=",", skiprows=1)[:, 1]
    dos_full = np.loadtxt(rank_runs[3] / "dos.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(dos, dos_full, rtol=1e-8)
    np.testing.assert_allclose(density, density_full, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("ranks", [1, 2])
def test_cube_format_reads_back_with_ase(be2, tiny_model, tmp_path, ranks):
    """--format cube: ASE's own cube reader (independent of mlscale) integrates the
    density (electrons/Bohr³) to the electron count; no density.h5 is written."""
    from ase.io.cube import read_cube_data
    from ase.units import Bohr

    out = tmp_path / "cube"
    run = mlscale(["predict", be2 / "Be_snapshot0.out", "--model", tiny_model, "--output",
                   out, "--descriptors", "lammps", "--format", "cube"], ranks=ranks)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (out / "density.h5").exists()
    data, atoms = read_cube_data(str(out / "density.cube"))
    assert data.shape == (18, 18, 27)
    assert len(atoms) == 2
    electrons = data.sum() * atoms.get_volume() / Bohr**3 / data.size
    assert electrons == pytest.approx(4.0, rel=1e-5)  # cube values: 6 significant digits
    results = json.loads((out / "results.json").read_text())
    assert "density.cube" in results["output_files"]
