"""`mlscale bench` on the command line: it refuses what it cannot measure."""

from __future__ import annotations

import pytest


@pytest.mark.mpi(min_size=2)
def test_bench_refuses_several_ranks(al_model, capsys):
    from mlscale.cli import main

    assert main(["bench", "--model", str(al_model), "-o", "/nonexistent/b.json"]) == 1
    err = capsys.readouterr().err
    from mlscale.parallel import world

    if world().rank == 0:
        assert "one process" in err


def test_bench_refuses_too_few_points_before_measuring(al_model, capsys, tmp_path):
    from mlscale.cli import main

    output = tmp_path / "bench.json"
    assert main(["bench", "--model", str(al_model), "--points", "10", "-o", str(output)]) == 1
    assert "--points must be >= 1000" in capsys.readouterr().err
    assert not output.exists()
