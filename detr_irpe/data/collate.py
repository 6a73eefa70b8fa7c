"""Batching for detection: images differ in size, so they stay a list (the model pads)."""

from __future__ import annotations

import torch


def collate_fn(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...]`` -> ``([image, ...], [target, ...])``.

    Images ((3, H_i, W_i) tensors) are not stacked: the model pads them to a common size and
    builds the padding mask itself. Targets are the per-image dicts of
    :class:`~detr_irpe.data.coco.CocoDetection`, unchanged.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
