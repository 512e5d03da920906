"""Convert a MALA (>= 1.4) model archive (.zip) into an mlscale model file (.safetensors).

Reads the network weights (torch, weights only), the JSON data scalers and MALA's
parameters; never unpickles. Archives with pickled scalers (MALA < 1.4) must first be
re-saved with MALA 1.4 (the error message shows how). Species, temperature, valence
electrons and ecutrho come from the archive's info.json unless given here.
"""

from __future__ import annotations

from ..errors import MlscaleError


def add_arguments(parser):
    parser.add_argument("archive", help="MALA model archive NAME.zip")
    parser.add_argument("--output", "-o", required=True, help="mlscale model file to write")
    parser.add_argument("--species", nargs="+", metavar="SYMBOL",
                        help="elements in LAMMPS type order (default: from info.json)")
    parser.add_argument("--temperature", type=float, metavar="K",
                        help="electronic temperature in K (default: from info.json)")
    parser.add_argument("--valence", nargs="+", metavar="SYMBOL=N",
                        help="valence electrons per species, e.g. Be=2")


def parse_valence(items) -> dict | None:
    """['Be=2', ...] -> {'Be': 2.0, ...}."""
    if not items:
        return None
    result = {}
    for item in items:
        symbol, _, count = item.partition("=")
        try:
            result[symbol] = float(count)
        except ValueError:
            raise MlscaleError(f"--valence expects SYMBOL=N (e.g. Be=2), got {item!r}") from None
    return result


def run(args, comm) -> int:
    from ..model import convert_mala_model, read_mala_archive, save_model

    with comm.collective():
        model, metadata = convert_mala_model(
            read_mala_archive(args.archive), species=args.species,
            temperature_K=args.temperature, valence_electrons=parse_valence(args.valence))
        if comm.rank == 0:
            save_model(args.output, model, metadata)
    layers = " -> ".join(str(n) for n in model.settings.layers)
    comm.print(f"wrote {args.output}: layers {layers} ({model.settings.activation}), "
               f"species {' '.join(metadata['species'])}, "
               f"{metadata['energy_grid']['count']} energies, {metadata['temperature_K']:.2f} K")
    return 0
