"""Where a run computes and writes: the device of each process, its CPU threads and random
seed, and a writable output folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from detr_irpe.files import writable_folder
from detr_irpe.machine.cpu import available_cores, configure_cpu
from detr_irpe.machine.distributed import DistInfo


def device_name(device: str | None) -> str:
    """``--device``, or cuda when available."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def available_device(device: str | torch.device, what: str = "--device") -> torch.device:
    """``device`` as a torch.device; RuntimeError naming ``what`` when it is a GPU and this
    machine has none."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{what} {device}: CUDA is not available here; use {what} cpu")
    return device


def process_device(device: str | None, info: DistInfo) -> torch.device:
    """This process's device: ``cuda`` means the GPU of its local rank."""
    name = str(available_device(device_name(device)))
    if name == "cuda" and info.enabled:
        name = f"cuda:{info.local_rank}"
    return torch.device(name)


def prepare_process(device: torch.device, threads: int | None, seed: int,
                    info: DistInfo) -> None:
    """CPU threads (the machine's cores split between its processes) and the seeds
    (``seed`` + rank) of torch, numpy and Python."""
    if device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.enabled else 1))
        configure_cpu(threads or max(1, available_cores() // max(1, local)))
    torch.manual_seed(seed + info.rank)
    np.random.seed(seed + info.rank)
    random.seed(seed + info.rank)


def output_folder(output_dir: str | None, is_main: bool) -> Path | None:
    """The run's folder, created and checked for a little room by the main process."""
    if output_dir is None:
        return None
    if is_main:
        return writable_folder(output_dir, "--output_dir", room=2**20)  # a little room
    return Path(output_dir)
