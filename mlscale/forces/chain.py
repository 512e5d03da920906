"""Forces of a whole prediction: F_a = −dE_total/dR_a through every stage.

    density terms  δE_n/δn, δE_n/δn_c            (:mod:`.density`, distributed FFT)
    electrons      ∂E/∂LDOS with μ's response      (:mod:`.electrons`, two energy vectors)
    per slab of the rank's points: descriptors B (kept from the prediction, or recomputed),
                   β = model.vjp(B, ∂E/∂LDOS),
                   F += −Σ_p β_pf ∂B_pf/∂R        (:mod:`mlscale.descriptors.adjoint`)
    core charge    −∂E_xc/∂R through n_c           (:mod:`.core`)
    Ewald          −∂E_Ewald/∂R                    (:mod:`.ewald`)

Only per-atom arrays [atoms, 3] are reduced over the ranks (and one scalar, for μ).
``mlscale.inference.predict`` keeps the descriptors of its pass in the network's dtype
(what the network was given, so β is the same as recomputed: float32, 4·features bytes
per point) and passes them here; without them (``descriptors_pf=None``) each slab's are
recomputed. Per-point storage of the forces beyond that: the prediction's LDOS (kept
until the forces are done) and two float64 fields of the block (δE/δn and δE/δn_c, 16
bytes per point), plus the FFT's and one slab's temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ..descriptors import compute_descriptors, descriptor_blocks
from ..descriptors.adjoint import bispectrum_forces
from ..errors import MlscaleError
from ..grid import DistributedGrid
from ..model import DEFAULT_CHUNK_POINTS, Model
from ..progress import progress
from ..timing import Timings
from ..units import BOHR_ANGSTROM, HARTREE_EV
from .core import core_forces
from .density import density_gradient
from .electrons import LdosGradient, ldos_gradient
from .ewald import ewald_forces


@dataclass(frozen=True)
class Forces:
    """Forces of a prediction and their parts, ``[atoms, 3]`` in eV/Å, on every rank."""

    bispectrum_av: np.ndarray  # through the LDOS, the network and the descriptors
    core_av: np.ndarray  # through the pseudo-core charge of E_xc
    ewald_av: np.ndarray

    @property
    def total_av(self) -> np.ndarray:
        return self.bispectrum_av + self.core_av + self.ewald_av


def prediction_forces(atoms: Atoms, model: Model, dgrid: DistributedGrid, ldos_pe: np.ndarray,
                      dos_e: np.ndarray, fermi_energy_eV: float, density_b: np.ndarray,
                      pseudopotentials: dict, *, backend: str = "native",
                      method: str = "analytical", chunk_points: int = DEFAULT_CHUNK_POINTS,
                      timings: Timings | None = None,
                      descriptors_pf: np.ndarray | None = None) -> Forces:
    """−dE_total/dR of a prediction (eV/Å), E_total as :func:`mlscale.energy.total_energy`.

    ldos_pe: the rank's LDOS [points, energies] (1/(eV·Å³)) in the order the prediction
    made it (the slabs of ``descriptor_blocks``); dos_e (1/eV), fermi_energy_eV and
    density_b (1/Å³, the rank's block): the prediction's; pseudopotentials: element ->
    UPF path or Pseudopotential; descriptors_pf: the prediction's descriptors of the
    rank's points [points, features] in the same order (None: recomputed). The Fermi
    level must be the one solved for the electron count. Collective over
    ``dgrid.comm``; phases timed as ``forces_*``.
    """
    timings = Timings() if timings is None else timings
    info = model.info
    with timings.phase("forces_density"):
        gradient = density_gradient(density_b, dgrid, atoms, pseudopotentials,
                                    ecutrho_Ry=info.ecutrho_Ry)
        potential_p = gradient.potential_b.reshape(-1)
        ldos_grad = ldos_gradient(ldos_pe, info.energy_grid.energies, dos_e, fermi_energy_eV,
                                  info.temperature_K, dgrid.voxel_volume, potential_p,
                                  dgrid.comm, method)
    bispectrum_av = dgrid.sum(_bispectrum_forces(atoms, model, dgrid, ldos_grad, potential_p,
                                                 backend, chunk_points, timings,
                                                 descriptors_pf))
    with timings.phase("forces_core_ewald"):
        core_av = core_forces(gradient.core_potential_b, gradient.fft, atoms,
                              gradient.pseudopotentials, gradient.g2_max)
        charge_a = np.array([gradient.pseudopotentials[s].z_valence
                             for s in atoms.get_chemical_symbols()])
        ewald_av = ewald_forces(atoms.positions / BOHR_ANGSTROM, charge_a, gradient.fft)
    return Forces(bispectrum_av, core_av, ewald_av * (HARTREE_EV / BOHR_ANGSTROM))


def _bispectrum_forces(atoms: Atoms, model: Model, dgrid: DistributedGrid,
                       ldos_grad: LdosGradient, potential_p: np.ndarray, backend: str,
                       chunk_points: int, timings: Timings,
                       descriptors_pf: np.ndarray | None) -> np.ndarray:
    """This rank's share of −Σ_p β_pf ∂B_pf/∂R (eV/Å), slab by slab as the prediction
    (the slab's descriptors from ``descriptors_pf`` when given)."""
    settings = model.info.descriptors
    near = np.arange(len(atoms))
    if backend == "native":  # the atoms near the block, as the prediction selects them
        near = dgrid.atoms_near(atoms.positions @ np.linalg.inv(dgrid.cell_cv),
                                settings.cutoff)
    if descriptors_pf is not None and descriptors_pf.shape != (dgrid.local_points,
                                                               settings.n_features):
        raise MlscaleError(f"descriptors_pf has shape {descriptors_pf.shape}, expected "
                           f"({dgrid.local_points}, {settings.n_features})")
    forces_av = np.zeros((len(atoms), 3))
    if len(near) == 0:
        return forces_av
    local_atoms = atoms[near]
    offset = 0
    chunks = descriptor_blocks(dgrid, backend, chunk_points)
    for chunk in progress(chunks, total=len(chunks), desc="forces", unit="chunk",
                          rank=dgrid.comm.rank):
        if descriptors_pf is not None:
            slab_pf = descriptors_pf[offset:offset + chunk.size]
        else:
            with timings.phase("forces_descriptors"):
                slab_pf = compute_descriptors(local_atoms, dgrid, settings, backend,
                                              block=chunk, check=False
                                              ).reshape(chunk.size, -1)
        with timings.phase("forces_network"):
            beta_pf = _network_vjp(model, slab_pf, ldos_grad,
                                   potential_p[offset:offset + chunk.size], chunk_points)
            del slab_pf
        with timings.phase("forces_adjoint"):
            forces_av[near] += bispectrum_forces(local_atoms, dgrid.grid, chunk, settings,
                                                 beta_pf)
        offset += chunk.size
    return forces_av


def _network_vjp(model: Model, descriptors_pf: np.ndarray, ldos_grad: LdosGradient,
                 potential_p: np.ndarray, chunk_points: int) -> np.ndarray:
    """β = Σ_e ∂E/∂LDOS_pe ∂LDOS_pe/∂B_pf (eV): through the model's ``vjp_affine`` where
    it has one (∂E/∂LDOS is affine in δE_n/δn per point), else its ``vjp``."""
    affine = getattr(model, "vjp_affine", None)
    if affine is None:
        return model.vjp(descriptors_pf, ldos_grad.on_points(potential_p), chunk_points)
    volume = ldos_grad.voxel_volume_A3
    return affine(descriptors_pf, volume * ldos_grad.offset_e, volume * ldos_grad.slope_e,
                  potential_p, chunk_points)
