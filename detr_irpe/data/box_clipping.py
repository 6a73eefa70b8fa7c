"""Boxes cut to the image they belong to: the repair made to every box at load time, and by
the crop augmentation.

Both functions return ``(xyxy, keep)``: the (n, 4) absolute XYXY boxes clipped to the image
(by ``torchvision.ops.clip_boxes_to_image``), and the (n,) bool mask of the boxes left with a
width and height above :data:`SLIVER`; the caller drops the others.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, clip_boxes_to_image

# Boxes no wider or taller than this (pixels) count as empty.  A box whose edge lies on the
# crop's edge in exact arithmetic can keep a sliver of float32 rounding (180 * 1.05 - 4 gives
# 184.99998 against the crop's 185): a later resize rounds that to no height at all, and the
# matcher stops the run.  Rounding leaves at most a thousandth of a pixel at any image size
# DETR uses; no annotated object is this thin.
SLIVER = 0.01


def clip_to_image(xyxy: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip (n, 4) absolute XYXY boxes to an image of size ``image_hw`` = (height, width)."""
    clipped = clip_boxes_to_image(xyxy, image_hw)
    keep = (clipped[:, 2] - clipped[:, 0] > SLIVER) & (clipped[:, 3] - clipped[:, 1] > SLIVER)
    return clipped, keep


def clip_boxes(xywh: torch.Tensor, image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The box repair used at load time (and counted by
    :func:`~detr_irpe.data.checker.checks.check_dataset`): (n, 4) COCO boxes ``[x, y, w, h]`` in
    pixels to XYXY, clipped to an image of size ``image_hw`` = (height, width)."""
    return clip_to_image(box_convert(xywh, in_fmt="xywh", out_fmt="xyxy"), image_hw)
