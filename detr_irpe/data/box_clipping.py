"""Boxes cut to the image they belong to: the repair made to every box at load time."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert


def clip_boxes(
    xywh: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box repair used at load time (and counted by
    :func:`~detr_irpe.data.checks.check_dataset`).

    Args:
        xywh: (n, 4) COCO boxes ``[x, y, w, h]`` in pixels.
        width, height: the image size, a number or one value per box ((n,) tensors).

    Returns ``(xyxy, keep)``: (n, 4) absolute XYXY boxes clipped to the image, and the (n,)
    bool mask of the boxes with a positive width and height after clipping.
    """
    xyxy = box_convert(xywh, in_fmt="xywh", out_fmt="xyxy")
    w = torch.as_tensor(width, dtype=xyxy.dtype).reshape(-1, 1)
    h = torch.as_tensor(height, dtype=xyxy.dtype).reshape(-1, 1)
    xyxy[:, 0::2] = torch.minimum(xyxy[:, 0::2].clamp(min=0), w)
    xyxy[:, 1::2] = torch.minimum(xyxy[:, 1::2].clamp(min=0), h)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return xyxy, keep
