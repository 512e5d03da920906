"""Peak memory per rank stays within the measured model of docs/scaling.md.

Each prediction runs in a fresh process (`mlscale predict`, one thread, glibc's heap
unfragmented) whose peak resident memory it reports (VmHWM, in results.json); two
sizes give the memory per local grid point. The bound is generous (1.5× the model) so that noise passes and a
regression (e.g. a float64 copy of the LDOS kept per point) does not. A fast model
(twojmax 2, a small network) keeps the runs short; the per-point memory does not
depend on the descriptors or the network, only on the energies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# The model of docs/scaling.md ("Memory model"), measured with 171 energies:
# peak MiB = OVERHEAD_MIB + POINT_BYTES·n + CHUNK_POINT_BYTES·c (LDOS phase) and, with the
# energy phase, ENERGY_OVERHEAD_MIB more and at least (8 + ENERGY_POINT_BYTES)·n.
OVERHEAD_MIB = 235.0
POINT_BYTES = 692.0  # at 171 energies; 4 bytes (one float32 LDOS value) per energy more or less
ENERGIES = 171
CHUNK_POINT_BYTES = 4447.0
ENERGY_OVERHEAD_MIB = 24.0
ENERGY_POINT_BYTES = 110.0
BOUND = 1.5
PSEUDO = "/usr/share/espresso/pseudo"


def model_bytes_per_point(energies: int, energy_phase: bool) -> float:
    ldos = POINT_BYTES + 4 * (energies - ENERGIES)
    return max(ldos, 8 + ENERGY_POINT_BYTES) if energy_phase else ldos


@pytest.fixture(scope="module")
def fast_model(tmp_path_factory):
    """Untrained Al models with twojmax 2 (5 features), 5-16-E, ecutrho 20 Ry; E = 171, 11."""
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    paths = {}
    for energies in (171, 11):
        torch.manual_seed(0)
        settings = BispectrumSettings(twojmax=2, species=("Al",))
        model = LDOSModel(ModelSettings(layers=(settings.n_features, 16, energies)))
        step = 17.0 / (energies - 1)
        model.set_scaling(np.zeros(settings.n_features), np.ones(settings.n_features),
                          np.full(energies, 0.02), np.full(energies, 1e-5))
        metadata = {"descriptors": settings.to_dict(),
                    "energy_grid": EnergyGrid(-4.5, step, energies).to_dict(),
                    "temperature_K": 298.0, "species": ["Al"], "valence_electrons": {"Al": 3},
                    "ecutrho_Ry": 20.0}
        paths[energies] = tmp_path_factory.mktemp("model") / f"fast{energies}.safetensors"
        save_model(paths[energies], model, metadata)
    return paths


def peak_mib(args, out) -> float:
    """Peak resident memory (MiB) of `mlscale predict ARGS -o OUT` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "MPI"))}
    # freed buffers back to the system at once: without it, what glibc's heap keeps of
    # freed chunks varies by tens of MiB between runs (docs/scaling.md), which at these
    # sizes would swamp the per-point memory
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="1048576")
    child = subprocess.Popen([sys.executable, "-m", "mlscale", "predict", *map(str, args),
                              "--descriptors", "native", "-o", str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = child.stdout.read()
    assert child.wait() == 0, log[-3000:]
    # the child's own high-water mark (VmHWM), which mlscale reports; not wait4's
    # ru_maxrss, which Linux carries over from this (large) pytest process at fork
    return json.loads((out / "results.json").read_text())["peak_memory_per_rank_MiB"]


def check(peaks: dict, energies: int, chunk: int, energy_phase: bool):
    (n1, m1), (n2, m2) = sorted(peaks.items())
    per_point = (m2 - m1) * 2**20 / (n2 - n1)
    model = model_bytes_per_point(energies, energy_phase)
    print(f"{per_point:.0f} bytes per point (model {model:.0f}); peaks {peaks} MiB")
    assert per_point <= BOUND * model
    overhead = OVERHEAD_MIB + (ENERGY_OVERHEAD_MIB if energy_phase else 0.0)
    for n, peak in peaks.items():
        assert peak <= BOUND * (overhead + (model * n + CHUNK_POINT_BYTES * min(n, chunk)) / 2**20)


def test_memory_per_local_point_of_a_share(fast_model, tmp_path):
    """One rank's share (--only-rank) at 32,768 and 131,072 points, 171 energies."""
    peaks = {}
    for share, n in (("0/8", 32768), ("0/2", 131072)):
        peaks[n] = peak_mib(["--model", fast_model[171], "--grid", 64, 64, 64, "--only-rank", share,
                             "--chunk-points", 8192], tmp_path / share.replace("/", "of"))
    check(peaks, 171, 8192, energy_phase=False)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(f"{PSEUDO}/Al.pz-vbc.UPF"), reason="no Al pseudopotential")
def test_memory_per_local_point_with_the_energy_phase(fast_model, tmp_path):
    """Whole predictions with the total energy, 11 energies: the energy phase, not the LDOS,
    sets the per-point memory; 32³ and 96³ points."""
    peaks = {}
    for n in (32, 96):
        peaks[n**3] = peak_mib(["--model", fast_model[11], "--grid", n, n, n, "--chunk-points", 8192,
                                "--pseudopotentials", PSEUDO],
                               tmp_path / f"g{n}")
    check(peaks, 11, 8192, energy_phase=True)


def test_peak_memory_is_the_process_own():
    """results.json's peak is the process's own high-water mark: a small process started
    from a large one (here: this one with 400 MiB touched) reports its own few tens of
    MiB, not the parent's memory that Linux's ru_maxrss carries across fork and exec."""
    ballast = np.ones(400 * 2**20 // 8)  # touched: 400 MiB resident in this process
    code = "from mlscale.inference import peak_rss_mib; print(peak_rss_mib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) < 200, child.stdout
    assert ballast.sum() == ballast.size
