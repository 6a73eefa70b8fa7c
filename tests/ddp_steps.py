"""A few optimiser steps of a tiny DETR on fixed batches, in one process or under
``torchrun --nproc_per_node=2`` (gloo, CPU).  Used by tests/test_accumulation.py.

As a script: ``ddp_steps.py OUT_DIR`` writes, per rank, the model after three steps on
clean data (``clean_rank{r}.pt``) and after three steps where rank 1's second batch
holds a NaN pixel (``nan_rank{r}.pt``), and after three steps on two images per rank,
halves of the batches of four that :func:`quads` deals (``pairs_rank{r}.pt``).
"""

import sys

import helpers
import torch
import torch.distributed as dist

from detr_irpe.config import OptimConfig, RunConfig
from detr_irpe.training.loop import LoopSettings, train_one_epoch

NAN_BATCH = 3  # rank 1's second batch when 6 batches are dealt to 2 ranks


def tiny_model(eos_coef: float = 0.1, **options):
    return helpers.tiny_model(num_queries=5, num_classes=3, dropout=0.0, eos_coef=eos_coef,
                              **options)


def batches(n: int, images_per_batch: int = 1) -> list:
    """Same-size images (no padding effects) with 1, 2 or 3 boxes each."""
    g = torch.Generator().manual_seed(1)
    out = []
    for b in range(n):
        images, targets = [], []
        for i in range(images_per_batch):
            image_id = b * images_per_batch + i
            k = 1 + image_id % 3
            centre = torch.rand(k, 2, generator=g) * 0.5 + 0.25
            size = torch.rand(k, 2, generator=g) * 0.2 + 0.1
            images.append(torch.randn(3, 64, 64, generator=g))
            targets.append({"labels": torch.randint(0, 3, (k,), generator=g),
                            "boxes": torch.cat([centre, size], 1), "image_id": image_id})
        out.append((images, targets))
    return out


def quads() -> list:
    """Three batches of four same-size images holding 1, 2, 3, 1 / 2, 3, 1, 2 / ... boxes:
    the pairs of a batch hold different numbers of boxes."""
    return batches(3, images_per_batch=4)


def train_steps(data: list, accum_steps: int, eos_coef: float = 0.1, ddp: bool = False,
                **options) -> dict:
    """Plain SGD (the update is a multiple of the gradient), no clipping."""
    model, criterion, _ = tiny_model(eos_coef, **options)
    core = model
    if ddp:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in core.parameters() if p.requires_grad], lr=0.1)
    settings = LoopSettings.of(OptimConfig(clip_max_norm=0, accum_steps=accum_steps),
                               RunConfig(print_freq=1000), torch.device("cpu"), verbose=False)
    train_one_epoch(model, criterion, data, opt, 0, settings)
    return core.state_dict()


def with_nan(data: list, index: int) -> list:
    images, targets = data[index]
    broken = images[0].clone()
    broken[0, 5, 5] = float("nan")
    return data[:index] + [([broken, *images[1:]], targets)] + data[index + 1 :]


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = batches(6)
    torch.save(train_steps(data[rank::world], 1, ddp=True), f"{out}/clean_rank{rank}.pt")
    if rank == 1:
        data = with_nan(data, NAN_BATCH)
    torch.save(train_steps(data[rank::world], 1, ddp=True), f"{out}/nan_rank{rank}.pt")
    pairs = [(images[2 * rank : 2 * rank + 2], targets[2 * rank : 2 * rank + 2])
             for images, targets in quads()]
    torch.save(train_steps(pairs, 1, ddp=True), f"{out}/pairs_rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
