"""DETR's optimiser, learning-rate schedule and (for fp16) loss scaler.

Two schedules (``--lr_schedule``):

- ``step`` (DETR): the learning rates are divided by 10 after ``--lr_drop`` epochs; a
  ``StepLR`` stepped once per epoch, as in the official code;
- ``cosine``: a per-step factor that falls from 1 to :data:`COSINE_FLOOR` along half a
  cosine over the run's optimiser steps (:class:`LrFactor`), a ``LambdaLR`` stepped
  after every optimiser step.

``--warmup_steps N`` multiplies either by a linear ramp over the first N optimiser steps
(then the step schedule is per-step too, with the drop at the same epoch).  A
``--time_budget`` run is per-step as well: its length is only known once it is planned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from detr_irpe.config import OptimConfig

COSINE_FLOOR = 0.01  # the cosine schedule ends at this fraction of the learning rates


def param_groups(model: nn.Module, lr_backbone: float) -> list[dict]:
    """Two groups: the transformer and heads (the base lr) and the backbone (``lr_backbone``);
    frozen parameters are left out."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if not n.startswith("backbone.")]},
        {"params": [p for n, p in trainable if n.startswith("backbone.")], "lr": lr_backbone},
    ]


class LrFactor:
    """The learning-rate factor of optimiser step ``n`` (counted from 0) of a run of
    ``total`` steps: a linear warm-up over ``warmup`` steps times either half a cosine from 1
    to :data:`COSINE_FLOOR` (``drop`` None) or DETR's step, 0.1 from the fraction ``drop``
    of the run on.

    A plain object, so that ``LambdaLR.state_dict()`` stores its fields with the checkpoint;
    ``total`` changes when a time budget re-plans the run.
    """

    def __init__(self, total: int, warmup: int, drop: float | None = None):
        self.total, self.warmup, self.drop = total, warmup, drop

    def __call__(self, n: int) -> float:
        ramp = min(1.0, (n + 1) / self.warmup) if self.warmup else 1.0
        progress = min(n / max(self.total, 1), 1.0)
        if self.drop is not None:
            return ramp * (0.1 if progress >= self.drop else 1.0)
        return ramp * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def per_step(scheduler) -> bool:
    """True when ``scheduler`` is stepped after every optimiser step (else once per epoch)."""
    return isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)


def build_scheduler(optimizer, optim: OptimConfig, steps_per_epoch: int):
    """The schedule of ``optim`` (see the module docstring); ``steps_per_epoch`` counts
    optimiser steps.  DETR's own (step, no warm-up, no budget) is the official per-epoch
    ``StepLR``; everything else a per-step ``LambdaLR`` over :class:`LrFactor`, where the
    step comes at the same fraction of the run as ``lr_drop`` of ``epochs``."""
    if optim.lr_schedule == "step" and optim.warmup_steps == 0 and optim.time_budget is None:
        return torch.optim.lr_scheduler.StepLR(optimizer, optim.lr_drop)
    drop = optim.lr_drop / optim.epochs if optim.lr_schedule == "step" else None
    factor = LrFactor(optim.epochs * steps_per_epoch, optim.warmup_steps, drop)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, optim: OptimConfig, lr_backbone: float,
                    device: torch.device, steps_per_epoch: int):
    """``(AdamW, learning-rate schedule, GradScaler or None)``.  The fused AdamW kernel makes
    the same update in one pass per parameter (faster: docs/benchmarks.md)."""
    optimizer = torch.optim.AdamW(param_groups(model, lr_backbone), lr=optim.lr,
                                  weight_decay=optim.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = build_scheduler(optimizer, optim, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if optim.amp == "fp16" else None
    return optimizer, scheduler, scaler
