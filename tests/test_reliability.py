"""Faults without data loss (issue 14): writes that fail raise and leave nothing under the
final name, a run's output directory is complete or visibly incomplete, signals end all
ranks, and inconsistent inputs are refused before the work. docs/reliability.md lists
the cases."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.grid import DistributedGrid, Grid
from mlscale.io import atomic as atomic_module
from mlscale.io import read_openpmd, write_json_atomic, write_npy_distributed, write_openpmd
from mlscale.io.run_directory import check_run_directory, claim_directory
from mlscale.parallel import self_comm

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


# -- a small full filesystem -----------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs mounted for the test (root and a working ``mount`` only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _dgrid(shape=(40, 40, 40)) -> DistributedGrid:
    return DistributedGrid(Grid(np.eye(3) * 10.0, shape), self_comm())


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- 1. writers raise before the rename --------------------------------------------------
def test_text_write_on_a_full_filesystem_names_the_file_and_keeps_the_old_one(small_fs):
    target = small_fs / "results.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(MlscaleError, match=f"cannot write {target}.*No space left"):
        write_json_atomic(target, {"big": "x" * 400_000})
    assert _names(small_fs) == ["results.json"]
    assert target.read_text().strip().startswith("{") and '"old": 1' in target.read_text()


def test_injected_oserror_at_fsync_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic_module.os, "fsync", failing_fsync)
    target = tmp_path / "dos.csv"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: Input/output error"):
        atomic_module.write_text_atomic(target, "energy_eV,dos_per_eV\n")
    assert _names(tmp_path) == []


def test_injected_enospc_while_writing_says_disk_full(tmp_path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: No space.*disk full"):
        with atomic_module.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _names(tmp_path) == []


def test_openpmd_write_too_large_for_the_filesystem_is_refused_before_hdf5(small_fs):
    dgrid = _dgrid()  # 40³ float64 = 500 KiB > 256 KiB
    target = small_fs / "density.h5"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: it needs 0.5 MiB"):
        write_openpmd(target, "Density", np.ones(dgrid.local_shape), dgrid)
    assert _names(small_fs) == []


def test_openpmd_write_that_hdf5_fails_silently_is_detected_by_reading_back(small_fs):
    """Without the free-space check HDF5 runs into the full disk, prints its error stack
    and returns normally; the read-back must catch it (in a subprocess: HDF5's state)."""
    script = textwrap.dedent(f"""
        import numpy as np
        import mlscale.io.openpmd_io as o
        from mlscale.errors import MlscaleError
        from mlscale.grid import DistributedGrid, Grid
        from mlscale.parallel import self_comm
        o.check_free_space = lambda path, nbytes: None
        dgrid = DistributedGrid(Grid(np.eye(3) * 10.0, (40, 40, 40)), self_comm())
        try:
            o.write_openpmd({str(small_fs / 'density.h5')!r}, "Density",
                            np.ones(dgrid.local_shape), dgrid)
        except MlscaleError as error:
            print("MLSCALE-ERROR", error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert f"MLSCALE-ERROR cannot write {small_fs / 'density.h5'}: HDF5 failed" in done.stdout
    assert _names(small_fs) == []


def test_openpmd_write_verifies_a_good_file(tmp_path):
    dgrid = _dgrid((6, 5, 4))
    values_b = np.random.default_rng(3).random(dgrid.local_shape)
    write_openpmd(tmp_path / "d.h5", "Density", values_b, dgrid)
    np.testing.assert_array_equal(read_openpmd(tmp_path / "d.h5", "Density"), values_b)
    assert _names(tmp_path) == ["d.h5"]


def test_npy_write_on_a_full_filesystem_names_the_file(small_fs, monkeypatch):
    dgrid = _dgrid()
    target = small_fs / "descriptors.npy"
    with pytest.raises(MlscaleError, match=f"cannot write {target}: it needs"):
        write_npy_distributed(target, np.ones(dgrid.local_shape), dgrid)
    assert _names(small_fs) == []
    # past the free-space check (another writer filled the disk meanwhile): pwrite fails
    import mlscale.io.numpy_io as numpy_io

    monkeypatch.setattr(numpy_io, "check_free_space", lambda path, nbytes: None)
    with pytest.raises(MlscaleError, match=f"cannot write {target}: No space.*disk full"):
        write_npy_distributed(target, np.ones(dgrid.local_shape), dgrid)
    assert _names(small_fs) == []


# -- 2. a run claims its output directory ---------------------------------------------------
# A wrapper around the CLI for fault injection from outside: it prints OUTPUT-PHASE when the
# output phase starts (with its rank and pid), may hold there (HOLD seconds; on rank
# HOLD_RANK only if set), and slows each rename (SLOW seconds) so that random kill moments
# spread over the whole output phase.
WRAPPER = textwrap.dedent("""
    import os, sys, time
    import mlscale.io.atomic as atomic
    import mlscale.io.numpy_io as numpy_io
    import mlscale.io.openpmd_io as openpmd_io
    import mlscale.output as output
    from mlscale.cli import main

    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    os.write(1, f"STARTED {rank} {os.getpid()}\\n".encode())  # one write: whole lines
    hold, slow = float(os.environ.get("HOLD", 0)), float(os.environ.get("SLOW", 0))
    if int(os.environ.get("HOLD_RANK", rank)) != rank:
        hold = 0.0
    commit, write_fields = atomic.commit, output.write_fields

    def slow_commit(tmp, path):
        time.sleep(slow)
        commit(tmp, path)
        time.sleep(slow)

    def marked_write_fields(*args, **kwargs):
        sys.stdout.flush()
        os.write(1, f"OUTPUT-PHASE {rank} {os.getpid()}\\n".encode())
        time.sleep(hold)
        write_fields(*args, **kwargs)

    atomic.commit = numpy_io.commit = openpmd_io.commit = slow_commit
    output.write_fields = marked_write_fields
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-atom Al cell and an untrained 5-8-11 model (twojmax 2) whose LDOS is near
    0.05/(eV·Å³): a 12³-grid prediction takes about a second."""
    import ase.build
    import ase.io
    import torch

    from mlscale.config import BispectrumSettings, EnergyGrid, ModelSettings
    from mlscale.model import LDOSModel, save_model

    directory = tmp_path_factory.mktemp("tiny")
    settings = BispectrumSettings(twojmax=2).with_species(["Al"], None, None)
    torch.manual_seed(1)
    model = LDOSModel(ModelSettings(layers=(settings.n_features, 8, 11), activation="Tanh"))
    model.set_scaling(np.zeros(settings.n_features), np.ones(settings.n_features),
                      np.full(11, 0.05), np.full(11, 1e-3))
    metadata = {"descriptors": settings.to_dict(), "energy_grid": EnergyGrid(-5, 1, 11).to_dict(),
                "temperature_K": 298.0, "species": ["Al"], "valence_electrons": {"Al": 3},
                "ecutrho_Ry": 40.0}
    save_model(directory / "tiny.safetensors", model, metadata)
    ase.io.write(directory / "al.xyz", ase.build.bulk("Al", "fcc", a=4.05, cubic=True),
                 format="extxyz")
    return {"model": directory / "tiny.safetensors", "structure": directory / "al.xyz",
            "dir": directory}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **{k: str(v) for k, v in extra.items()})
    return env


def _predict_command(tiny, out, *extra) -> list[str]:
    return [sys.executable, "-c", WRAPPER, "predict", str(tiny["structure"]), "--model",
            str(tiny["model"]), "--grid", "12", "12", "12", "-o", str(out), *map(str, extra)]


def _predict(tiny, out, *extra, timeout=120, **env) -> subprocess.CompletedProcess:
    return subprocess.run(_predict_command(tiny, out, *extra), capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=ROOT)


def test_rerun_removes_the_previous_results_and_stale_temporaries_and_says_so(tiny, tmp_path):
    out = tmp_path / "run"
    first = _predict(tiny, out)
    assert first.returncode == 0, first.stderr[-2000:]
    assert check_run_directory(out) == "complete"
    before = (out / "results.json").read_bytes()
    bad = _predict(tiny, out, "--grid", "0", "12", "12")  # fails in the checks: nothing removed
    assert bad.returncode == 1 and "removed" not in bad.stderr
    assert (out / "results.json").read_bytes() == before
    (out / f"{atomic_module.TEMPORARY_PREFIX}999-dead-density.h5").write_bytes(b"stale")
    rerun = _predict(tiny, out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (f"{out}: removed the previous run's results.json, dos.csv, density.h5, density.pmd, 1 temporary "
            "file(s) of interrupted runs") in rerun.stderr
    assert _names(out) == [".mlscale-lock", "density.h5", "density.pmd", "dos.csv", "results.json"]
    results = json.loads((out / "results.json").read_text())
    assert results["output_files"]["dos.csv"]["sha256"] == hashlib.sha256(
        (out / "dos.csv").read_bytes()).hexdigest()
    assert check_run_directory(out) == "complete"


def _start(tiny, out, **env) -> subprocess.Popen:
    """Start a wrapped predict; return once it printed OUTPUT-PHASE (or ended)."""
    proc = subprocess.Popen(_predict_command(tiny, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**env), cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("OUTPUT-PHASE"):
            break
    return proc


@pytest.mark.slow
def test_kill_9_at_random_moments_of_the_output_phase_never_leaves_a_foreign_results_json(
        tiny, tmp_path):
    """After each kill -9 the directory is either visibly incomplete (no results.json) or
    complete: a results.json of *this* run whose hashes are those of the files beside it."""
    out = tmp_path / "run"
    proc = _start(tiny, out, SLOW=0.02)
    began = time.monotonic()
    while not (out / "results.json").exists() and proc.poll() is None:
        time.sleep(0.001)
    phase_s = 1.5 * (time.monotonic() - began)  # the output phase, and a bit after it
    proc.communicate(timeout=120)
    assert proc.returncode == 0 and check_run_directory(out) == "complete"
    rng = np.random.default_rng(14)
    outcomes: dict[str, int] = {"complete": 0, "incomplete": 0}
    kills = 0
    for _ in range(40):
        results = out / "results.json"
        previous = results.read_bytes() if results.exists() else None
        proc = _start(tiny, out, SLOW=0.02)
        delay_s = rng.uniform(0.0, phase_s)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        kills += proc.returncode == -signal.SIGKILL
        state = check_run_directory(out)  # raises if results.json does not fit the files
        if state == "complete" and previous is not None:
            assert (out / "results.json").read_bytes() != previous, (
                f"the previous run's results.json survived a rerun killed after {delay_s} s")
        outcomes[state] += 1
        if kills >= 20:
            break
    assert kills >= 20, f"only {kills} runs were still running when killed ({outcomes})"
    assert outcomes["incomplete"] >= 3 and outcomes["complete"] >= 1, outcomes
    print(f"kill -9 within {phase_s:.3f} s of the output phase's start: {outcomes}")
    final = _predict(tiny, out)
    assert final.returncode == 0 and check_run_directory(out) == "complete"
    assert not list(out.glob(".tmp-*"))


def test_a_second_concurrent_run_into_the_same_directory_fails_with_a_clear_message(
        tiny, tmp_path):
    out = tmp_path / "run"
    holder = _start(tiny, out, HOLD=30)  # claimed the directory, holds in the output phase
    try:
        second = _predict(tiny, out)
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    assert second.returncode == 1
    assert (f"mlscale: error: {out} is in use by another mlscale run (pid {holder.pid} on "
            in second.stderr), second.stderr[-2000:]
    assert check_run_directory(out) == "incomplete"
    third = _predict(tiny, out)  # the kernel dropped the killed holder's lock
    assert third.returncode == 0 and check_run_directory(out) == "complete"


def test_the_lock_is_held_until_released(tmp_path):
    claim = claim_directory(tmp_path / "run", self_comm())
    with pytest.raises(MlscaleError, match=f"{tmp_path / 'run'} is in use by another mlscale "
                       f"run \\(pid {os.getpid()} on"):
        claim_directory(tmp_path / "run", self_comm())
    claim.release()
    claim_directory(tmp_path / "run", self_comm()).release()


def test_an_output_path_that_is_a_file_fails_before_the_work(tiny, tmp_path):
    out = tmp_path / "results"
    out.write_text("not a directory")
    run = _predict(tiny, out)
    assert run.returncode == 1 and "OUTPUT-PHASE" not in run.stdout
    assert f"mlscale: error: --output {out} is an existing file, not a directory" in run.stderr


@pytest.fixture
def read_only_fs(tmp_path):
    """A read-only tmpfs (root bypasses file modes, not a read-only mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_output_directory_fails_before_the_work(tiny, read_only_fs):
    run = _predict(tiny, read_only_fs)
    assert run.returncode == 1 and "OUTPUT-PHASE" not in run.stdout
    assert (f"mlscale: error: cannot write into --output directory {read_only_fs}: Read-only "
            "file system") in run.stderr, run.stderr[-2000:]


def test_predict_into_a_full_filesystem_fails_naming_the_density_and_leaves_no_results(
        tiny, small_fs):
    run = _predict(tiny, small_fs, "--grid", "40", "40", "40")  # 500 KiB of density
    assert run.returncode == 1
    assert f"mlscale: error: cannot write {small_fs / 'density.h5'}" in run.stderr
    assert check_run_directory(small_fs) == "incomplete"
    assert _names(small_fs) == [".mlscale-lock"]


# -- 3. signals end every rank ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum, target", [(signal.SIGINT, 1), (signal.SIGTERM, 1),
                                            (signal.SIGINT, 0)],
                         ids=["SIGINT-rank1", "SIGTERM-rank1", "SIGINT-rank0"])
def test_a_signal_to_one_rank_of_a_two_rank_predict_ends_both_ranks_promptly(
        tiny, tmp_path, signum, target):
    """Rank 0 holds for a minute before its output; rank 1 waits for it inside the output's
    first collective call (blocked in MPI, where no Python handler can run)."""
    if MPIEXEC is None:
        pytest.skip("mpiexec not found")
    out = tmp_path / "run"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", *_predict_command(tiny, out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(HOLD=60, HOLD_RANK=0), cwd=ROOT)
    pids, lines = {}, []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("OUTPUT-PHASE"):
            _, rank, pid = line.split()
            pids[int(rank)] = int(pid)
            if len(pids) == 2:
                break
    if len(pids) < 2:
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"the job ended before its output phase (status {proc.returncode}): "
                    f"{''.join(lines) + stdout}{stderr}"[-3000:])
    time.sleep(1.0)  # rank 1 is now blocked in the collective
    began = time.monotonic()
    os.kill(pids[target], signum)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{signal.Signals(signum).name} to rank {target}: the job still ran 30 s later")
    elapsed_s = time.monotonic() - began
    assert elapsed_s < 15, elapsed_s  # the other rank would have held for 60 s
    assert proc.returncode == 128 + signum, f"status {proc.returncode}: {stdout}{stderr}"
    if "mlscale:" in stderr:  # under load mpiexec may drop the line when it kills the job
        assert (f"mlscale: {signal.Signals(signum).name} on rank {target}: aborting all 2 "
                "ranks") in stderr, stderr[-3000:]
    assert check_run_directory(out) == "incomplete"


