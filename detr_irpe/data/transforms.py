"""DETR's data augmentation, built on ``torchvision.transforms.v2``.

Every transform here is a callable ``(image, target) -> (image, target)`` where

- ``image`` is a ``tv_tensors.Image`` (uint8, (3, H, W)),
- ``target["boxes"]`` is a ``tv_tensors.BoundingBoxes`` in absolute XYXY pixels of ``image``
  (shape (n, 4)), and ``target["labels"]``, ``["area"]``, ``["iscrowd"]`` are (n,) tensors
  kept aligned with it.

torchvision's own flip moves the boxes with the image. The resize and crop are written here
because DETR's semantics differ from torchvision's: the resize caps the longer side the way
DETR's ``get_size_with_aspect_ratio`` does (see :func:`resize_size`), and the crop draws its
side lengths uniformly from a range. :func:`to_model_format` is the last step: float
normalised image and normalised cxcywh boxes, the format the model and criterion expect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors
from torchvision.ops import box_convert

from detr_irpe.config import EVAL_MAX_SIZE, EVAL_SIZE
from detr_irpe.data.batch_scale import batch_scale
from detr_irpe.data.box_clipping import clip_to_image
from detr_irpe.data.sizing import round_to_multiple

Target = dict
Transform = Callable[[tv_tensors.Image, Target], tuple[tv_tensors.Image, Target]]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Training scales of the DETR recipe: shorter side 480, 512, ..., 800.
DETR_SCALES = tuple(range(480, 801, 32))
# Resize-crop branch: first resize the shorter side to one of these, ...
DETR_CROP_SCALES = (400, 500, 600)
# ... then crop with side lengths drawn uniformly from this range (clamped to the image).
DETR_CROP_SIZE = (384, 600)

# Target entries that hold one row per box and must be filtered together.
PER_BOX_KEYS = ("boxes", "labels", "area", "iscrowd")


def training_scales(scales: Sequence[int] | None) -> tuple[int, ...]:
    """The shorter sides of the training resize: ``scales``, or DETR's when None."""
    return DETR_SCALES if scales is None else tuple(scales)


def resize_size(
    image_hw: tuple[int, int], size: int, max_size: int | None = None
) -> tuple[int, int]:
    """Output (h, w) when the shorter side of an (h, w) image is resized to ``size``.

    If that would make the longer side exceed ``max_size``, ``size`` is first lowered to
    ``int(round(max_size * short / long))``. The longer output side is
    ``int(size * long / short)`` (truncated), exactly as in DETR. An image whose shorter side
    already equals ``size`` keeps its size.
    """
    h, w = image_hw
    short, long = min(h, w), max(h, w)
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


def to_multiple(image_hw: tuple[int, int], multiple: int) -> tuple[int, int]:
    """(h, w) with each side rounded to the nearest multiple of ``multiple`` (halves up; at
    least one multiple).  ``multiple`` 1 leaves them as they are (DETR)."""
    if multiple <= 1:
        return image_hw
    return tuple(round_to_multiple(side, multiple) for side in image_hw)


def resizes_to_nothing(image_hw: tuple[int, int], max_size: int | None) -> bool:
    """Whether :func:`resize_size` squeezes the shorter side of an (h, w) image to 0 pixels
    (at any ``size``: a strip more than about ``2 * max_size`` times longer than wide)."""
    return min(resize_size(image_hw, 1, max_size)) < 1


def filter_boxes(target: Target, keep: torch.Tensor) -> Target:
    """Keep only the boxes where the boolean (n,) mask ``keep`` is True, in every per-box key."""
    target = dict(target)
    for key in PER_BOX_KEYS:
        if key in target:
            value = target[key]
            kept = value.as_subclass(torch.Tensor)[keep]
            # Indexing unwraps tv_tensors; re-wrap so boxes keep their format and canvas.
            target[key] = (
                tv_tensors.wrap(kept, like=value)
                if isinstance(value, tv_tensors.TVTensor)
                else kept
            )
    return target


def resize(
    image: tv_tensors.Image, target: Target, size: int, max_size: int | None = None,
    multiple: int = 1,
) -> tuple[tv_tensors.Image, Target]:
    """Resize the shorter side to ``size`` (see :func:`resize_size`), then each side to a
    multiple of ``multiple`` (:func:`to_multiple`); boxes and area follow."""
    old_h, old_w = image.shape[-2:]
    new_h, new_w = to_multiple(resize_size((old_h, old_w), size, max_size), multiple)
    image = F.resize(image, [new_h, new_w])
    target = dict(target)
    target["boxes"] = F.resize(target["boxes"], [new_h, new_w])
    if "area" in target:
        target["area"] = target["area"] * (new_h / old_h) * (new_w / old_w)
    return image, target


def crop(
    image: tv_tensors.Image, target: Target, top: int, left: int, height: int, width: int
) -> tuple[tv_tensors.Image, Target]:
    """Crop a (height, width) window at (top, left).

    Boxes are shifted and clipped to the window; boxes left with no width or height
    (:data:`~detr_irpe.data.box_clipping.SLIVER`) are removed with their labels. ``area``
    becomes the area of the clipped box, as in DETR.
    """
    image = F.crop(image, top, left, height, width)
    boxes = F.crop(target["boxes"], top, left, height, width)
    xyxy, keep = clip_to_image(boxes.as_subclass(torch.Tensor), (height, width))
    target = dict(target)
    target["boxes"] = tv_tensors.wrap(xyxy, like=boxes)
    if "area" in target:
        target["area"] = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    return image, filter_boxes(target, keep)


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive) from torch's RNG (seeded per worker)."""
    return int(torch.randint(low, high + 1, ()).item())


