"""Accuracy of an LDOS model against DFT on held-out snapshots (the table of docs/accuracy.md).

For each snapshot NAME of a data set written by ``mlscale datagen`` (NAME.info.json with
QE's reference values, NAME.out.npy = DFT's LDOS, NAME.dens.npy = DFT's density), three rows:

- ``model vs DFT``: the ``mlscale predict`` pipeline (descriptors from the atoms, network,
  Fermi level for the exact electron count, density, total energy with the UPF files);
- ``DFT LDOS vs DFT``: the same quantities from DFT's own LDOS on the model's energy grid:
  the floor set by the energy grid and the LDOS broadening;
- ``model vs DFT LDOS``: the difference of the two, what the network alone gets wrong.

Errors (prediction − DFT): Fermi level (meV); band energy Σ f ε and total energy (meV/atom;
DFT: QE's total energy, band energy from pw.x's eigenvalues); electrons at DFT's Fermi
level minus the exact count (at the solved Fermi level the count is exact by construction);
DOS: ∫|D − D_DFT| dε / ∫ D_DFT dε on the energy grid (D_DFT = Σ_r LDOS_DFT ΔV); density:
mean |n − n_DFT| / mean n_DFT over the grid (n_DFT: pp.x's density).

A snapshot may also be a compact record of the converged data set (``--data data/al_k4``:
NAME.info.json + NAME.npz, see mlscale/datagen/compact.py): DFT's DOS and density come
from the record, and the floor row has the DOS's own Fermi level, band energy and electron
count only (the record keeps the LDOS at a subsample of points, so no floor density or
total energy: "—").

    python examples/accuracy.py --snapshots al298_07 ... al600_10 --markdown docs/accuracy.md
    mpiexec -n 2 python examples/accuracy.py --snapshots al298_07 al298_08   # same numbers
    python examples/accuracy.py --model M --snapshots al298_02 --record OUT --description TEXT
        # OUT = M plus DFT settings, data description and the errors on al298_02 in its metadata
    python examples/accuracy.py --data data/al --snapshots al_09 --export tests/data/al_heldout
        # a full snapshot in small form (tests/data/al_heldout, of the 2×2×2-k data set)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase import Atoms

from mlscale import electrons
from mlscale.errors import MlscaleError
from mlscale.grid import Grid
from mlscale.parallel import Comm, world

ROOT = Path(__file__).resolve().parents[1]
TABLE_START, TABLE_END = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"
COLUMNS = (("fermi_energy_meV", "Fermi level (meV)", "{:+.1f}"),
           ("band_energy_meV_per_atom", "band energy (meV/atom)", "{:+.2f}"),
           ("total_energy_meV_per_atom", "total energy (meV/atom)", "{:+.2f}"),
           ("electrons_at_dft_fermi_level", "electrons at DFT's E_F − N", "{:+.4f}"),
           ("dos_relative_l1", "DOS ∫abs(ΔD)/∫D (%)", "{:.2f}"),
           ("density_relative_mae", "density MAE/mean (%)", "{:.3f}"))
ROWS = (("model", "model vs DFT"), ("dft_ldos", "DFT LDOS vs DFT"),
        ("network", "model vs DFT LDOS"))
PERCENT = {"dos_relative_l1", "density_relative_mae"}
DFT_KEYS = ("fermi_energy_dft", "band_energy_dft_calculation", "total_energy_dft_calculation",
            "entropy_contribution_dft_calculation", "one_electron_contribution",
            "hartree_contribution", "xc_contribution", "ewald_contribution",
            "number_of_electrons_exact", "temperature", "grid_dimensions", "ecutwfc", "ecutrho",
            "pseudopotentials", "dft_settings", "ldos_settings", "descriptor_settings", "units")


def read_info(data_dir: Path, name: str) -> dict:
    path = Path(data_dir) / f"{name}.info.json"
    if not path.is_file():
        raise MlscaleError(f"snapshot {name} not finished: {path} not found")
    return json.loads(path.read_text())


def snapshot_atoms(info: dict) -> Atoms:
    """The snapshot's structure (Å) from its info JSON."""
    return Atoms(info["symbols"], positions=info["positions"], cell=info["cell"], pbc=True)


