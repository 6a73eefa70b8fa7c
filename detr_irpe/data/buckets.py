"""Size buckets (``--size_buckets N``): every training batch is padded to one of a few fixed
sizes, so that the training step sees a handful of static shapes (what ``--compile`` with
``dynamic=False`` needs) instead of a new (H, W) for nearly every batch.

The rule, with ``L = ceil32(max_size)``, ``S = ceil32(min(max(scales), max_size))`` and
``lo = ceil32(min(min(scales), max_size))`` (``ceil32``: rounded up to a multiple of 32, the
stride of the ResNet's output):

- N = 1: one bucket, (L, L);
- N > 1: N - 1 buckets (h_i, w_i), i = 1 .. N - 1, with h_i = ceil32(lo + (S - lo) * i / (N - 1))
  (h_1 = S when N = 2) and w_i = min(L, ceil32(h_i * L / S)) -- the (S, L) shape scaled
  down -- and the square (L, L) last.

A batch wider than tall takes the first bucket (h, w) that covers it; a taller one the
first transposed bucket (w, h); so at most 2N - 1 shapes occur.  A batch that no bucket
covers (larger than ``max_size``, which the training resize never produces) is padded to
its own size rounded up to 32; with no buckets at all that is every batch
(``--round_batches``).

Padding only adds masked pixels; what that changes (and what not) is in
``docs/compile_and_buckets.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from detr_irpe.data.transforms import training_scales
from detr_irpe.models.backbone import ImageBatch

STRIDE = 32


def ceil32(n: int | float) -> int:
    return int(-(-n // STRIDE) * STRIDE)


def size_buckets(n: int, max_size: int, scales: Sequence[int] | None = None) -> tuple[tuple[int, int], ...]:
    """The ``n`` bucket sizes (h, w), h <= w, smallest first, for training images resized to
    a shorter side in ``scales`` (default DETR's 480..800) and a longer side <= ``max_size``."""
    if n < 1:
        raise ValueError(f"--size_buckets {n}: need at least one bucket (0 turns them off)")
    scales = training_scales(scales)
    long = ceil32(max_size)
    short = ceil32(min(max(scales), max_size))
    lo = ceil32(min(min(scales), max_size))
    rows = []
    for i in range(1, n):
        h = short if n == 2 else ceil32(lo + (short - lo) * i / (n - 1))
        rows.append((h, min(long, ceil32(h * long / short))))
    return tuple(dict.fromkeys([*rows, (long, long)]))  # distinct, in order


def bucket_for(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The padded size of a batch whose largest image extent is ``height`` x ``width``."""
    for h, w in buckets:
        if height <= width and height <= h and width <= w:
            return h, w
        if height > width and height <= w and width <= h:
            return w, h
    return ceil32(height), ceil32(width)


class BucketCollate:
    """A ``collate_fn`` (picklable, for loader workers): ``[(image, target), ...]`` ->
    ``(ImageBatch padded to the batch's bucket, [target, ...])``."""

    def __init__(self, buckets: Sequence[tuple[int, int]]):
        self.buckets = tuple(buckets)

    def __call__(self, batch: list[tuple[torch.Tensor, dict]]) -> tuple[ImageBatch, list[dict]]:
        images = [image for image, _ in batch]
        height = max(image.shape[-2] for image in images)
        width = max(image.shape[-1] for image in images)
        size = bucket_for(height, width, self.buckets)
        return ImageBatch.from_images(images, size=size), [target for _, target in batch]
