"""Convert MALA (≥ 1.4) model archives into mlscale model files, without pickle.

A MALA archive ``NAME.zip`` (``Runner.save_run``) holds

- ``NAME.network.pth``: the state dict of MALA's ``FeedForwardNet`` (``layers.<i>.weight``,
  ``layers.<i>.bias``), read with ``torch.load(weights_only=True)``;
- ``NAME.params.json``: MALA's parameters (network, descriptors, targets sections);
- ``NAME.iscaler.json`` / ``NAME.oscaler.json``: the input/output ``DataScaler``;
- ``NAME.info.json`` (optional): the reference calculation (temperature, atoms, ecutrho).

Archives from MALA < 1.4 store the scalers pickled (``.pkl``); they are refused with
the MALA call that re-saves them.

The conversion is exact (same float32 operations as MALA's predictor):

- scalers: standard ``(x − mean)/std``, min-max ``(x − min)/(max − min)`` (feature-wise
  or one number for all columns; ``"normal"`` is MALA's old name for min-max) become
  the model's input/output affine maps, with ``max − min`` formed in float32 as MALA does;
- activations follow MALA 1.4: one name (or a list, one per layer) after every linear
  layer, the output layer included when ``layer_activations_include_output_layer``
  (MALA's default). mlscale's MLP has one hidden activation and none after its last
  layer, so an output activation equal to the hidden one is expressed by appending an
  identity layer (exact in float32);
- MALA's predictor zeroes negative LDOS (``restrict_targets="zero_out_negative"``, its
  default) or takes absolute values (``"absolute_values"``): the model's
  ``ldos_restriction`` (``zero_negative`` / ``absolute``) does the same after the network.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import BispectrumSettings, EnergyGrid, ModelSettings
from ..errors import MlscaleError
from ._format import ACTIVATION_NAMES
from ._torch import LDOSModel, save_model

# Fixed in MALA's LAMMPS input files, not stored in its parameters.
MALA_BISPECTRUM = dict(rfac0=0.99363, rmin0=0.0, radius=0.5, bzeroflag=0, quadraticflag=0)
# MALA restrict_targets -> mlscale ModelSettings.ldos_restriction
MALA_RESTRICTIONS = {None: "none", "zero_out_negative": "zero_negative",
                     "absolute_values": "absolute"}
RESAVE_HINT = ("re-save it with MALA 1.4: `_, _, _, predictor = mala.Predictor.load_run("
               "'{name}', path='DIR'); predictor.save_run('{name}_mala14', path='DIR', "
               "additional_calculation_data=True)` (add activation_list_legacy_load=True to "
               "load_run for models trained with MALA < 1.3.1)")
_LAYER_KEY = re.compile(r"layers\.(\d+)\.(weight|bias)")


@dataclass(frozen=True)
class MalaArchive:
    """The decoded members of a MALA model archive."""

    name: str
    params: dict
    state: dict
    input_scaler: dict
    output_scaler: dict
    info: dict | None


def read_mala_archive(path) -> MalaArchive:
    """Read a MALA ≥ 1.4 model archive (zip) without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise MlscaleError(f"file not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {Path(m).name: m for m in archive.namelist()}
            params_files = [m for m in members if m.endswith(".params.json")]
            if len(params_files) != 1:
                raise MlscaleError(f"{path} is not a MALA model archive (expected one "
                                   f"NAME.params.json, found {len(params_files)})")
            name = params_files[0][:-len(".params.json")]
            for kind in ("iscaler", "oscaler"):
                if f"{name}.{kind}.json" not in members and f"{name}.{kind}.pkl" in members:
                    raise MlscaleError(f"{path} stores its data scalers pickled (MALA < 1.4); "
                                       f"mlscale never unpickles: "
                                       + RESAVE_HINT.format(name=name))
            for suffix in ("network.pth", "iscaler.json", "oscaler.json"):
                if f"{name}.{suffix}" not in members:
                    raise MlscaleError(f"{path} lacks {name}.{suffix}")

            def read(suffix):
                return archive.read(members[f"{name}.{suffix}"])

            params = _json(read("params.json"), path, "params.json")
            input_scaler = _json(read("iscaler.json"), path, "iscaler.json")
            output_scaler = _json(read("oscaler.json"), path, "oscaler.json")
            info = (_json(read("info.json"), path, "info.json")
                    if f"{name}.info.json" in members else None)
            weights = read("network.pth")
    except MlscaleError:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile/zlib raise many kinds for broken files
        raise MlscaleError(f"{path} is not a readable zip archive (corrupt or truncated?): "
                           f"{error}") from None
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise MlscaleError(f"{path}: cannot read {name}.network.pth as plain tensors "
                           f"(weights_only): {error}") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor)
                                              for t in state.values()):
        raise MlscaleError(f"{path}: {name}.network.pth is not a state dict of tensors")
    return MalaArchive(name, params, state, input_scaler, output_scaler, info)


