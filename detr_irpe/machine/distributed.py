"""Process-group set-up for torchrun, SLURM and single-process runs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(*names: str) -> int | None:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return None


def init_distributed(device: str, dist_url: str) -> DistInfo:
    """Join the process group described by the environment.

    torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT);
    under SLURM's ``srun`` we read SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID and expect
    MASTER_ADDR / MASTER_PORT to be exported by the batch script (see docs/training.md).
    Without either, this is a single process and nothing is initialised.
    """
    rank = _env_int("RANK", "SLURM_PROCID")
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS")
    if rank is None or world is None or world <= 1:
        return DistInfo()
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
    if "RANK" not in os.environ:  # SLURM: export what env:// initialisation reads
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
        if dist_url == "env://" and "MASTER_ADDR" not in os.environ:
            raise RuntimeError(
                "running under SLURM with several tasks but MASTER_ADDR is not set: export "
                "MASTER_ADDR (first node's host name) and MASTER_PORT in the batch script, "
                "or pass --dist_url tcp://HOST:PORT"
            )
    use_cuda = device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo", init_method=dist_url, world_size=world, rank=rank
    )
    return DistInfo(rank, world, local)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes, in place (identity when not distributed)."""
    if _active():
        dist.all_reduce(t)
    return t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    """The element-wise minimum over processes, in place (identity when not distributed)."""
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def any_process(flag: bool, device) -> bool:
    """True on every process when ``flag`` is True on at least one (one all-reduce)."""
    if not _active():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_lists(items: list) -> list:
    """The concatenation of every process's ``items`` (picklable), in rank order."""
    if not _active():
        return list(items)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [x for part in gathered for x in part]


def from_main(value):
    """The main process's ``value`` (picklable), on every process."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(values: dict[str, float], device) -> dict[str, float]:
    """Average a dict of floats over processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
