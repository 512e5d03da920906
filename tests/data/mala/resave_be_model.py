"""Re-save MALA's Be2 test model (pickled scalers) as a MALA 1.4 archive (JSON scalers).

Run with MALA 1.4.0 (its own venv), from any directory:

    /work/mala-venv/bin/python tests/data/mala/resave_be_model.py \
        /work/shared/mala-test-data/Be2/Be_model.zip tests/data/mala

writes ``Be_model_mala14.zip`` into the output directory. The archive was trained
with MALA < 1.3.1, where a one-element activation list meant "this activation after
every layer, output layer included"; ``activation_list_legacy_load=True`` is MALA's
documented way to load such models correctly. MALA 1.4 rewrites the archive it
loads (adding JSON scalers), so the input is copied to a scratch directory first.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import mala


def main(source, out_dir):
    source, out_dir = Path(source), Path(out_dir)
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(source, scratch)
        _, _, _, predictor = mala.Predictor.load_run(
            source.stem, path=scratch, activation_list_legacy_load=True)
        predictor.save_run("Be_model_mala14", path=scratch, additional_calculation_data=True)
        shutil.copy(Path(scratch) / "Be_model_mala14.zip", out_dir / "Be_model_mala14.zip")
    print(f"mala {mala.__version__}: wrote {out_dir / 'Be_model_mala14.zip'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