def _json(data: bytes, path, member: str):
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise MlscaleError(f"{path}: {member} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise MlscaleError(f"{path}: {member} is not a JSON object")
    return value


def scaler_affine(scaler: dict, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale), float32 ``[size]``, with MALA's ``scaled = (x − shift)/scale``."""
    try:
        standard, minmax = bool(scaler["scale_standard"]), bool(scaler["scale_minmax"])
        feature_wise = bool(scaler["feature_wise"])
        if standard and minmax:
            raise MlscaleError(f"{what} scaler is both standard and min-max")
        if not (standard or minmax):
            return np.zeros(size, np.float32), np.ones(size, np.float32)
        if not scaler["cantransform"]:
            raise MlscaleError(f"{what} scaler was never fitted")
        if feature_wise:
            keys = ("means", "stds") if standard else ("mins", "maxs")
            a, b = (np.asarray(scaler[key], np.float32).reshape(-1) for key in keys)
        else:
            keys = ("total_mean", "total_std") if standard else ("total_min", "total_max")
            a, b = (np.full(size, scaler[key], np.float32) for key in keys)
    except (KeyError, TypeError, ValueError) as error:
        raise MlscaleError(f"{what} scaler: missing or malformed entry {error}") from None
    if a.shape != (size,) or b.shape != (size,):
        raise MlscaleError(f"{what} scaler has {a.size} columns, the network {size}")
    scale = b if standard else b - a  # float32, as MALA forms max - min
    if not (np.isfinite(a).all() and np.isfinite(scale).all()) or (scale == 0).any():
        raise MlscaleError(f"{what} scaler has a zero or non-finite scale (constant column?): "
                           f"MALA maps such columns to NaN/inf, mlscale cannot")
    return a, scale


def layer_activations(network: dict, n_linear: int) -> list:
    """Activation name (or None) after each of the ``n_linear`` linear layers, as MALA 1.4."""
    activations = network.get("layer_activations", "LeakyReLU")
    include_output = network.get("layer_activations_include_output_layer", True)
    result = []
    for i in range(n_linear):
        name = None
        if i < n_linear - 1 or include_output:
            if isinstance(activations, list):
                name = activations[i] if i < len(activations) else None
            else:
                name = activations
        if name is not None and not isinstance(name, str):
            raise MlscaleError(f"unsupported MALA activation entry {name!r}")
        result.append(name)
    return result


def _linear_layers(state: dict, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight [out, in], bias [out]) per MALA linear layer, in order, float32."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        match = _LAYER_KEY.fullmatch(key)
        if match is None:
            raise MlscaleError(f"unexpected tensor '{key}' in the MALA network (feed-forward "
                               f"networks hold only layers.<i>.weight/bias)")
        found.setdefault(int(match[1]), {})[match[2]] = tensor.detach().cpu().numpy()
    layers = [found[i] for i in sorted(found)]
    if len(layers) != len(sizes) - 1:
        raise MlscaleError(f"network has {len(layers)} linear layers, params.json layer_sizes "
                           f"{sizes} need {len(sizes) - 1}")
    result = []
    for i, layer in enumerate(layers):
        weight, bias = layer.get("weight"), layer.get("bias")
        if weight is None or bias is None or weight.shape != (sizes[i + 1], sizes[i]) \
                or bias.shape != (sizes[i + 1],):
            raise MlscaleError(f"linear layer {i} does not match layer_sizes {sizes}")
        result.append((weight.astype(np.float32), bias.astype(np.float32)))
    return result


@dataclass(frozen=True)
class MalaSettings:
    """What mlscale takes from a MALA params.json."""

    sizes: list[int]
    network: dict
    energy_grid: EnergyGrid
    twojmax: int
    rcutfac: float
    switchflag: int
    element_weights: list | None
    restriction: str


def mala_settings(archive: MalaArchive) -> MalaSettings:
    """The network, descriptor and target sections of the archive's params.json."""
    try:
        network, descriptors, targets = (archive.params["network"],
                                         archive.params["descriptors"],
                                         archive.params["targets"])
        if network.get("nn_type", "feed-forward") != "feed-forward":
            raise MlscaleError(f"only MALA feed-forward networks can be imported, not "
                               f"'{network['nn_type']}'")
        if descriptors.get("descriptor_type", "Bispectrum") != "Bispectrum":
            raise MlscaleError(f"only bispectrum descriptors are supported, not "
                               f"'{descriptors['descriptor_type']}'")
        if targets.get("target_type", "LDOS") != "LDOS":
            raise MlscaleError(f"only LDOS models are supported, not '{targets['target_type']}'")
        settings = MalaSettings(
            sizes=[int(n) for n in network["layer_sizes"]], network=network,
            energy_grid=EnergyGrid(float(targets["ldos_gridoffset_ev"]),
                                   float(targets["ldos_gridspacing_ev"]),
                                   int(targets["ldos_gridsize"])),
            twojmax=int(descriptors["bispectrum_twojmax"]),
            rcutfac=float(descriptors["bispectrum_cutoff"]),
            switchflag=int(descriptors.get("bispectrum_switchflag", 1)),
            element_weights=descriptors.get("bispectrum_element_weights"),
            restriction=targets.get("restrict_targets", "zero_out_negative"))
    except KeyError as missing:
        raise MlscaleError(f"{archive.name}.params.json lacks {missing}") from None
    except (TypeError, ValueError) as error:
        raise MlscaleError(f"{archive.name}.params.json: {error}") from None
    if settings.restriction not in MALA_RESTRICTIONS:
        raise MlscaleError(f"unknown MALA restrict_targets '{settings.restriction}' (known: "
                           f"{', '.join(str(name) for name in MALA_RESTRICTIONS)})")
    return settings


def mala_layers(archive: MalaArchive, mala: MalaSettings):
    """``(layers, sizes, activation, activations)``: mlscale's linear layers ((weight
    [out, in], bias) float32) and sizes, its one hidden activation, and MALA's
    activation after each of its linear layers (an output activation equal to the
    hidden one becomes an identity layer followed by that activation)."""
    sizes = list(mala.sizes)
    layers = _linear_layers(archive.state, sizes)
    activations = layer_activations(mala.network, len(layers))
    hidden = set(activations[:-1])
    if None in hidden or len(hidden) > 1:
        raise MlscaleError(f"mlscale needs one activation after every hidden layer; this "
                           f"network has {activations[:-1]}")
    output_activation = activations[-1]
    activation = hidden.pop() if hidden else (output_activation or "ReLU")
    if activation not in ACTIVATION_NAMES:
        raise MlscaleError(f"MALA activation '{activation}' is not supported by mlscale "
                           f"(supported: {', '.join(ACTIVATION_NAMES)})")
    if output_activation is not None:
        if output_activation != activation:
            raise MlscaleError(f"output activation '{output_activation}' differs from the "
                               f"hidden one '{activation}': not representable in mlscale")
        n_out = sizes[-1]
        layers.append((np.eye(n_out, dtype=np.float32), np.zeros(n_out, np.float32)))
        sizes.append(n_out)
    return layers, sizes, activation, activations


def mala_module(archive: MalaArchive, mala: MalaSettings) -> tuple[LDOSModel, list]:
    """``(LDOSModel, MALA's activations)``: the network with MALA's weights, scalers
    as affine maps and restriction, in eval mode."""
    layers, sizes, activation, activations = mala_layers(archive, mala)
    input_shift, input_scale = scaler_affine(archive.input_scaler, sizes[0], "input")
    output_shift, output_scale = scaler_affine(archive.output_scaler, sizes[-1], "output")
    model = LDOSModel(ModelSettings(layers=tuple(sizes), activation=activation,
                                    ldos_restriction=MALA_RESTRICTIONS[mala.restriction]))
    linear = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for module, (weight, bias) in zip(linear, layers):
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(bias))
    model.set_scaling(input_shift, input_scale, output_shift, output_scale)
    return model.eval(), activations


