"""Mosaic augmentation (``--mosaic P``, training only): an image becomes, with probability P,
a window onto four training images that meet at one point.

The image's own tile and three others drawn at random fill the four quadrants of a canvas
twice the tile's size, each pushed into the canvas's centre (a larger image is cut to its
quadrant, a smaller one leaves :data:`FILL` around it).  The output is a window of the
tile's own size whose top-left corner is uniform in the middle half of the first quadrant,
so that the centre point lies in the window's middle half and parts of all four images show.
Objects keep their scale (the window is not resized), unlike a mosaic that shrinks the whole
canvas; DETR's flip, resize and crop follow as for any image.

Boxes move with their image and are clipped to the window; a box keeps its target while at
least :data:`KEEP_FRACTION` of its area shows, so that a crown cut down to a sliver of
leaves does not ask the model to box the sliver.

``--mosaic_until S`` keeps the mosaic for the first share S of the planned epochs
(:func:`mosaic_epochs`); the last ones see the images as the evaluation does, without seams.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.ops import box_area

from detr_irpe.data.box_clipping import clip_to_image
from detr_irpe.data.transforms import PER_BOX_KEYS, filter_boxes

# A box stays a target while at least this fraction of its area lies inside the window.
KEEP_FRACTION = 0.25
# The canvas where no image reaches (uint8 grey).
FILL = 114


def mosaic(tiles: Sequence[tuple[torch.Tensor, dict]],
           corner: tuple[int, int]) -> tuple[tv_tensors.Image, dict]:
    """Four ``(image, target)`` pairs (uint8 (3, h, w) images; targets as from
    :func:`~detr_irpe.data.coco.prepare_target`, absolute XYXY boxes) -> one image of the
    first one's size (H, W) and its target.  ``corner`` = (top, left): the window's corner
    on the (2H, 2W) canvas, where tile k fills quadrant (k // 2, k % 2).  The target keeps
    the first tile's ``image_id`` and ``orig_size``; ``area`` becomes each clipped box's."""
    if len(tiles) != 4:
        raise ValueError(f"a mosaic takes 4 images, got {len(tiles)}")
    H, W = tiles[0][0].shape[-2:]
    canvas = torch.full((3, 2 * H, 2 * W), FILL, dtype=torch.uint8)
    boxes = []
    for k, (image, target) in enumerate(tiles):
        h, w = min(image.shape[-2], H), min(image.shape[-1], W)
        above, left_side = k // 2 == 0, k % 2 == 0
        y0, x0 = (H - h if above else H), (W - w if left_side else W)  # the pasted part
        sy = image.shape[-2] - h if above else 0  # where that part starts in the image
        sx = image.shape[-1] - w if left_side else 0
        canvas[:, y0:y0 + h, x0:x0 + w] = image[:, sy:sy + h, sx:sx + w]
        shift = torch.tensor([x0 - sx, y0 - sy] * 2, dtype=torch.float32)
        boxes.append(target["boxes"].as_subclass(torch.Tensor).float() + shift)
    top, left = corner
    window = tv_tensors.Image(canvas[:, top:top + H, left:left + W].clone())
    shifted = torch.cat(boxes) - torch.tensor([left, top] * 2, dtype=torch.float32)
    clipped, keep = clip_to_image(shifted, (H, W))
    area = box_area(clipped)
    keep &= area >= KEEP_FRACTION * box_area(shifted)
    first = tiles[0][1]
    target = {key: torch.cat([t[key] for _, t in tiles])  # boxes and area: from the window
              for key in PER_BOX_KEYS if key not in ("boxes", "area")}
    target.update(boxes=tv_tensors.BoundingBoxes(clipped, format="XYXY", canvas_size=(H, W)),
                  area=area, image_id=first["image_id"], orig_size=first["orig_size"])
    return window, filter_boxes(target, keep)


def random_corner(height: int, width: int) -> tuple[int, int]:
    """A window corner (top, left) uniform in the middle half of the first quadrant of a
    (2 * height, 2 * width) canvas, from torch's RNG (seeded per worker)."""
    top = int(torch.randint(height // 4, 3 * height // 4 + 1, ()))
    left = int(torch.randint(width // 4, 3 * width // 4 + 1, ()))
    return top, left


def mosaic_epochs(epochs: int, until: float) -> int:
    """How many of a run's ``epochs``, from the first, use the mosaic (``--mosaic_until``):
    the share ``until`` of them, rounded to the nearest (halves to even); the rest train on
    plain images, as YOLOv8's ``close_mosaic`` ends its runs."""
    return round(until * epochs)
