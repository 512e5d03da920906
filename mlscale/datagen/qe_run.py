"""Run pw.x and pp.x under OpenMPI's mpirun and check that they did what was asked."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import MlscaleError

# launcher variables of an enclosing MPI job (mpich/hydra, PMI) must not leak into OpenMPI
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "HYDRA_", "HYDI_", "MPIR_", "MPICH_", "OMPI_", "I_MPI_")


@dataclass(frozen=True)
class QERunner:
    """How to start QE: ``mpirun -np nprocs pw.x``; executables are resolved on use.

    mpirun: the OpenMPI launcher (path or name on PATH). qe_bin: directory of pw.x and
    pp.x (None: search PATH). pools: k-point pools of pw.x (``-nk``). nice: niceness
    added to the QE processes.
    """

    nprocs: int = 1
    pools: int = 1
    mpirun: str = "/usr/bin/mpirun"
    qe_bin: str | None = None
    nice: int = 0

    def executable(self, name: str) -> str:
        """Absolute path of a QE executable or the launcher; MlscaleError when missing."""
        if name == "mpirun":
            found = shutil.which(self.mpirun)
            if found is None:
                raise MlscaleError(f"MPI launcher not found: {self.mpirun} (OpenMPI's mpirun)")
            return found
        path = shutil.which(name, path=self.qe_bin) if self.qe_bin else shutil.which(name)
        if path is None:
            where = self.qe_bin or "PATH"
            raise MlscaleError(f"{name} not found in {where}: install Quantum ESPRESSO "
                               "(Debian: apt-get install quantum-espresso)")
        return path

    def check(self):
        """Fail early (MlscaleError) when mpirun, pw.x or pp.x is missing."""
        for name in ("mpirun", "pw.x", "pp.x"):
            self.executable(name)

    def run(self, program: str, input_file: str, output_file: str, cwd: Path):
        """Run ``program -in input_file`` in ``cwd``, stdout+stderr to ``output_file``.

        Raises MlscaleError when it fails, and for pw.x also when the SCF did not converge.
        """
        command = [self.executable("mpirun"), "--allow-run-as-root", "-np", str(self.nprocs),
                   self.executable(program), "-in", input_file]
        if program == "pw.x" and self.pools > 1:
            command += ["-nk", str(self.pools)]
        if self.nice:
            command = ["nice", "-n", str(self.nice), *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}
        env["OMP_NUM_THREADS"] = "1"
        with open(Path(cwd) / output_file, "w") as out:
            status = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env).returncode
        if program == "pw.x":  # a clear message for an unconverged SCF (exit status 2)
            check_pw_output(Path(cwd) / output_file)
        if status != 0:
            raise MlscaleError(f"{program} failed with exit status {status}: "
                               f"{_qe_error(Path(cwd) / output_file)}")


def check_pw_output(path: Path):
    """Raise MlscaleError unless the pw.x output reports a converged, finished SCF."""
    text = Path(path).read_text(errors="replace")
    if "convergence NOT achieved" in text:
        raise MlscaleError(f"SCF did not converge (see {path}): raise electron_maxstep, "
                           "lower mixing_beta or check the structure")
    if "convergence has been achieved" not in text or "JOB DONE" not in text:
        raise MlscaleError(f"pw.x did not finish an SCF (see {path}): {_qe_error(path)}")


def remove_wavefunctions(run_dir: Path, outdir: str, prefix: str):
    """Delete pw.x's scratch (wavefunctions, density) after pp.x has used it.

    Keeps the XML data file (eigenvalues, occupations, k-points) as ``scf.xml``.
    """
    xml = Path(run_dir) / outdir / f"{prefix}.save" / "data-file-schema.xml"
    if xml.is_file():
        os.replace(xml, Path(run_dir) / "scf.xml")
    shutil.rmtree(Path(run_dir) / outdir, ignore_errors=True)


def _qe_error(path: Path) -> str:
    """The message of QE's ``%%%%`` error box in an output file, or its last line."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    for i, line in enumerate(lines):
        if line.strip().startswith("%%%%") and i + 2 < len(lines):
            return " ".join(s.strip() for s in lines[i + 1:i + 3] if s.strip()
                            and not s.strip().startswith("%%%%"))
    tail = [s.strip() for s in lines if s.strip().strip("-=")]
    return tail[-1] if tail else "no output"