def mala_descriptors(mala: MalaSettings, species: list[str]) -> BispectrumSettings:
    """mlscale's bispectrum settings for MALA's (LAMMPS-file constants in MALA_BISPECTRUM)."""
    weights = mala.element_weights
    if weights is None:
        weights = [1.0] * len(species)
    if len(weights) != len(species):
        raise MlscaleError(f"{len(species)} species {species} but {len(weights)} MALA "
                           f"bispectrum element weights")
    return BispectrumSettings(
        twojmax=mala.twojmax, rcutfac=mala.rcutfac, rfac0=MALA_BISPECTRUM["rfac0"],
        rmin0=MALA_BISPECTRUM["rmin0"], species=tuple(species),
        radii=(MALA_BISPECTRUM["radius"],) * len(species), weights=tuple(weights),
        switchflag=mala.switchflag, bzeroflag=int(MALA_BISPECTRUM["bzeroflag"]),
        quadraticflag=int(MALA_BISPECTRUM["quadraticflag"]))


def convert_mala_model(archive: MalaArchive, *, species=None, temperature_K=None,
                       valence_electrons=None) -> tuple[LDOSModel, dict]:
    """``(LDOSModel, metadata)`` equivalent to MALA's predictor with this archive.

    species: element symbols (LAMMPS type order); default: sorted elements of the
    info.json atoms, as MALA's LAMMPS data file orders them. temperature_K (K) and
    valence_electrons ({symbol: count}) default to info.json (the latter only for one
    species).
    """
    info = archive.info or {}
    mala = mala_settings(archive)
    model, activations = mala_module(archive, mala)
    species = _species(species, info, archive.name)
    descriptors = mala_descriptors(mala, species)
    if temperature_K is None:
        if "temperature" not in info:
            raise MlscaleError(f"{archive.name} has no info.json temperature; pass --temperature")
        temperature_K = float(info["temperature"])
    if valence_electrons is None and len(species) == 1 and "electrons_per_atom" in info:
        valence_electrons = {species[0]: float(info["electrons_per_atom"])}
    metadata = {
        "descriptors": descriptors.to_dict(),
        "energy_grid": mala.energy_grid.to_dict(),
        "temperature_K": float(temperature_K),
        "species": list(species),
        "mala": {"archive": archive.name, "layer_sizes": list(mala.sizes),
                 "layer_activations": activations, "restrict_targets": mala.restriction,
                 "input_rescaling": archive.input_scaler.get("typestring"),
                 "output_rescaling": archive.output_scaler.get("typestring"),
                 "grid_dimensions": info.get("grid_dimensions")},
    }
    if valence_electrons:
        metadata["valence_electrons"] = {k: float(v) for k, v in valence_electrons.items()}
    if info.get("ecutrho") is not None:
        metadata["ecutrho_Ry"] = float(info["ecutrho"])
    return model, metadata


def _species(species, info: dict, name: str) -> list[str]:
    if species:
        return list(species)
    try:
        from ase.data import chemical_symbols

        return sorted({chemical_symbols[int(z)] for z in info["atoms"]["numbers"]})
    except (KeyError, TypeError, ValueError, IndexError):
        raise MlscaleError(f"{name} has no info.json atoms to take the species from; "
                           f"pass --species") from None


def import_mala(path, output, **options) -> dict:
    """Convert the MALA archive ``path`` to the mlscale model file ``output`` (atomic write).

    ``options`` go to :func:`convert_mala_model`; returns the written metadata.
    """
    model, metadata = convert_mala_model(read_mala_archive(path), **options)
    save_model(output, model, metadata)
    return metadata
