"""Collective error handling: a failure on one rank fails every rank alike, no hang."""

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.parallel import check_launch, self_comm, world


def test_collective_block_passes_when_all_succeed():
    comm = world()
    with comm.collective():
        value = 1
    assert comm.sum(value) == comm.size
    np.testing.assert_array_equal(comm.sum(np.ones(3)), np.full(3, comm.size))


def test_collective_turns_plain_exception_into_mlscale_error():
    comm = world()
    with pytest.raises(MlscaleError, match="ValueError: bad"):
        with comm.collective():
            raise ValueError("bad")


@pytest.mark.mpi(min_size=2)
def test_error_on_one_rank_reaches_all_ranks():
    comm = world()
    with pytest.raises(MlscaleError, match="rank 1 could not read x.npy"):
        with comm.collective():
            if comm.rank == 1:
                raise MlscaleError("rank 1 could not read x.npy")
    # the communicator still works afterwards: nobody is stuck in a collective
    assert comm.sum(1) == comm.size


@pytest.mark.mpi(min_size=2)
def test_lowest_failing_rank_wins():
    comm = world()
    with pytest.raises(MlscaleError, match="^failure on rank 0$"):
        with comm.collective():
            raise MlscaleError(f"failure on rank {comm.rank}")


def test_srun_tasks_that_each_are_a_world_of_one_rank_are_refused():
    comm = self_comm()  # what each task of `srun --mpi=none -n 2` sees
    with pytest.raises(MlscaleError, match=r"srun started 2 tasks but MPI sees a world of 1 "
                                           r"rank.*task 1.*srun --mpi=pmi2"):
        check_launch(comm, {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"})
    for fine in ({}, {"SLURM_STEP_NUM_TASKS": "1"}, {"SLURM_NTASKS": "4"},  # batch script
                 {"SLURM_STEP_NUM_TASKS": "2", "MLSCALE_INDEPENDENT_TASKS": "1"}):
        check_launch(comm, fine)


def test_cli_refuses_before_any_work(monkeypatch, tmp_path, capsys):
    from mlscale.cli import main

    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.delenv("MLSCALE_INDEPENDENT_TASKS", raising=False)
    if world().size > 1:
        pytest.skip("a world of several ranks is what srun should give")
    assert main(["predict", "--output", str(tmp_path / "out")]) == 1
    assert "srun started 2 tasks" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