# -- 4. checks before the work and consistency checks ------------------------------------------
def _flip_first_weight_bit(source: Path, target: Path) -> None:
    """Copy a safetensors file flipping the lowest mantissa bit of its first tensor value
    (still a finite float32, so only a checksum can tell)."""
    data = bytearray(source.read_bytes())
    header_bytes = int.from_bytes(data[:8], "little")
    data[8 + header_bytes] ^= 0x01
    target.write_bytes(bytes(data))


def _rewrite_model(source: Path, target: Path, change_tensors=None, drop_checksum=False):
    """Rewrite a model file's tensors and metadata (for old-format and broken files)."""
    import safetensors
    import safetensors.numpy

    with safetensors.safe_open(str(source), framework="np") as handle:
        metadata = json.loads(handle.metadata()["mlscale"])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    if change_tensors:
        tensors.update(change_tensors(tensors))
    if drop_checksum:
        del metadata["tensors_sha256"]
    target.write_bytes(safetensors.numpy.save(tensors, {"mlscale": json.dumps(metadata)}))


def test_a_model_file_with_one_flipped_bit_in_its_weights_is_refused(tiny, tmp_path):
    from mlscale.model import load_model

    load_model(tiny["model"])  # the intact file loads
    broken = tmp_path / "flipped.safetensors"
    _flip_first_weight_bit(tiny["model"], broken)
    assert broken.read_bytes() != tiny["model"].read_bytes()
    with pytest.raises(MlscaleError, match=f"{broken} is corrupt: the SHA-256 of its tensors"):
        load_model(broken)


