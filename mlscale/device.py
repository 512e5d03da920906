"""Where a rank computes: its CPU cores (default) or one GPU of its node.

``select_device("cuda", comm)`` binds each rank to GPU ``local_rank % gpus_on_node``
(``local_rank``: the rank's index among the ranks of its node, MPI's
``COMM_TYPE_SHARED``), for numba.cuda (the descriptor kernel) and torch (the network).
On the GPU a chunk of grid points goes descriptors (float64, the CUDA kernel) →
network (torch, float32) without leaving the device; the chunk's float32 LDOS comes
back to the host, where the pipeline keeps its energy window (mlscale.inference).
:meth:`DeviceNetwork.ldos_and_dos` also sums the chunk's DOS on the device (float64),
for a pipeline that keeps the LDOS on the GPU; today's pipeline sums it on the host.
Without a usable GPU (no CUDA driver, no device, numba without its CUDA target, torch
without CUDA) ``cuda`` is a MlscaleError on every rank. Neither numba.cuda nor torch
is imported by a CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from .errors import MlscaleError
from .model import DEFAULT_CHUNK_POINTS, ModelInfo
from .parallel import Comm

DEVICES = ("cpu", "cuda")
#: grid points per chunk on a GPU (predict's default there): 4,096 blocks of 64 threads,
#: where the CPU's 8,192 points would give an H200's 132 SMs two warps each; ~1 GiB of
#: device memory with the shipped network (a reasoned choice, not yet measured)
DEVICE_CHUNK_POINTS = 1 << 18


@dataclass(frozen=True)
class Device:
    """A rank's device: ``kind`` "cpu" or "cuda"; ``index`` the GPU on its node."""

    kind: str = "cpu"
    index: int = 0

    @property
    def torch_name(self) -> str:
        """The torch device string ("cpu", "cuda:1")."""
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def check_device_name(name: str) -> None:
    if name not in DEVICES:
        raise MlscaleError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")


def node_rank(comm: Comm) -> int:
    """This rank's index among the ranks of its node (collective)."""
    node = comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
    rank = node.Get_rank()
    node.Free()
    return rank


def select_device(name: str, comm: Comm, *, need_torch: bool = True) -> Device:
    """The device ``name`` for this rank, bound (``cuda``: GPU local_rank % gpus_on_node
    for numba.cuda and, with need_torch, torch). Collective: MlscaleError on every rank
    if any rank cannot use it."""
    local_rank = node_rank(comm)
    with comm.collective():
        check_device_name(name)
        device = Device() if name == "cpu" else bind_gpu(local_rank, need_torch)
    return device


def bind_gpu(local_rank: int, need_torch: bool = True) -> Device:
    """Make GPU ``local_rank % gpus_on_node`` current for numba.cuda (and torch)."""
    from .descriptors.cuda import cuda_module

    cuda = cuda_module()
    count = len(cuda.gpus)
    if count < 1:
        raise MlscaleError("--device cuda: numba.cuda sees no GPU on this node")
    index = local_rank % count
    cuda.select_device(index)
    if need_torch and not cuda_simulated():
        import torch

        if not torch.cuda.is_available():
            raise MlscaleError(f"--device cuda: torch {torch.__version__} has no CUDA "
                               "(a CPU-only build, or no driver); install a CUDA build")
        torch.cuda.set_device(index)
        # float32 products, not TF32 (+0.2 meV/atom in the band energy, docs/gpu.md);
        # TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 (NVIDIA's containers) would still force it
        torch.set_float32_matmul_precision("highest")
    return Device("cuda", index)


