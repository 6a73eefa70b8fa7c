"""Training-only aid: denoising queries (after DN-DETR), for a model with query anchors and
anchor content.

DN-DETR feeds the decoder, in training only, noisy copies of the objects' boxes as extra
queries that must give back the object they were made from: an assignment that needs no
matching, so the decoder learns to read a box off the features near an object from the
first step.  Here such a query is built like an ordinary query of the anchor grid, only
placed near an object instead of on the grid:

- its anchor point is the object's centre moved by up to ``SHIFT`` times the larger of the
  object's and a grid cell's width (and height), uniformly at random in each direction;
- it enters the decoder as the encoder output read at that point, with the learned
  position of the grid query whose point is nearest (L1, as the anchor matching cost);
- it predicts its box as an offset from a grid-sized cell centred on that point (the
  ordinary queries predict theirs from their own grid cell).

Each object gets ``groups`` such queries, one per group.  In the decoder's self-attention
the ordinary queries cannot see them, and a group cannot see the other groups, so the
ordinary queries compute what they compute without the aid, and no query can copy its
answer from another copy of its object.  Their losses are the class and box losses of a
matched query, against the object they were made from (:func:`denoising_pairs` pairs them,
the criterion scores them).

With negatives (contrastive denoising, after DINO) each group also holds, for each object,
one query whose point is moved 1 to 2 times that reach in both directions: outside the
positives' square, often beside the object, where its target is "no object" (where the
point lies inside another object's box the query is left out).  Seeing its group's
positives, it learns what the one-to-one matching asks of a query next to a better one.
Nothing is added to the model: inference and the saved checkpoints are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .matcher import anchor_cells, anchor_points

SHIFT = 0.5  # the largest move of a query's point, as a fraction of max(object, cell) sides
EDGE = 1e-4  # points are kept this far inside the image, where the logit is finite


@dataclass(frozen=True)
class DenoisingQueries:
    """The denoising queries of one batch: ``N = groups * n`` per image (``2 * groups * n`` with
    negatives: each group's positives, then its negatives), where ``n`` is the
    most objects in one image of the batch; images with fewer objects are padded.

    points:  (B, N, 2) anchor points (x, y) in [0, 1] of each image's own extent;
    anchors: (B, N, 4) the anchor boxes (point, a grid cell's size) in logit space;
    owners:  (B, N) int64 the grid query whose point is nearest (its position is used);
    targets: (B, N) int64 the object's index among the batch's concatenated targets, -1 on
             padding and on negative queries;
    negative: (B, N) bool the negative queries, whose target is "no object";
    blocked: (B, Q + N, Q + N) bool, True where a decoder query (row) may not attend a
             key (column): the grid queries come first, then the groups one after another.
    """

    points: Tensor
    anchors: Tensor
    owners: Tensor
    targets: Tensor
    negative: Tensor
    blocked: Tensor


def make_denoising_queries(targets: list[dict], num_queries: int, groups: int,
                           negatives: bool = False) -> DenoisingQueries | None:
    """Draw the denoising queries of a batch (torch's global generator); None when the
    batch has no object.  ``targets``: per image ``boxes`` (n, 4) normalised cxcywh.
    ``negatives``: each group also holds one negative query per object (see the module)."""
    counts = [len(t["boxes"]) for t in targets]
    n = max(counts, default=0)
    if n == 0 or groups == 0:
        return None
    device = targets[0]["boxes"].device
    B = len(targets)
    boxes = torch.zeros(B, n, 4, device=device)
    index = torch.full((B, n), -1, dtype=torch.int64, device=device)
    start = 0
    for b, t in enumerate(targets):
        boxes[b, :counts[b]] = t["boxes"].float()
        index[b, :counts[b]] = torch.arange(start, start + counts[b], device=device)
        start += counts[b]
    cells = anchor_cells(num_queries).to(device)
    reach = SHIFT * torch.maximum(boxes[..., 2:], cells[0, 2:])[:, None]  # (B, 1, n, 2)
    points = boxes[:, None, :, :2] + (torch.rand(B, groups, n, 2, device=device) * 2 - 1) * reach
    slots = index[:, None].expand(B, groups, n)
    negative = torch.zeros(B, groups, n, dtype=torch.bool, device=device)
    if negatives:
        far = _negative_points(boxes, reach, groups)
        points, negative = torch.cat([points, far], 2), torch.cat(
            [negative, (slots >= 0) & ~_inside_any(far, boxes, index >= 0)], 2)
        slots = torch.cat([slots, torch.full_like(slots, -1)], 2)
    size = points.shape[2]  # queries per group
    points = points.clamp(EDGE, 1 - EDGE).view(B, groups * size, 2)
    owners = torch.cdist(points, anchor_points(num_queries).to(device)[None], p=1).argmin(-1)
    anchors = torch.cat([points, cells[0, 2:].expand(*points.shape[:2], 2)], dim=-1).logit()
    slots, negative = slots.reshape(B, -1), negative.view(B, -1)
    return DenoisingQueries(points, anchors, owners, slots, negative,
                            _blocked(num_queries, groups, size, (slots < 0) & ~negative))


def _negative_points(boxes: Tensor, reach: Tensor, groups: int) -> Tensor:
    """(B, groups, n, 2): each object's centre moved by 1 to 2 ``reach`` (B, 1, n, 2) in
    each direction, the sign at random: outside the positives' square."""
    B, n = boxes.shape[:2]
    size = torch.rand(B, groups, n, 2, device=boxes.device) + 1
    sign = torch.randint(0, 2, (B, groups, n, 2), device=boxes.device) * 2 - 1
    return boxes[:, None, :, :2] + sign * size * reach


def _inside_any(points: Tensor, boxes: Tensor, valid: Tensor) -> Tensor:
    """(B, G, n) whether each point (B, G, n, 2) lies inside one of its image's boxes
    (B, n, 4) cxcywh that are ``valid`` (B, n)."""
    offset = (points[:, :, :, None] - boxes[:, None, None, :, :2]).abs()  # (B, G, n, n, 2)
    inside = (offset < boxes[:, None, None, :, 2:] / 2).all(-1) & valid[:, None, None]
    return inside.any(-1)


def _blocked(num_queries: int, groups: int, size: int, padding: Tensor) -> Tensor:
    """(B, Q + N, Q + N) bool: the grid queries see only each other; a denoising query sees
    the grid queries and its own group (``size`` slots); no query sees a padding slot.
    padding (B, N)."""
    group = torch.cat([torch.full((num_queries,), -1),
                       torch.arange(groups).repeat_interleave(size)])
    group = group.to(padding.device)
    row, col = group[:, None], group[None, :]
    blocked = (col >= 0) & (row != col)  # (Q + N, Q + N)
    keys = torch.cat([padding.new_zeros(len(padding), num_queries), padding], dim=1)  # (B, Q + N)
    return blocked[None] | keys[:, None, :]


def denoising_pairs(targets: Tensor, layers: int) -> Tensor:
    """(4, L * M) int64 pairs of the M denoising queries that hold an object (``targets``
    (B, N) of :class:`DenoisingQueries`, -1 on padding), for each of ``layers`` decoder
    layers, rows as :func:`~detr_irpe.models.criterion.matched_pairs`: layer, image, query,
    object (the criterion scores them as matched pairs)."""
    image, query = (targets >= 0).nonzero(as_tuple=True)
    target = targets[image, query]
    layer = torch.arange(layers, device=targets.device).repeat_interleave(len(target))
    return torch.stack([layer, image.repeat(layers), query.repeat(layers), target.repeat(layers)])
