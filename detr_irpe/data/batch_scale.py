"""One training scale per batch (``--scale_per_batch``).

DETR draws the training resize's shorter side anew for every image, and the model pads a
batch to its largest image: with four images at four scales, a quarter or more of what the
backbone sees is padding.  With this option the batch sampler draws the scale once per
batch, and both branches' final resize of the augmentation
(:func:`~detr_irpe.data.transforms.make_transforms`) use it: the images of a batch share
their shorter side, and square images need no padding at all.  Each image still sees every
scale with the same probability; only the independence between the images of a batch is
given up.

The draw travels with the indices: the sampler yields ``(index, scale)`` pairs,
:class:`~detr_irpe.data.coco.CocoDetection` takes them apart and applies its transforms
inside :func:`using_scale`; a ``scale`` is a position in the list of training scales
(taken modulo its length by the resize).  The draws come from a generator of their own,
seeded per epoch like the image order, so that a resumed run draws the same scales.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch

# The batch's scale while a dataset item is transformed (None: each resize draws its own).
_SCALE: ContextVar[int | None] = ContextVar("batch_scale", default=None)


@contextlib.contextmanager
def using_scale(scale: int | None):
    """Within the block, the per-batch resizes use scale number ``scale`` (None: their own
    draw)."""
    token = _SCALE.set(scale)
    try:
        yield
    finally:
        _SCALE.reset(token)


def batch_scale() -> int | None:
    """The scale set by :func:`using_scale`, or None."""
    return _SCALE.get()


class ScalePerBatch:
    """A batch sampler that pairs every index of a batch with one scale drawn for the batch
    (uniform over ``num_scales``) from its own generator (:meth:`seed`)."""

    def __init__(self, batch_sampler, num_scales: int):
        self.batch_sampler, self.num_scales = batch_sampler, num_scales
        self.generator = torch.Generator()

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def __iter__(self):
        for batch in self.batch_sampler:
            scale = int(torch.randint(self.num_scales, (), generator=self.generator))
            yield [(index, scale) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)
