"""The train stage's processes: this process's rank and device, the torchrun line that launches K
of them (DDP; gloo on the CPU, nccl on CUDA), the process group, and what the ranks exchange (the
epoch's buffers, rank 0's early-stop decision)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(setting: str, dist: _Dist) -> torch.device:
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto|cpu|cuda, got {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank)



def init_processes(dist: _Dist, device_setting: str) -> None:
    """The process group of a run in ``dist.world`` > 1 processes (once)."""
    if dist.world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            backend = "nccl" if _device(device_setting, dist).type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(dist.local_rank)
            tdist.init_process_group(backend=backend)


def close_processes(dist: _Dist) -> None:
    """Every rank waits for the others, then leaves the process group."""
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()


def parallel(model, dist: _Dist, device: torch.device):
    """The model as the training step calls it: wrapped in DDP under several processes."""
    if dist.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


def sync_buffers(model, dist: _Dist) -> None:
    """BN statistics and EMA buffers: every rank ends the epoch with rank 0's."""
    if dist.world > 1:
        import torch.distributed as tdist

        for b in model.buffers():
            tdist.broadcast(b, 0)


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (call it on every rank of a run in several processes)."""
    import torch.distributed as tdist

    t = torch.tensor([int(flag)], device=device)
    tdist.broadcast(t, 0)
    return bool(t.item())


def torchrun_command(dataset: str, model: str, params_path: str, processes: int) -> list[str]:
    """The torchrun line that runs this stage in ``processes`` processes on this machine (a free
    rendezvous port, so two stages can run side by side)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return launcher + [f"--nproc_per_node={int(processes)}", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                       "-m", "benchmark.train", dataset, model, "--params", str(params_path)]
