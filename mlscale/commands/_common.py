"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import json


def add_descriptor_backend(parser):
    parser.add_argument("--descriptors", dest="backend", choices=("lammps", "native"),
                        default="native", help="descriptor backend: native (numba kernel, "
                        "matched to LAMMPS) or lammps (reference); default: %(default)s")


def add_device(parser):
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where each rank computes: cpu (default) or cuda, the GPU "
                        "local_rank %% gpus_on_node of its node: descriptors (CUDA kernel) "
                        "and network (torch, float32, whatever --network says) on it; an "
                        "error without a usable GPU (docs/gpu.md)")


def add_integration(parser):
    parser.add_argument("--integration", choices=("analytical", "quadrature"),
                        default="analytical",
                        help="Fermi-Dirac integration over energy (default: %(default)s)")


def print_json(comm, data: dict):
    comm.print(json.dumps(data, indent=2, sort_keys=True))