def cuda_simulated() -> bool:
    """Whether numba.cuda is numba's CPU simulator (NUMBA_ENABLE_CUDASIM=1): the
    network then runs in torch on the CPU."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


class DeviceNetwork:
    """An LDOS network (:class:`mlscale.model.TorchModel`) on a torch device.

    The :class:`mlscale.model.Model` protocol plus :meth:`ldos_and_dos` (the chunk's
    DOS summed on the device). device: the rank's :class:`Device`; the network runs
    on its torch device (on the CPU for Device() and under numba's CUDA simulator).
    The prediction pipeline computes the descriptors where the model is
    (:func:`model_device`).
    """

    def __init__(self, model, device: Device | None = None):
        device = Device() if device is None else device
        self.model = model
        self.device = device
        self.torch_device = ("cpu" if device.kind == "cpu" or cuda_simulated()
                             else device.torch_name)
        model.module.to(self.torch_device)
        self.info: ModelInfo = model.info

    @classmethod
    def from_file(cls, path, device: Device) -> DeviceNetwork:
        """The model file ``path`` in torch on ``device``."""
        from .model import load_model

        return cls(load_model(path, "torch"), device)

    @property
    def n_features(self) -> int:
        return self.info.settings.layers[0]

    @property
    def n_energies(self) -> int:
        return self.info.settings.layers[-1]

    def __call__(self, descriptors_pf, chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        """LDOS [points, energies] in 1/(eV·Å³), float32 (the network's precision) on
        the host, from descriptors anywhere (as :meth:`ldos_and_dos`)."""
        return self.ldos_and_dos(descriptors_pf, 1.0, chunk_points)[0]

    def vjp(self, descriptors_pf, grad_ldos_pe,
            chunk_points: int = DEFAULT_CHUNK_POINTS) -> np.ndarray:
        return self.model.vjp(descriptors_pf, grad_ldos_pe, chunk_points)

    def ldos_and_dos(self, descriptors_pf, voxel_volume_A3: float,
                     chunk_points: int = DEFAULT_CHUNK_POINTS
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's LDOS (host float32 ``[points, energies]``, 1/(eV·Å³), restriction
        applied) and its partial DOS Σ_p LDOS·ΔV (float64, 1/eV, summed on the device).

        descriptors_pf: ``[points, features]`` float64, a NumPy array, a torch tensor or
        a CUDA array (``__cuda_array_interface__``: no copy through the host).
        MlscaleError for a wrong shape or non-finite descriptors or LDOS.
        """
        import torch

        x = _as_tensor(descriptors_pf, self.torch_device)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise MlscaleError(f"descriptors have shape {tuple(x.shape)}, the network needs "
                               f"[points, {self.n_features}]")
        if chunk_points < 1:
            raise MlscaleError("chunk_points must be positive")
        ldos_pe = np.empty((x.shape[0], self.n_energies), dtype=np.float32)
        dos = torch.zeros(self.n_energies, dtype=torch.float64, device=self.torch_device)
        with torch.no_grad():
            if not bool(torch.isfinite(x).all()):
                raise MlscaleError("descriptors contain NaN or infinite values")
            for lo in range(0, x.shape[0], chunk_points):
                ldos = self.model.module.restricted(x[lo:lo + chunk_points].float())
                dos += ldos.sum(dim=0, dtype=torch.float64)
                ldos_pe[lo:lo + ldos.shape[0]] = ldos.cpu().numpy()
        dos_e = dos.cpu().numpy() * voxel_volume_A3
        if not np.all(np.isfinite(dos_e)):
            raise MlscaleError("LDOS contains NaN or infinite values")
        return ldos_pe, dos_e


def _as_tensor(array, torch_device: str):
    """A torch tensor on ``torch_device`` viewing (CUDA arrays) or copying ``array``."""
    import torch

    if isinstance(array, torch.Tensor):
        return array.to(torch_device)
    if hasattr(array, "__cuda_array_interface__") and torch_device.startswith("cuda"):
        return torch.as_tensor(array, device=torch_device)
    if hasattr(array, "copy_to_host"):  # a device array of numba's simulator
        array = array.copy_to_host()
    return torch.from_numpy(np.ascontiguousarray(array)).to(torch_device)



def model_device(model) -> str:
    """Where the descriptors for ``model`` are computed: "cuda" for a DeviceNetwork on a
    GPU (the descriptors then stay on it), "cpu" otherwise."""
    return model.device.kind if isinstance(model, DeviceNetwork) else "cpu"
