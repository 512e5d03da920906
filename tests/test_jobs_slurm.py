"""jobs/predict_slurm.sh and jobs/train_slurm.sh under a real Slurm: a one-node cluster
on this machine (jobs/slurm_test_cluster.sh: munged, slurmctld, slurmd with 2 CPUs),
each script submitted with ``sbatch`` on 2 tasks; their results must equal those of the
same command under ``mpiexec -n 2``. Skipped unless Debian's slurm-wlm and munge are
installed (``bash jobs/install.sh --tests``) and the tests run as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlscale.parallel import world
from tests.snapshot_data import write_snapshots

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("sbatch", "srun", "sinfo", "slurmctld", "slurmd", "munged")
AVAILABLE = (hasattr(os, "geteuid") and os.geteuid() == 0
             and all(shutil.which(name) or Path(f"/usr/sbin/{name}").exists()
                     for name in DAEMONS) and Path("/etc/munge/munge.key").exists())
pytestmark = pytest.mark.skipif(not AVAILABLE, reason="needs root, slurm-wlm and munge "
                                "(bash jobs/install.sh --tests)")
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")


def _run(command: list[str], env: dict[str, str], timeout: float = 300):
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(environment for Slurm clients, work directory); the daemons end afterwards."""
    if world().size > 1:
        pytest.skip("starts its own 2-rank jobs")
    directory = tmp_path_factory.mktemp("slurm")
    script = str(ROOT / "jobs" / "slurm_test_cluster.sh")
    env = {**os.environ, "SLURM_CONF": str(directory / "slurm.conf"),
           "MLSCALE_VENV": sys.prefix, "OMP_NUM_THREADS": "1"}
    try:
        _run(["bash", script, "start", str(directory), "2"], env, timeout=60)
        yield env, directory
    finally:
        subprocess.run(["bash", script, "stop", str(directory)], timeout=60)


def _sbatch(env, directory: Path, name: str, *script_and_args: str) -> str:
    """Submit on 1 node, 2 tasks of 1 CPU, wait; returns the job's output."""
    output = directory / f"{name}.out"
    _run(["sbatch", "--wait", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2",
          "--cpus-per-task=1",
          "--time=5", f"--chdir={ROOT}", f"--output={output}", *script_and_args], env)
    return output.read_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-atom Al cell and an untrained model of twojmax 2 (5 features, 11 energies)."""
    import ase.build
    import ase.io
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    directory = tmp_path_factory.mktemp("tiny")
    settings = BispectrumSettings(twojmax=2).with_species(["Al"], None, None)
    torch.manual_seed(3)
    model = LDOSModel(ModelSettings(layers=(settings.n_features, 8, 11), activation="Tanh"))
    model.set_scaling(np.zeros(settings.n_features), np.ones(settings.n_features),
                      np.full(11, 0.05), np.full(11, 1e-3))
    save_model(directory / "tiny.safetensors", model,
               {"descriptors": settings.to_dict(), "energy_grid": EnergyGrid(-5, 1, 11).to_dict(),
                "temperature_K": 298.0, "species": ["Al"], "valence_electrons": {"Al": 3},
                "ecutrho_Ry": 40.0})
    ase.io.write(directory / "al.xyz", ase.build.bulk("Al", "fcc", a=4.05, cubic=True),
                 format="extxyz")
    return directory


def _physics(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text())
    return {key: value for key, value in results.items()
            if key.endswith(("_eV", "electrons", "_from_density")) or key in ("grid", "ranks")}


def test_predict_slurm_equals_mpiexec(cluster, tiny):
    from mlscale.io import read_openpmd

    env, directory = cluster
    structure, model = str(tiny / "al.xyz"), str(tiny / "tiny.safetensors")
    extra = ["--grid", "12", "12", "12"]
    log = _sbatch(env, directory, "predict", "jobs/predict_slurm.sh", structure, model,
                  str(directory / "predict_slurm"), *extra)
    _run([MPIEXEC, "-n", "2", "mlscale", "predict", structure, "--model", model, "--output",
          str(directory / "predict_mpiexec"), *extra], env)
    slurm, mpiexec = (_physics(directory / f"predict_{k}") for k in ("slurm", "mpiexec"))
    assert slurm["ranks"] == 2 and "band_energy_eV" in slurm, log
    assert slurm == mpiexec
    for name in ("dos.csv",):
        assert ((directory / "predict_slurm" / name).read_bytes()
                == (directory / "predict_mpiexec" / name).read_bytes())
    np.testing.assert_array_equal(read_openpmd(directory / "predict_slurm/density.h5", "Density"),
                                  read_openpmd(directory / "predict_mpiexec/density.h5", "Density"))


def test_train_slurm_equals_mpiexec(cluster):
    from safetensors.numpy import load_file

    env, directory = cluster
    data = directory / "snapshots"
    data.mkdir()
    train, validation = write_snapshots(data, 2), write_snapshots(data, 1, seed=1)
    config = data / "train.toml"
    config.write_text('epochs = 3\nbatch-size = 16\nlayers = [5, 8, 4]\n\n'
                      '[descriptors]\ntwojmax = 2\nspecies = ["Be"]\n')
    options = ["--train", *train, "--validation", *validation, "--energy-grid", "-5", "2.5",
               "4", "--temperature", "300", "--species", "Be", "--valence-electrons", "Be=2"]
    log = _sbatch(env, directory, "train", "jobs/train_slurm.sh", str(config), *options,
                  "-o", str(directory / "slurm.safetensors"))
    reference = _run([MPIEXEC, "-n", "2", "mlscale", "train", "--config", str(config),
                      "--threads", "1", "--distributed", "ddp", *options, "-o",
                      str(directory / "mpiexec.safetensors")], env).stdout

    def epochs(text: str) -> list[str]:
        return [" ".join(line.split()[:6]) for line in text.splitlines()
                if line.startswith("epoch")]

    assert len(epochs(log)) == 3 and epochs(log) == epochs(reference), (log, reference)
    slurm, mpiexec = (load_file(directory / f"{k}.safetensors") for k in ("slurm", "mpiexec"))
    assert sorted(slurm) == sorted(mpiexec)
    for name in slurm:
        np.testing.assert_array_equal(slurm[name], mpiexec[name], err_msg=name)
