"""DETR's optimiser, learning-rate schedule and (for fp16) loss scaler."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig


def param_groups(model: nn.Module, lr_backbone: float) -> list[dict]:
    """Two groups: the transformer and heads (the base lr) and the backbone (``lr_backbone``);
    frozen parameters are left out."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if not n.startswith("backbone.")]},
        {"params": [p for n, p in trainable if n.startswith("backbone.")], "lr": lr_backbone},
    ]


def build_optimizer(model: nn.Module, optim: OptimConfig, lr_backbone: float,
                    device: torch.device):
    """``(AdamW, StepLR dividing the lr by 10 after optim.lr_drop epochs, GradScaler or None)``.
    The fused AdamW kernel makes the same update in one pass per parameter (faster:
    docs/benchmarks.md)."""
    optimizer = torch.optim.AdamW(param_groups(model, lr_backbone), lr=optim.lr,
                                  weight_decay=optim.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, optim.lr_drop)
    scaler = torch.amp.GradScaler(device.type) if optim.amp == "fp16" else None
    return optimizer, scheduler, scaler
