"""The work the benchmarks time: DETR-R50 with or without iRPE-K, two COCO-sized images
with three boxes each, and one training step as ``main.py`` takes it."""

from __future__ import annotations

import itertools

import torch

from detr_irpe import build_detr
from detr_irpe.training.loop import autocast

IMAGE_SIZES = [(800, 1066), (800, 1201)]
IRPE_K = "rpe-2.0-product-ctx-1-k"
# A model small enough to run every section on a CPU in seconds (``--tiny``).
TINY_MODEL = {"backbone": "resnet18", "hidden_dim": 32, "nheads": 2, "enc_layers": 1,
              "dec_layers": 1, "dim_feedforward": 64, "num_queries": 10}
TINY_IMAGE_SIZES = [(64, 96), (64, 76)]


def build_model(enc: str, device, **options):
    """(model, criterion, postprocessors) of DETR-R50 with ``enc_rpe2d=enc`` (other
    ``build_detr`` options as given, e.g. :data:`TINY_MODEL`), seeded, on ``device``; the
    backbone is not pretrained (nothing is downloaded)."""
    torch.manual_seed(0)
    model, criterion, post = build_detr(enc_rpe2d=enc, pretrained_backbone="none", **options)
    return model.to(device), criterion.to(device), post


def make_batch(device, sizes=IMAGE_SIZES):
    """Random images of ``sizes`` (3, H, W) and their targets (labels, boxes as normalised
    cxcywh), the same on every call."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, h, w, generator=g).to(device) for h, w in sizes]
    targets = [{"labels": torch.tensor([1, 17, 40], device=device),
                "boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.2],
                                       [0.5, 0.5, 0.8, 0.9]], device=device)}
               for _ in images]
    return images, targets


def train_step_fn(model, criterion, device, amp: str = "off", sizes=IMAGE_SIZES, batches=None):
    """One training step as main.py takes it (``amp``: off, bf16 or fp16 autocast, the
    latter with a gradient scaler) on images of ``sizes`` -- or, when ``batches`` (a list of
    (images, targets)) is given, on each of them in turn.  The step returns its loss, a
    detached tensor."""
    params = [p for p in model.parameters() if p.requires_grad]
    # The optimiser main.py uses (fused AdamW on CPU and CUDA).
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4,
                                  fused=device.type in ("cpu", "cuda"))
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    turns = itertools.cycle(batches or [make_batch(device, sizes)])
    model.train()

    def step():
        images, targets = next(turns)
        with autocast(device, amp):
            outputs = model(images)
        losses = criterion(outputs, targets)
        loss = sum(losses[k] * v for k, v in criterion.weight_dict.items())
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    step.scaler = scaler
    return step
