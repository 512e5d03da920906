"""Collective error handling: a failure on one rank fails every rank alike, no hang."""

import numpy as np
import pytest

from mlscale.errors import MlscaleError
from mlscale.parallel import world


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