def errors(values: dict, dft: dict, dos_e, dft_dos_e, energies_e, n_atoms: int) -> dict:
    """Prediction − DFT. values: fermi_energy_eV, band_energy_eV, total_energy_eV (optional),
    density_abs_error (Σ|Δn|), density_sum (Σ n_DFT)."""
    temperature = dft["temperature"]
    out = {
        "fermi_energy_meV": 1e3 * (values["fermi_energy_eV"] - dft["fermi_energy_dft"]),
        "band_energy_meV_per_atom":
            1e3 * (values["band_energy_eV"] - dft["band_energy_dft_calculation"]) / n_atoms,
        "electrons_at_dft_fermi_level": electrons.number_of_electrons(
            dos_e, energies_e, dft["fermi_energy_dft"], temperature)
        - dft["number_of_electrons_exact"],
        "dos_relative_l1": float(np.abs(dos_e - dft_dos_e).sum() / dft_dos_e.sum()),
        "density_relative_mae": (values["density_abs_error"] / values["density_sum"]
                                 if "density_abs_error" in values else None),
    }
    if "total_energy_eV" in values:
        out["total_energy_meV_per_atom"] = (
            1e3 * (values["total_energy_eV"] - dft["total_energy_dft_calculation"]) / n_atoms)
    return out


def evaluate(model, metadata: dict, data_dir: Path, name: str, comm: Comm, work_dir: Path,
             pseudopotentials: dict | None) -> dict:
    """Errors of the model and of DFT's own LDOS against DFT on snapshot ``name``; collective."""
    from mlscale.energy import density_energy_terms, total_energy
    from mlscale.grid import DistributedGrid
    from mlscale.inference import grid_for, number_of_electrons, predict
    from mlscale.io import read_npy_block
    from mlscale.model import ModelInfo
    from mlscale.output import write_fields

    data_dir = Path(data_dir)
    with comm.collective():
        info = read_info(data_dir, name)
        atoms = snapshot_atoms(info)
        model_info = ModelInfo.from_metadata(metadata)
        grid = grid_for(atoms, model_info)
        if list(grid.shape) != list(info["grid_dimensions"]):
            raise MlscaleError(f"{name}: DFT grid {info['grid_dimensions']} differs from the "
                               f"model's {list(grid.shape)}")
        energy_grid = model_info.energy_grid
        if _energy_grid(info) != energy_grid:
            raise MlscaleError(f"{name}: LDOS energy grid differs from the model's")
        if abs(info["temperature"] - model_info.temperature_K) > 0.1:
            raise MlscaleError(f"{name}: DFT at {info['temperature']:.1f} K, the model is for "
                               f"{model_info.temperature_K} K")
    energies_e = energy_grid.energies
    dgrid = DistributedGrid(grid, comm)
    block = dgrid.block
    ldos_be = floor_density_b = None
    with comm.collective():
        if "compact" in info:  # a compact record: DFT's DOS and density, LDOS subsampled
            from mlscale.datagen import read_compact_record

            _, arrays = read_compact_record(data_dir, name)
            dft_dos_e = np.asarray(arrays["dos_e"], dtype=np.float64)
            dft_density_b = np.asarray(arrays["density_b"], np.float64)[block.slices]
        else:
            ldos_be = read_npy_block(data_dir / f"{name}.out.npy", block)
            dft_density_b = read_npy_block(data_dir / f"{name}.dens.npy", block)[..., 0]
    if ldos_be is not None:
        dft_dos_e = comm.sum(electrons.dos_from_ldos(ldos_be, grid.voxel_volume))
    density_sum = comm.sum(float(dft_density_b.sum()))

    # floor: DFT's LDOS (its DOS alone for a compact record) through the same electron and
    # energy functions
    floor = electrons.electronic_structure(dft_dos_e, energies_e, info["number_of_electrons_exact"],
                                           model_info.temperature_K)
    if ldos_be is not None:
        floor_density_b = electrons.density(ldos_be, energies_e, floor["fermi_energy_eV"],
                                            model_info.temperature_K)
        del ldos_be
        floor["density_abs_error"] = comm.sum(
            float(np.abs(floor_density_b - dft_density_b).sum()))
        floor["density_sum"] = density_sum
    if pseudopotentials is not None and floor_density_b is not None:
        terms = density_energy_terms(floor_density_b, dgrid, atoms, pseudopotentials,
                                     ecutrho_Ry=model_info.ecutrho_Ry)
        floor["total_energy_eV"] = total_energy(floor["band_energy_eV"],
                                                floor["entropy_contribution_eV"], terms)

    # model: the `mlscale predict` pipeline
    out_dir = Path(work_dir) / name
    prediction = predict(atoms, model, dgrid,
                         number_of_electrons(atoms, model_info.valence_electrons),
                         pseudopotentials=pseudopotentials)
    results = prediction.scalars()
    write_fields(out_dir, prediction.energies_e, prediction.dos_e, prediction.density_b, dgrid)
    density_b, dos_e = prediction.density_b, prediction.dos_e
    results["density_abs_error"] = comm.sum(float(np.abs(density_b - dft_density_b).sum()))
    results["density_sum"] = density_sum

    n_atoms = len(atoms)
    model_errors = errors(results, info, dos_e, dft_dos_e, energies_e, n_atoms)
    floor_errors = errors(floor, info, dft_dos_e, dft_dos_e, energies_e, n_atoms)
    network = {key: model_errors[key] - floor_errors[key] for key in model_errors
               if model_errors[key] is not None and floor_errors.get(key) is not None}
    network["dos_relative_l1"] = model_errors["dos_relative_l1"]
    network["density_relative_mae"] = None if floor_density_b is None else comm.sum(
        float(np.abs(density_b - floor_density_b).sum())) / density_sum
    return {"snapshot": name, "atoms": n_atoms, "model": model_errors, "dft_ldos": floor_errors,
            "network": network}