class Resize:
    """Resize the shorter side to ``size`` with the longer side capped at ``max_size``, each
    side then rounded to a multiple of ``multiple``."""

    def __init__(self, size: int, max_size: int | None = None, multiple: int = 1):
        self.size = size
        self.max_size = max_size
        self.multiple = multiple

    def __call__(self, image, target):
        return resize(image, target, self.size, self.max_size, self.multiple)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, max_size={self.max_size}, multiple={self.multiple})"


class RandomResize:
    """Resize the shorter side to a size drawn uniformly from ``sizes`` (longer side capped).

    ``per_batch``: inside :func:`~detr_irpe.data.batch_scale.using_scale` the size is the
    batch's (``--scale_per_batch``) instead of a draw of its own."""

    def __init__(self, sizes: Sequence[int], max_size: int | None = None,
                 per_batch: bool = False, multiple: int = 1):
        self.sizes = tuple(sizes)
        self.max_size = max_size
        self.per_batch = per_batch
        self.multiple = multiple

    def __call__(self, image, target):
        chosen = batch_scale() if self.per_batch else None
        if chosen is None:
            chosen = _randint(0, len(self.sizes) - 1)
        return resize(image, target, self.sizes[chosen % len(self.sizes)], self.max_size,
                      self.multiple)

    def __repr__(self) -> str:
        return (f"RandomResize(sizes={self.sizes}, max_size={self.max_size}, "
                f"per_batch={self.per_batch}, multiple={self.multiple})")


class RandomSizeCrop:
    """Crop a random window whose height and width are uniform in [min_size, max_size].

    Both bounds are clamped to the image, so an image smaller than ``min_size`` is kept
    whole along that side. The window position is uniform over the image.
    """

    def __init__(self, min_size: int, max_size: int):
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, image, target):
        img_h, img_w = image.shape[-2:]
        height = _randint(min(self.min_size, img_h), min(self.max_size, img_h))
        width = _randint(min(self.min_size, img_w), min(self.max_size, img_w))
        top = _randint(0, img_h - height)
        left = _randint(0, img_w - width)
        return crop(image, target, top, left, height, width)

    def __repr__(self) -> str:
        return f"RandomSizeCrop(min_size={self.min_size}, max_size={self.max_size})"


def make_transforms(
    split: str,
    scales: Sequence[int] | None = None,
    max_size: int = EVAL_MAX_SIZE,
    val_size: int = EVAL_SIZE,
    crop_scales: Sequence[int] | None = None,
    crop_size: tuple[int, int] | None = None,
    size_multiple: int = 1,
) -> Transform:
    """DETR's augmentation for ``split`` ("train" or "val").

    train: horizontal flip (p 0.5); then with p 0.5 either a resize of the shorter side to
    one of ``scales`` (longer side at most ``max_size``), or a resize to one of
    ``crop_scales``, a crop with sides uniform in ``crop_size`` and the ``scales`` resize.
    val: shorter side ``val_size``, longer side at most ``max_size``.
    The final resize of either branch follows the batch's scale where one is set
    (:mod:`detr_irpe.data.batch_scale`), and rounds each side to a multiple of
    ``size_multiple`` (``--size_multiple``; 1, no rounding, is DETR's).

    The defaults are the DETR recipe (scales 480..800 step 32, 400/500/600, crop 384..600).
    When ``scales`` is given but the crop settings are not, the crop settings are the DETR
    ones scaled by ``max(scales) / 800``, so a small-image demo keeps the same augmentation
    (e.g. scales 160..224 give crop scales 112/140/168 and crop sides 108..168).
    """
    if split == "val":
        return Resize(val_size, max_size, size_multiple)
    if split != "train":
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    scales = training_scales(scales)
    ratio = max(scales) / max(DETR_SCALES)
    if crop_scales is None:
        crop_scales = tuple(round(s * ratio) for s in DETR_CROP_SCALES)
    if crop_size is None:
        crop_size = (round(DETR_CROP_SIZE[0] * ratio), round(DETR_CROP_SIZE[1] * ratio))

    return T.Compose(
        [
            T.RandomHorizontalFlip(p=0.5),
            T.RandomChoice(
                [
                    RandomResize(scales, max_size, per_batch=True, multiple=size_multiple),
                    T.Compose(
                        [
                            RandomResize(crop_scales),
                            RandomSizeCrop(*crop_size),
                            RandomResize(scales, max_size, per_batch=True, multiple=size_multiple),
                        ]
                    ),
                ],
                p=[0.5, 0.5],
            ),
        ]
    )


def to_model_format(image: tv_tensors.Image, target: Target) -> tuple[torch.Tensor, Target]:
    """Final step: the image and target the model and criterion consume.

    Returns a plain float tensor (3, H, W) normalised with ImageNet mean/std and a target
    whose ``boxes`` are a plain float (n, 4) tensor of normalised (cx, cy, w, h) in [0, 1]
    relative to this (H, W), and whose ``size`` is tensor([H, W]).
    """
    h, w = image.shape[-2:]
    pixels = F.to_dtype(image, torch.float32, scale=True)
    pixels = F.normalize(pixels, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    target = dict(target)
    xyxy = target["boxes"].as_subclass(torch.Tensor).to(torch.float32)
    cxcywh = box_convert(xyxy, in_fmt="xyxy", out_fmt="cxcywh")
    target["boxes"] = cxcywh / torch.tensor([w, h, w, h], dtype=torch.float32)
    target["size"] = torch.tensor([h, w])
    return pixels.as_subclass(torch.Tensor), target
