"""ASE calculator: mlscale's predicted total energy and its exact forces.

    atoms.calc = MlscaleCalculator(model="al.safetensors", pseudopotentials="pseudo/")
    atoms.get_potential_energy(); atoms.get_forces()

Each call runs :func:`mlscale.inference.predict` (the same stages and defaults as
``mlscale predict --pseudopotentials``, so the energy is the command's to round-off) and,
when forces are asked for, its forces stage (:mod:`mlscale.forces`). Under ``mpiexec``
every rank runs the calculator on the same Atoms; the grid is split over the ranks and
energy and forces come back on every rank. The model (and numba's compiled kernels,
which live in the process) are kept between calls.

``energy`` and ``free_energy`` are both the predicted total energy E = E_band + E_dc +
E_H + E_xc + E_Ewald − TS (eV), the Mermin free energy at the model's electronic
temperature, of which ``forces`` (eV/Å) are the exact negative gradient.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from . import inference
from .device import DeviceNetwork, select_device
from .energy.upf import Pseudopotential, find_pseudopotentials
from .errors import MlscaleError
from .model import DEFAULT_CHUNK_POINTS, Model, load_model
from .parallel import Comm, world


class MlscaleCalculator(Calculator):
    """ASE calculator for mlscale predictions (energy, free_energy, forces).

    model: a model file (.safetensors) or a loaded :class:`mlscale.model.Model`;
    pseudopotentials: a directory of UPF files or {element: UPF path or Pseudopotential};
    grid: (nx, ny, nz), default QE's FFT grid at the model's ecutrho; comm: an mlscale
    :class:`~mlscale.parallel.Comm`, default all ranks (MPI.COMM_WORLD). backend: the
    descriptor backend; method: the energy integration; network: "numpy" or "torch" when
    ``model`` is a path; ldos_dtype: the stored LDOS (float32 as predict, or float64);
    n_electrons: default from the model's valence counts; device: "cpu" or "cuda"
    (descriptors and network on each rank's GPU, as ``predict --device cuda``; ``model``
    a path or a :class:`mlscale.device.DeviceNetwork`; the forces' adjoint on the CPU).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: str | os.PathLike | Model,
                 pseudopotentials: str | os.PathLike | dict,
                 grid: tuple[int, int, int] | None = None, comm: Comm | None = None, *,
                 backend: str = "native", method: str = "analytical",
                 chunk_points: int = DEFAULT_CHUNK_POINTS, network: str = "numpy",
                 ldos_dtype=np.float32, n_electrons: float | None = None,
                 device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.comm = world() if comm is None else comm
        bound = select_device(device, self.comm)
        with self.comm.collective():
            self.model = (model if not isinstance(model, (str, os.PathLike))
                          else load_model(model, network) if bound.kind == "cpu"
                          else DeviceNetwork.from_file(model, bound))
            if bound.kind != "cpu" and not isinstance(self.model, DeviceNetwork):
                raise MlscaleError("device cuda needs the model as a path or a DeviceNetwork")
        self.pseudopotentials = pseudopotentials
        self.grid = None if grid is None else tuple(int(n) for n in grid)
        self.options = {"backend": backend, "method": method, "chunk_points": chunk_points,
                        "ldos_dtype": ldos_dtype}
        self.n_electrons = n_electrons
        self.prediction: inference.Prediction | None = None

    def calculate(self, atoms: Atoms | None = None, properties=("energy",),
                  system_changes=all_changes) -> None:
        """Predict ``atoms`` (collective: every rank with the same Atoms)."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        with self.comm.collective():
            self._check_same_atoms(atoms)
            pps = self._pseudopotentials(atoms)
        dgrid, n_electrons = inference.setup(atoms, self.model.info, self.comm,
                                             shape=self.grid, n_electrons=self.n_electrons,
                                             backend=self.options["backend"],
                                             with_energy=True)
        self.prediction = inference.predict(atoms, self.model, dgrid, n_electrons,
                                            pseudopotentials=pps,
                                            with_forces="forces" in properties,
                                            **self.options)
        assert self.prediction.total_energy_eV is not None  # pseudopotentials were given
        energy = float(self.prediction.total_energy_eV)
        self.results = {"energy": energy, "free_energy": energy}
        if self.prediction.forces is not None:
            self.results["forces"] = self.prediction.forces.total_av.copy()

    def _pseudopotentials(self, atoms: Atoms) -> dict[str, Path | Pseudopotential]:
        if isinstance(self.pseudopotentials, dict):
            return dict(self.pseudopotentials)
        return {symbol: path for symbol, path in find_pseudopotentials(
            self.pseudopotentials, set(atoms.get_chemical_symbols())).items()}

    def _check_same_atoms(self, atoms: Atoms) -> None:
        """MlscaleError (on every rank) unless all ranks hold the same structure."""
        mine = np.concatenate((atoms.positions.ravel(), atoms.cell.array.ravel(),
                               atoms.numbers.astype(float)))
        reference = self.comm.broadcast(mine)
        if reference.shape != mine.shape or not np.array_equal(reference, mine):
            raise MlscaleError(f"rank {self.comm.rank} holds other atoms than rank 0: every "
                               "rank must give the calculator the same Atoms")