def test_a_model_file_written_before_checksums_still_loads(tiny, tmp_path):
    from mlscale.model import load_model

    old = tmp_path / "old.safetensors"
    _rewrite_model(tiny["model"], old, drop_checksum=True)
    flipped = tmp_path / "old-flipped.safetensors"
    _flip_first_weight_bit(old, flipped)
    x_pf = np.random.default_rng(0).random((7, 5))
    np.testing.assert_array_equal(load_model(old)(x_pf), load_model(tiny["model"])(x_pf))
    load_model(flipped)  # nothing to verify against: accepted, as before


def test_a_model_whose_output_scales_are_all_zero_is_refused(tiny, tmp_path):
    from mlscale.model import load_model

    zero = tmp_path / "zero.safetensors"
    _rewrite_model(tiny["model"], zero, drop_checksum=True,
                   change_tensors=lambda t: {"output_scale": np.zeros_like(t["output_scale"])})
    with pytest.raises(MlscaleError, match="output_scale is zero for every energy"):
        load_model(zero)


@pytest.fixture(scope="module")
def upf_dirs(tmp_path_factory):
    """Al UPF directories: QE's Al.pz-vbc (3 valence electrons), the same with
    z_valence 11 (as a semicore UPF), and one truncated after its header."""
    source = Path("/usr/share/espresso/pseudo/Al.pz-vbc.UPF")
    if not source.is_file():
        pytest.skip(f"{source} not installed (Quantum ESPRESSO pseudopotentials)")
    text = source.read_text()
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("good", "semicore", "corrupt")}
    (dirs["good"] / source.name).write_text(text)
    assert text.count('z_valence="3.000000000000e0"') == 1
    (dirs["semicore"] / source.name).write_text(
        text.replace('z_valence="3.000000000000e0"', 'z_valence="1.100000000000e1"'))
    (dirs["corrupt"] / source.name).write_text(text[:text.index("<PP_R>")])
    return dirs


