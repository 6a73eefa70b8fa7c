"""Training-only aid: each matched query's decoder cross-attention is pulled into the box of
the object it is matched to.

Why: from random init the encoder learns good features quickly (the dense head finds the
objects), but DETR's decoder sits on its plateau for thousands of steps: its learned
queries attend everywhere alike, so every query predicts about the same box.  This loss
tells each matched query where to look.  For decoder layer l and a query matched to a box
(DETR's Hungarian matching of that layer's output), with ``a`` the layer's cross-attention
of that query averaged over the heads (a distribution over the feature cells):

    loss = -log(sum of a over the cells whose centre lies inside the box + 1e-6)

summed over the matched queries and divided by the number of target boxes (like DETR's box
losses).  A box smaller than a cell still owns the cell holding its centre.  It adds no
parameter: the model and its checkpoints stay plain DETR, and evaluation never computes it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dense_head import cell_centres, grid_sizes

EPS = 1e-6


def cells_inside(boxes: Tensor, centres: Tensor, cell: Tensor) -> Tensor:
    """boxes (n, 4) normalised cxcywh; centres (N, 2) normalised cell centres (cx, cy);
    cell (2,) a cell's normalised width and height.  Returns bool (n, N): the cell centre
    lies inside the box, whose half-sides count as at least half a cell."""
    half = torch.maximum(boxes[:, 2:] / 2, cell / 2)  # (n, 2)
    offset = (centres[None, :, :] - boxes[:, None, :2]).abs()  # (n, N, 2)
    return (offset <= half[:, None, :]).all(dim=-1)


def box_attention_loss(weights: Tensor, mask: Tensor, indices: list[tuple[Tensor, Tensor]],
                       targets: list[dict], num_boxes: Tensor) -> Tensor:
    """weights: (B, Q, H*W) head-mean cross-attention; mask: bool (B, H, W), True on padding;
    indices: the matching (query indices, target indices) per image; targets: per image
    ``boxes`` (n, 4) normalised cxcywh.  Returns the loss (see the module docstring)."""
    centres = cell_centres(mask).to(weights.dtype)  # (B, H*W, 2)
    cells = 1.0 / grid_sizes(mask).clamp(min=1).flip(-1).to(weights.dtype)  # (B, 2): w, h
    total = weights.new_zeros(())
    for b, (query, target) in enumerate(indices):
        if len(query) == 0:
            continue
        boxes = targets[b]["boxes"][target.to(targets[b]["boxes"].device)].to(weights)
        inside = cells_inside(boxes, centres[b], cells[b])  # (n, H*W)
        mass = (weights[b, query.to(weights.device)] * inside).sum(-1)
        total = total - (mass + EPS).log().sum()
    return total / num_boxes
