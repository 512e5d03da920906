"""The Python steps of jobs/gpu_check.sh (issue 16's checks on a GPU), one per sub-command,
each writing one JSON file; ``summary`` merges them.

    python jobs/gpu_check.py env OUT.json
    python jobs/gpu_check.py descriptors OUT.json        # GPU vs CPU kernel: Al, Be2
    python jobs/gpu_check.py throughput OUT.json         # points/s, descriptors and network
    python jobs/gpu_check.py compare CPU_DIR GPU_DIR OUT.json   # two results.json
    python jobs/gpu_check.py structure N_REPEAT OUT.xyz  # the thermal Al cell, repeated
    python jobs/gpu_check.py summary DIR OUT.json

The pure functions (metric, comparison, FLOP count) are tested on the CPU
(tests/test_gpu_check.py); the GPU steps need ``--device cuda`` to work.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

#: H200 SXM peak float64 without tensor cores (what the kernel's FMAs can use), TFLOP/s
H200_FP64_TFLOPS = 34.0
#: relative tolerance of predict --device cuda against the CPU's results.json (issue 16)
RESULTS_RTOL = 1e-8
RESULT_KEYS = ("fermi_energy_eV", "band_energy_eV", "entropy_contribution_eV",
               "number_of_electrons", "number_of_electrons_from_density")


def metric_ratio(test, reference) -> float:
    """max |test - reference| / (1e-10 |reference| + 1e-13 max|reference column|): the
    acceptance metric of the native kernel (issue 6) holds when this is <= 1."""
    test = np.asarray(test, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if test.shape != reference.shape:
        raise ValueError(f"shapes differ: {test.shape} vs {reference.shape}")
    if reference.size == 0:
        return 0.0
    flat = reference.reshape(-1, reference.shape[-1])
    bound = 1e-10 * np.abs(reference) + 1e-13 * np.abs(flat).max(axis=0)
    return float((np.abs(test - reference) / bound).max())


def compare_results(cpu: dict, gpu: dict, rtol: float = RESULTS_RTOL) -> dict:
    """Per results.json key: both values and the relative difference; ``ok`` if all
    are within ``rtol``."""
    out: dict = {"rtol": rtol, "keys": {}}
    for key in RESULT_KEYS:
        if key not in cpu or key not in gpu:
            continue
        a, b = float(cpu[key]), float(gpu[key])
        rel = abs(b - a) / max(abs(a), 1e-300)
        out["keys"][key] = {"cpu": a, "gpu": b, "relative_difference": rel}
    out["ok"] = bool(out["keys"]) and all(v["relative_difference"] <= rtol
                                          for v in out["keys"].values())
    return out


def kernel_flops_per_point(twojmax: int, neighbours: float) -> dict:
    """Floating-point operations per grid point of the CUDA kernel (a multiply-add
    counts 2): U recursion per neighbour, Z/B over the Clebsch–Gordan products."""
    from mlscale.descriptors._native_tables import tables

    t = tables(twojmax)
    u_elements = sum((j // 2 + 1) * (j + 1) for j in range(1, twojmax + 1))
    u = neighbours * (u_elements * (4 * 2 + 2 + 2 * 2) + 40)  # 2 complex products, utot +=
    zb = t.prod_c.size * 12 + t.entry_u.size * 6  # per product: 2 complex mults + c·, +=
    return {"u_per_point": u, "zb_per_point": zb, "total": u + zb,
            "products": int(t.prod_c.size), "entries": int(t.entry_u.size)}


def _env(out: Path) -> None:
    import numba
    import torch

    info = {"numba": numba.__version__, "torch": torch.__version__,
            "torch_cuda": torch.cuda.is_available(),
            "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")}
    try:
        from numba import cuda

        info["numba_cuda"] = bool(cuda.is_available())
        info["gpus"] = [str(g.name) for g in cuda.gpus] if cuda.is_available() else []
    except Exception as error:  # noqa: BLE001 - recorded, not raised
        info["numba_cuda"] = f"{type(error).__name__}: {error}"
    out.write_text(json.dumps(info, indent=2))


def _cases():
    """(name, atoms, grid shape, settings): Al (built-in example, shipped settings), Be2
    (MALA's cell if ../shared holds it, else ASE's hcp Be)."""
    from ase import Atoms
    from ase.build import bulk

    from mlscale import BispectrumSettings
    from mlscale.examples import builtin_example, shipped_model_path
    from mlscale.model import read_model_file

    shipped = read_model_file(shipped_model_path())[0].descriptors
    cases = [("al32_shipped", builtin_example(), (45, 45, 45), shipped)]
    info = Path(__file__).resolve().parents[2] / "shared/mala-test-data/Be2/Be_snapshot0.info.json"
    if info.is_file():
        a = json.loads(info.read_text())["atoms"]
        be2 = Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=True)
        name = "be2_mala"
    else:
        be2 = bulk("Be", "hcp", a=2.29, c=3.58)
        be2.positions += np.random.default_rng(1).normal(0.0, 0.05, be2.positions.shape)
        name = "be2_hcp_ase"
    cases.append((name, be2, (18, 18, 27), BispectrumSettings(species=("Be",))))
    return cases


def _descriptors(out: Path) -> None:
    from mlscale import Grid
    from mlscale.descriptors import cuda as gpu
    from mlscale.descriptors.native import compute_block

    result = {}
    for name, atoms, shape, settings in _cases():
        grid = Grid(atoms.cell.array, shape)
        block = grid.full_block()
        t0 = time.perf_counter()
        cpu = compute_block(atoms, grid, block, settings)
        t1 = time.perf_counter()
        first = gpu.compute_block(atoms, grid, block, settings)  # includes the JIT compile
        t2 = time.perf_counter()
        again = gpu.compute_block(atoms, grid, block, settings)
        t3 = time.perf_counter()
        ratio = metric_ratio(again, cpu)
        result[name] = {"points": block.size, "metric_ratio": ratio, "ok": ratio <= 1.0,
                        "repeatable": bool(np.array_equal(first, again)),
                        "cpu_s": t1 - t0, "gpu_first_call_s": t2 - t1, "gpu_s": t3 - t2}
    out.write_text(json.dumps(result, indent=2))


def _throughput(out: Path) -> None:
    """Points/s of the CUDA kernel (device array out) and of the torch network on the
    GPU (from those device descriptors), shipped model, 8×8×8 Al cells (~700k points)."""
    import torch
    from numba import cuda

    from mlscale import Block, Grid
    from mlscale.descriptors import cuda as gpu
    from mlscale.device import Device, DeviceNetwork
    from mlscale.examples import builtin_example, shipped_model_path

    atoms = builtin_example().repeat(2)
    net = DeviceNetwork.from_file(shipped_model_path(), Device("cuda", 0))
    settings = net.info.descriptors
    grid = Grid(atoms.cell.array, (90, 90, 90))
    block = Block((0, 0, 0), (90, 90, 90))
    gpu.compute_block(atoms, grid, Block((0, 0, 0), (4, 4, 4)), settings)  # compile
    cuda.synchronize()
    t0 = time.perf_counter()
    d = gpu.compute_block(atoms, grid, block, settings, on_device=True)
    cuda.synchronize()
    t1 = time.perf_counter()
    plane = Block((0, 0, 0), (1, 90, 90))  # 8,100 points: about the CPU's chunk size
    t_small = time.perf_counter()
    for _ in range(10):
        gpu.compute_block(atoms, grid, plane, settings, on_device=True)
    cuda.synchronize()
    small_rate = 10 * plane.size / (time.perf_counter() - t_small)
    x = torch.as_tensor(d.reshape(block.size, -1), device=net.torch_device)
    with torch.no_grad():
        for lo in range(0, block.size, 1 << 18):  # one warm-up chunk, then all
            net.model.module.restricted(x[lo:lo + (1 << 18)].float())
            if lo == 0:
                torch.cuda.synchronize()
                t2 = time.perf_counter()
    torch.cuda.synchronize()
    t3 = time.perf_counter()
    neighbours = _mean_neighbours(atoms, settings.cutoff)
    flops = kernel_flops_per_point(settings.twojmax, neighbours)
    rate = block.size / (t1 - t0)
    out.write_text(json.dumps({
        "points": block.size, "twojmax": settings.twojmax, "layers": net.info.settings.layers,
        "descriptor_points_per_s": rate, "descriptor_points_per_s_8100_point_chunks": small_rate,
        "network_points_per_s": (block.size - (1 << 18)) / (t3 - t2),
        "neighbours_per_point": neighbours, "kernel_flops": flops,
        "kernel_TFLOPs": rate * flops["total"] / 1e12,
        "fraction_of_fp64_peak": rate * flops["total"] / 1e12 / H200_FP64_TFLOPS,
        "torch_max_memory_allocated_MiB": torch.cuda.max_memory_allocated() / 2**20}, indent=2))


def _mean_neighbours(atoms, cutoff_A: float) -> float:
    """Atoms within the cutoff of a grid point, on average (density × sphere volume)."""
    return float(len(atoms) / atoms.get_volume() * 4.0 / 3.0 * np.pi * cutoff_A**3)


def _summary(directory: Path, out: Path) -> None:
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))
             if p.resolve() != out.resolve()}
    out.write_text(json.dumps(parts, indent=2))


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "env":
        _env(Path(args[0]))
    elif command == "descriptors":
        _descriptors(Path(args[0]))
    elif command == "throughput":
        _throughput(Path(args[0]))
    elif command == "compare":
        cpu, gpu, out = (Path(a) for a in args)
        result = compare_results(json.loads((cpu / "results.json").read_text()),
                                 json.loads((gpu / "results.json").read_text()))
        for name, directory in (("cpu", cpu), ("gpu", gpu)):
            r = json.loads((directory / "results.json").read_text())
            result[f"{name}_timings_s"] = r.get("timings_s")
            result[f"{name}_peak_memory_per_rank_MiB"] = r.get("peak_memory_per_rank_MiB")
        Path(out).write_text(json.dumps(result, indent=2))
    elif command == "structure":
        from mlscale.examples import builtin_example

        atoms = builtin_example().repeat(int(args[0]))
        atoms.write(args[1])
        print(f"{len(atoms)} atoms written to {args[1]}")
    elif command == "summary":
        _summary(Path(args[0]), Path(args[1]))
    else:
        raise SystemExit(f"unknown step {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