def test_a_pseudopotential_of_another_valence_than_the_model_fails_before_the_work(
        tiny, upf_dirs, tmp_path):
    run = _predict(tiny, tmp_path / "run", "--pseudopotentials", upf_dirs["semicore"])
    assert run.returncode == 1 and "OUTPUT-PHASE" not in run.stdout
    assert (f"mlscale: error: pseudopotential {upf_dirs['semicore'] / 'Al.pz-vbc.UPF'} has 11 "
            "valence electrons for Al, the model 3") in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # refused before the output directory was claimed


def test_a_corrupt_pseudopotential_fails_before_the_work(tiny, upf_dirs, tmp_path):
    run = _predict(tiny, tmp_path / "run", "--pseudopotentials", upf_dirs["corrupt"])
    assert run.returncode == 1 and "OUTPUT-PHASE" not in run.stdout
    assert ("mlscale: error: corrupt pseudopotential "
            f"{upf_dirs['corrupt'] / 'Al.pz-vbc.UPF'}") in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_grid_far_coarser_than_the_training_grid_warns_stating_the_ratio(tiny, tmp_path):
    import ase.io

    from mlscale.grid import Grid
    from mlscale.inference import grid_for, grid_spacing_warning
    from mlscale.model import load_model

    info = load_model(tiny["model"]).info
    atoms = ase.io.read(tiny["structure"])
    trained = grid_for(atoms, info)  # QE's grid at the model's ecutrho
    assert grid_spacing_warning(trained, info) is None
    n = trained.shape[0]
    assert grid_spacing_warning(Grid(atoms.cell[:], (n - 1,) * 3), info) is None  # near
    coarse = Grid(atoms.cell[:], (n // 2,) * 3)
    ratio = f"{n / (n // 2):.2f}"  # cubic cell: spacing ratio = point-count ratio
    warning = grid_spacing_warning(coarse, info)
    assert warning is not None and f"{ratio} {ratio} {ratio} times those of the model's" in warning
    run = _predict(tiny, tmp_path / "run", "--grid", *(n // 2,) * 3)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"mlscale: warning: the grid [{n // 2}, {n // 2}, {n // 2}] has spacings" in run.stderr


def _energy_inputs(upf_dirs):
    import ase.build

    atoms = ase.build.bulk("Al", "fcc", a=4.05, cubic=True)
    dgrid = DistributedGrid(Grid(atoms.cell[:], (12, 12, 12)), self_comm())
    pps = {"Al": upf_dirs["good"] / "Al.pz-vbc.UPF"}
    uniform_b = np.full(dgrid.local_shape, 12.0 / atoms.get_volume())  # 12 electrons
    return atoms, dgrid, pps, uniform_b


def test_energy_refuses_negative_and_non_finite_densities(upf_dirs):
    from mlscale.energy import density_energy_terms
    from mlscale.energy.total import _check_sign

    atoms, dgrid, pps, uniform_b = _energy_inputs(upf_dirs)
    with pytest.raises(MlscaleError, match="the density is not a density: 12 of its 12 electrons"):
        density_energy_terms(-uniform_b, dgrid, atoms, pps)
    dipped_b = uniform_b.copy()
    dipped_b[0, 0, :3] = -0.5 * uniform_b[0, 0, 0]  # 1.5 points' worth of -0.5: ≈ 0.05 %
    _check_sign(dipped_b, dgrid)  # a predicted density may dip slightly below zero
    dipped_b[:2] = -uniform_b[:2]  # 2 of 12 planes negative: 1/6 of the charge
    with pytest.raises(MlscaleError, match="at most 1% may be"):
        _check_sign(dipped_b, dgrid)
    nan_b = uniform_b.copy()
    nan_b[3, 4, 5] = np.nan
    with pytest.raises(MlscaleError, match="density contains NaN"):
        density_energy_terms(nan_b, dgrid, atoms, pps)


def test_energy_and_electrons_refuse_grid_files_of_another_cell(upf_dirs, tmp_path, capsys):
    import ase.io

    from mlscale.cli import main

    atoms, dgrid, _, uniform_b = _energy_inputs(upf_dirs)
    write_openpmd(tmp_path / "density.h5", "Density", uniform_b, dgrid)
    write_openpmd(tmp_path / "ldos.h5", "LDOS", np.full(dgrid.local_shape + (5,), 0.05), dgrid)
    strained = atoms.copy()
    strained.set_cell(atoms.cell[:] * 1.03, scale_atoms=True)
    ase.io.write(tmp_path / "strained.xyz", strained, format="extxyz")
    status = main(["energy", str(tmp_path / "density.h5"), "--structure",
                   str(tmp_path / "strained.xyz"), "--pseudopotentials", str(upf_dirs["good"])])
    assert status == 1
    assert (f"the cell recorded in {tmp_path / 'density.h5'} differs from the cell of the "
            "structure by up to 0.1215 Å") in capsys.readouterr().err
    status = main(["electrons", str(tmp_path / "ldos.h5"), "--energy-grid", "-2", "1", "5",
                   "--temperature", "300", "--electrons", "12", "--cell-from",
                   str(tmp_path / "strained.xyz")])
    assert status == 1
    assert (f"the cell recorded in {tmp_path / 'ldos.h5'} differs from the cell of "
            f"{tmp_path / 'strained.xyz'}") in capsys.readouterr().err


def test_a_checkpoint_with_one_flipped_bit_is_refused_on_resume(tmp_path):
    from mlscale.config import TrainingSettings
    from mlscale.training import read_checkpoint
    from tests.snapshot_data import write_snapshots
    from tests.test_training import run

    train_specs = write_snapshots(tmp_path, 1)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    checkpoint = tmp_path / "run.checkpoint.safetensors"
    run(train_specs, validation_specs, TrainingSettings(epochs=1, batch_size=16),
        checkpoint=checkpoint, checkpoint_every=1)
    read_checkpoint(checkpoint)  # intact
    broken = tmp_path / "flipped.checkpoint.safetensors"
    _flip_first_weight_bit(checkpoint, broken)
    with pytest.raises(MlscaleError, match=f"{broken} is corrupt: the SHA-256 of its tensors"):
        read_checkpoint(broken)


def test_train_into_an_unwritable_place_fails_before_the_first_epoch(read_only_fs, tmp_path,
                                                                      capsys):
    from mlscale.cli import main
    from tests.snapshot_data import write_snapshots

    train_specs = write_snapshots(tmp_path, 1)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    common = ["train", "--train", *train_specs, "--validation", *validation_specs,
              "--energy-grid", "-5", "2.5", "4", "--temperature", "300", "--species", "Be",
              "--layers", "5", "8", "4", "--epochs", "2"]
    assert main([*common, "-o", str(read_only_fs / "model.safetensors")]) == 1
    captured = capsys.readouterr()
    assert "epoch" not in captured.out
    assert (f"cannot write the model file (-o) {read_only_fs / 'model.safetensors'}: "
            "Read-only file system") in captured.err
    assert main([*common, "-o", str(tmp_path / "missing" / "model.safetensors")]) == 1
    assert f"directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err



@pytest.mark.slow
@pytest.mark.parametrize("case", ["watchdog", "sigterm"])
def test_a_stalled_training_rank_ends_the_job_at_the_watchdog_not_at_gloos_timeout(
        tmp_path, case):
    """SIGSTOP one rank of a 2-rank `mlscale train` (ddp). watchdog: the other aborts the job
    after MLSCALE_WATCHDOG_S = 3 s. sigterm: with a 600 s watchdog, SIGTERM to the waiting
    rank ends the job 10 s later (its checkpoint would need the stalled peer's step)."""
    if MPIEXEC is None:
        pytest.skip("mpiexec not found")
    from tests.snapshot_data import write_snapshots

    train_specs = write_snapshots(tmp_path, 2)
    validation_specs = write_snapshots(tmp_path, 1, seed=1)
    config = tmp_path / "train.toml"
    config.write_text('layers = [5, 8, 4]\n\n[descriptors]\ntwojmax = 2\nspecies = ["Be"]\n')
    command = [MPIEXEC, "-n", "2", sys.executable, "-c", WRAPPER, "train", "--config",
               str(config), "--train", *train_specs, "--validation", *validation_specs,
               "--energy-grid", "-5", "2.5", "4", "--temperature", "300", "--species", "Be",
               "--epochs", "100000", "--batch-size", "4", "-o", str(tmp_path / "m.safetensors")]
    watchdog_s = 3 if case == "watchdog" else 600
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(MLSCALE_WATCHDOG_S=watchdog_s), cwd=ROOT)
    pids = {}
    try:
        for line in proc.stdout:
            if line.startswith("STARTED"):
                _, rank, pid = line.split()
                pids[int(rank)] = int(pid)
            if line.split()[:2] == ["epoch", "2"]:
                break
        os.kill(pids[1], signal.SIGSTOP)
        began = time.monotonic()
        if case == "sigterm":
            time.sleep(1.0)
            os.kill(pids[0], signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
        elapsed_s = time.monotonic() - began
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    if case == "watchdog":
        assert ("mlscale: error on rank 0: the gradient all-reduce waited 3 s for the other "
                "ranks: a rank is stalled") in stderr, stderr[-2000:]
        assert elapsed_s < 30, elapsed_s
    else:  # stopped in a step (gloo): 10 s; between steps (MPI reductions): the 30 s grace
        assert ("the gradient all-reduce still waits 10 s after SIGTERM for the other ranks"
                in stderr or "mlscale: SIGTERM on rank 0 not acted upon within 30 s: "
                "aborting all 2 ranks" in stderr), stderr[-2000:]
        assert elapsed_s < 45, elapsed_s


def test_a_grid_too_large_for_the_memory_fails_before_the_work_saying_how_much(tiny, tmp_path):
    run = _predict(tiny, tmp_path / "run", "--grid", "2000", "2000", "2000")
    assert run.returncode == 1 and "OUTPUT-PHASE" not in run.stdout
    # float32 LDOS of the 4 energies of the window kept per point (1 eV steps: at most the
    # energies of a ±0.05 eV bracket widened by 36 k_BT and a hat's step either side) + the
    # density
    need_gib = 2000**3 * (4 * 4 + 8) / 2**30
    assert (f"mlscale: error: the grid [2000, 2000, 2000] needs at least {need_gib:.3g} GiB "
            "per rank (8000000000 points × 4 LDOS energies") in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_check_memory_compares_the_node_total_with_the_available_memory():
    from mlscale.inference import check_memory

    dgrid = _dgrid((10, 10, 10))  # 1000 points × (4·5 + 8) bytes = 28,000 bytes
    check_memory(dgrid, 5, available_bytes=28_000)
    with pytest.raises(MlscaleError, match="needs at least 2.61e-05 GiB per rank"):
        check_memory(dgrid, 5, available_bytes=27_999)


def test_structure_files_that_are_directories_or_have_infinite_cells_are_named(tmp_path):
    import ase
    import ase.io

    from mlscale.io.structure import read_structure

    with pytest.raises(MlscaleError, match=f"{tmp_path} is a directory, not a structure file"):
        read_structure(tmp_path)
    atoms = ase.Atoms("Al", positions=[[0, 0, 0]], cell=np.diag([4.0, 4.0, np.inf]), pbc=True)
    ase.io.write(tmp_path / "inf.xyz", atoms, format="extxyz")
    with pytest.raises(MlscaleError, match="inf.xyz has non-finite cell vectors or positions"):
        read_structure(tmp_path / "inf.xyz")


def test_descriptors_into_a_read_only_place_fail_before_the_work(tiny, read_only_fs, capsys):
    from mlscale.cli import main

    target = read_only_fs / "descriptors.h5"
    assert main(["descriptors", str(tiny["structure"]), "--grid", "6", "6", "6", "-o",
                 str(target)]) == 1
    captured = capsys.readouterr()
    assert f"cannot write -o {target}: Read-only file system" in captured.err
    assert "written" not in captured.out


def test_energy_warns_when_the_density_holds_other_than_the_valence_electrons(
        upf_dirs, tmp_path, capsys):
    import ase.io

    from mlscale.cli import main

    atoms, dgrid, _, uniform_b = _energy_inputs(upf_dirs)  # 4 Al atoms, 3 valence electrons
    ase.io.write(tmp_path / "al.xyz", atoms, format="extxyz")
    for scale, warned in ((1.0, False), (0.9, True)):
        write_openpmd(tmp_path / "density.h5", "Density", scale * uniform_b, dgrid)
        assert main(["energy", str(tmp_path / "density.h5"), "--structure",
                     str(tmp_path / "al.xyz"), "--pseudopotentials",
                     str(upf_dirs["good"])]) == 0
        err = capsys.readouterr().err
        assert ("mlscale: warning: the density holds 10.8000 electrons, the structure's "
                "atoms 12 valence electrons" in err) == warned, err


def test_electrons_output_directory_is_claimed_and_sealed_like_predicts(upf_dirs, tmp_path,
                                                                       capsys):
    import ase.io

    from mlscale.cli import main

    atoms, dgrid, _, _ = _energy_inputs(upf_dirs)
    ase.io.write(tmp_path / "al.xyz", atoms, format="extxyz")
    write_openpmd(tmp_path / "ldos.h5", "LDOS", np.full(dgrid.local_shape + (5,), 0.05), dgrid)
    out = tmp_path / "electrons"
    args = ["electrons", str(tmp_path / "ldos.h5"), "--energy-grid", "-2", "1", "5",
            "--temperature", "300", "--electrons", "12", "--cell-from",
            str(tmp_path / "al.xyz"), "-o", str(out)]
    assert main(args) == 0 and check_run_directory(out) == "complete"
    first = json.loads((out / "results.json").read_text())
    assert set(first["output_files"]) == {"dos.csv", "density.h5", "density.pmd"}
    capsys.readouterr()
    assert main(args) == 0 and check_run_directory(out) == "complete"
    assert (f"{out}: removed the previous run's results.json, dos.csv, density.h5"
            in capsys.readouterr().err)
    claim = claim_directory(out, self_comm())  # another run holds the directory
    try:
        assert main(args) == 1
        assert f"{out} is in use by another mlscale run" in capsys.readouterr().err
    finally:
        claim.release()