def _energy_grid(info: dict):
    from mlscale.config import EnergyGrid

    return EnergyGrid.from_dict(info["ldos_settings"]["energy_grid"])


def markdown_table(evaluations: list[dict]) -> str:
    """The accuracy table: the rows of ROWS for each snapshot, then the mean absolute
    model-vs-DFT errors over the snapshots."""
    head = ["snapshot", "compared"] + [label for _, label, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for result in evaluations:
        for row, label in ROWS:
            cells = [result["snapshot"], label]
            for key, _, fmt in COLUMNS:
                value = result[row].get(key)
                if value is None:
                    cells.append("—")
                else:
                    cells.append(fmt.format(100 * value if key in PERCENT else value))
            lines.append("| " + " | ".join(cells) + " |")
    if len(evaluations) > 1:
        cells = ["mean abs", "model vs DFT"]
        for key, _, fmt in COLUMNS:
            values = [abs(result["model"][key]) for result in evaluations
                      if result["model"].get(key) is not None]
            mean = float(np.mean(values)) * (100 if key in PERCENT else 1) if values else None
            cells.append("—" if mean is None else fmt.format(mean).lstrip("+"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_table(path: Path, table: str) -> None:
    """Put ``table`` between the table markers of ``path`` (the rest of the file is kept)."""
    from mlscale.io import write_text_atomic

    text = path.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise MlscaleError(f"{path} lacks the markers {TABLE_START} ... {TABLE_END}")
    write_text_atomic(path, text[:start + len(TABLE_START)] + "\n" + table + "\n" + text[end:])


def record(model_path: Path, output: Path, evaluation: dict, info: dict, description: str):
    """Write ``output``: the model with DFT settings, data description and validation errors."""
    from mlscale.model import load_model, save_model

    model = load_model(model_path, "torch")
    metadata = dict(model.info.metadata)
    metadata["dft"] = {key: info[key] for key in (
        "dft_settings", "ldos_settings", "pseudopotentials", "ecutwfc", "ecutrho", "temperature")}
    metadata["dft"]["code"] = (f"Quantum ESPRESSO 6.7 (pw.x; LDOS: {info.get('ldos_tool', 'pp.x')})"
                               " via mlscale datagen")
    metadata["training_data"] = {
        "description": description,
        "atoms_per_snapshot": len(info["symbols"]), "grid": info["grid_dimensions"],
        "train_snapshots": [Path(s.split(":")[0]).name.removesuffix(".in.npy")
                            for s in metadata["training"]["train_snapshots"]],
        "validation_snapshots": [evaluation["snapshot"]]}
    metadata["validation_errors"] = {"snapshot": evaluation["snapshot"],
                                     "units": "meV, meV/atom, electrons, fractions",
                                     **evaluation["model"]}
    save_model(output, model.module, metadata)


def export_small(data_dir: Path, name: str, out_dir: Path, stride: int = 2) -> None:
    """A snapshot in small form: structure (extxyz), DFT values (JSON), DFT DOS and the DFT
    density on every ``stride``-th grid point per axis (.npy, 1/eV and 1/Å³)."""
    import ase.io

    info = read_info(data_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms = snapshot_atoms(info)
    ase.io.write(out_dir / f"{name}.xyz", atoms, format="extxyz")
    grid = Grid(np.asarray(info["cell"]), tuple(info["grid_dimensions"]))
    ldos = np.load(Path(data_dir) / f"{name}.out.npy", mmap_mode="r", allow_pickle=False)
    dos_e = sum(electrons.dos_from_ldos(ldos[i:i + 1], grid.voxel_volume)
                for i in range(len(ldos)))
    density = np.load(Path(data_dir) / f"{name}.dens.npy", allow_pickle=False)[..., 0]
    np.save(out_dir / f"{name}.dft_dos.npy", dos_e)
    np.save(out_dir / f"{name}.dft_density.npy", density[::stride, ::stride, ::stride].copy())
    small = {key: info[key] for key in DFT_KEYS}
    small["source"] = (f"{name} of the data set of jobs/make_al_dataset.sh (QE 6.7, "
                       "mlscale datagen); exported by examples/accuracy.py --export")
    small["density_stride"] = stride
    infos = [json.loads(path.read_text()) for path in sorted(Path(data_dir).glob("*.info.json"))]
    fermi = [i["fermi_energy_dft"] for i in infos]
    band = [i["band_energy_dft_calculation"] / len(i["symbols"]) for i in infos]
    small["data_set_spread"] = {"snapshots": len(infos), "fermi_energy_min": min(fermi),
                                "fermi_energy_max": max(fermi),
                                "band_energy_per_atom_min": min(band),
                                "band_energy_per_atom_max": max(band)}
    (out_dir / f"{name}.dft.json").write_text(json.dumps(small, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the shipped Al model)")
    parser.add_argument("--data", default=str(ROOT / "data" / "al_k4"),
                        help="data set directory (full snapshots or compact records)")
    parser.add_argument("--snapshots", nargs="+", default=["al298_07"],
                        help="held-out snapshots")
    parser.add_argument("--pseudopotentials", default="/usr/share/espresso/pseudo",
                        help="UPF directory for the total energy ('' to skip it)")
    parser.add_argument("--work", default=str(ROOT / "out" / "accuracy"),
                        help="where the predictions are written")
    parser.add_argument("--markdown", help="file whose accuracy table to replace")
    parser.add_argument("--record", metavar="OUT", help="write the model with the errors on "
                        "the (one) snapshot and the data description to OUT")
    parser.add_argument("--description", default="", help="training data description (--record)")
    parser.add_argument("--export", metavar="DIR", help="write the snapshot(s) in small form")
    args = parser.parse_args(argv)
    comm = world()
    try:
        return run(args, comm)
    except MlscaleError as error:
        comm.print(f"accuracy: error: {error}", file=sys.stderr)
        return 1


def run(args, comm: Comm) -> int:
    from mlscale.commands.predict import set_threads
    from mlscale.examples import shipped_model_path
    from mlscale.model import load_model

    data = Path(args.data)
    if args.export:
        if comm.rank == 0:
            for name in args.snapshots:
                export_small(data, name, Path(args.export))
        return 0
    set_threads(comm)
    with comm.collective():
        model_path = Path(args.model) if args.model else shipped_model_path()
        model = load_model(model_path, "torch")  # as the figures in docs/accuracy.md
        metadata = model.info.metadata
        pseudopotentials = None
        if args.pseudopotentials:
            from mlscale.energy import find_pseudopotentials

            pseudopotentials = find_pseudopotentials(args.pseudopotentials, metadata["species"])
        if args.record and len(args.snapshots) != 1:
            raise MlscaleError("--record takes one (validation) snapshot")
    evaluations = [evaluate(model, metadata, data, name, comm, Path(args.work), pseudopotentials)
                   for name in args.snapshots]
    table = markdown_table(evaluations)
    comm.print(f"model {model_path}, {comm.size} rank(s)\n{table}")
    with comm.collective():
        if comm.rank == 0 and args.markdown:
            replace_table(Path(args.markdown), table)
        if comm.rank == 0 and args.record:
            record(model_path, Path(args.record), evaluations[0],
                   read_info(data, args.snapshots[0]), args.description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
