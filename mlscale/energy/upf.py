"""Read what the energy terms need from UPF pseudopotential files (versions 1 and 2).

Only the valence charge, the radial mesh, the non-linear core charge (``PP_NLCC``)
and the functional are read. Radii in Bohr, the core charge in electrons/Bohr³
(UPF convention: ``rho_core(r)``, not multiplied by 4πr²).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MlscaleError


@dataclass(frozen=True, eq=False)
class Pseudopotential:
    """The parts of a UPF file used for the energy.

    r_r, rab_r: radial mesh and its integration weights dr/di, Bohr.
    core_r: core charge on the mesh, electrons/Bohr³, or None without core correction.
    """

    path: Path
    element: str
    z_valence: float
    functional: str
    pseudo_type: str
    r_r: np.ndarray
    rab_r: np.ndarray
    core_r: np.ndarray | None


def read_upf(path: str | os.PathLike[str]) -> Pseudopotential:
    """Read a UPF (v1 or v2) file; raise MlscaleError if it is missing or corrupt."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise MlscaleError(f"cannot read pseudopotential {path}: {error.strerror}") from None
    try:
        if re.search(r"<PP_HEADER\s*>", text):
            header = _header_v1(text)
        else:
            header = _header_v2(text)
        r_r = _numbers(text, "PP_R")
        rab_r = _numbers(text, "PP_RAB")
        core_r = _numbers(text, "PP_NLCC") if header["core_correction"] else None
    except (ValueError, KeyError, IndexError) as error:
        raise MlscaleError(f"corrupt pseudopotential {path}: {error}") from None
    n = len(r_r)
    if n < 3 or len(rab_r) != n or (core_r is not None and len(core_r) != n):
        raise MlscaleError(f"corrupt pseudopotential {path}: radial arrays of different lengths")
    if not (np.all(np.isfinite(r_r)) and np.all(np.isfinite(rab_r))
            and (core_r is None or np.all(np.isfinite(core_r)))):
        raise MlscaleError(f"corrupt pseudopotential {path}: non-finite numbers")
    if header["pseudo_type"] == "PAW":
        raise MlscaleError(f"{path}: PAW pseudopotentials are not supported (their one-centre "
                           "energy terms are not part of the density functional here)")
    return Pseudopotential(path=path, element=header["element"], z_valence=header["z_valence"],
                           functional=header["functional"], pseudo_type=header["pseudo_type"],
                           r_r=r_r, rab_r=rab_r, core_r=core_r)


def find_pseudopotentials(directory: str | os.PathLike[str],
                          species: Iterable[str]) -> dict[str, Path]:
    """Map each element in ``species`` to its UPF file in ``directory``.

    A file belongs to element X when its name starts with X followed by a non-letter
    (``Al.pz-vbc.UPF``, ``Be_ONCV.upf``) and ends in ``.upf`` (any case).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MlscaleError(f"pseudopotential directory {directory} does not exist")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".upf" and p.is_file())
    found = {}
    for element in dict.fromkeys(species):
        matches = [p for p in files if re.match(rf"{element}(?![a-z])", p.name)]
        if not matches:
            raise MlscaleError(f"no pseudopotential for {element} in {directory}")
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise MlscaleError(f"several pseudopotentials for {element} in {directory} ({names}); "
                               "use a directory with one per element")
        found[element] = matches[0]
    return found


_TRUE = ("T", ".T", "TRUE", ".TRUE.")


def _header_v2(text: str) -> dict[str, Any]:
    match = re.search(r"<PP_HEADER\b(.*?)/?>", text, re.S)
    if match is None:
        raise ValueError("no PP_HEADER")
    attributes = dict(re.findall(r"(\w+)\s*=\s*\"([^\"]*)\"", match.group(1)))
    pseudo_type = attributes["pseudo_type"].strip().upper()
    if attributes.get("is_paw", "F").strip().upper() in _TRUE:
        pseudo_type = "PAW"
    return {
        "element": attributes["element"].strip(),
        "z_valence": float(attributes["z_valence"]),
        "functional": " ".join(attributes["functional"].split()),
        "pseudo_type": pseudo_type,
        "core_correction": attributes.get("core_correction", "F").strip().upper() in _TRUE,
    }


def _header_v1(text: str) -> dict[str, Any]:
    match = re.search(r"<PP_HEADER\s*>(.*?)</PP_HEADER>", text, re.S)
    if match is None:
        raise ValueError("no </PP_HEADER>")
    body = match.group(1)
    lines = [line.split() for line in body.strip().splitlines()]
    # lines: version, element, type, nlcc, functional (4 words + label), z valence, ...
    return {
        "element": lines[1][0],
        "pseudo_type": lines[2][0].upper(),
        "core_correction": lines[3][0].upper() in _TRUE,
        "functional": " ".join(lines[4][:4]),
        "z_valence": float(lines[5][0]),
    }


def _numbers(text: str, tag: str) -> np.ndarray:
    match = re.search(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}>", text, re.S)
    if match is None:
        raise ValueError(f"no {tag} section")
    return np.array(match.group(1).split(), dtype=float)
