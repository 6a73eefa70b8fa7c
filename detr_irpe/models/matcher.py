"""Hungarian matching between predictions and targets (scipy linear_sum_assignment)."""

from __future__ import annotations

import functools
import math

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def describe_target(target: dict, index: int) -> str:
    """'image_id N' when the target carries one, else 'batch image i' (for messages)."""
    image = target.get("image_id", None)
    return f"image_id {int(image)}" if image is not None else f"batch image {index}"


def check_target_boxes(targets: list[dict]) -> None:
    """Raise a clear ValueError for a target box that is not finite or has no area.

    Boxes are normalised cxcywh; a bad one would otherwise surface as NaN costs or an
    assertion deep inside GIoU, hours into training.
    """
    for n, t in enumerate(targets):
        boxes = t["boxes"]
        if boxes.numel() == 0:
            continue
        bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise ValueError(
                f"{describe_target(t, n)}: target box {k} has no area or is not finite "
                f"(cxcywh {boxes[k].tolist()}); {int(bad.sum())} such box(es) in this image. "
                f"Fix or drop it in the annotations (zero/negative width or height, NaN)."
            )


@functools.lru_cache(maxsize=16)
def anchor_points(num_queries: int) -> Tensor:
    """(num_queries, 2) points (cx, cy) spread over the unit square: a grid of
    ``ceil(sqrt(n))`` columns and as many rows as needed, cell centres, row-major, the last
    row possibly incomplete.  Query q owns point q (:class:`HungarianMatcher`'s anchor cost)."""
    cols = math.ceil(math.sqrt(num_queries))
    rows = math.ceil(num_queries / cols)
    points = [((c + 0.5) / cols, (r + 0.5) / rows) for r in range(rows) for c in range(cols)]
    return torch.tensor(points[:num_queries])


class HungarianMatcher(nn.Module):
    """cost = w_class * (-p(target class)) + w_bbox * L1(cxcywh) + w_giou * (-GIoU(xyxy))
    [+ w_anchor * L1(the query's anchor point, the target box's centre)].

    The anchor term (off by default, as in DETR) is a training aid: query q owns the fixed
    point :func:`anchor_points` ``[q]``, and matching prefers to give it the objects near that
    point, so each query keeps learning one region of the image instead of whatever object
    its (at first random) prediction happens to be nearest.  It changes only which query
    learns which object, never the model."""

    def __init__(self, cost_class: float, cost_bbox: float, cost_giou: float,
                 cost_anchor: float = 0.0):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.cost_anchor = cost_anchor

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Returns per image (prediction indices, target indices), int64, equal lengths
        min(num_queries, num_targets)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        B, Q = logits.shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        if not (torch.isfinite(logits).all() and torch.isfinite(boxes).all()):
            raise FloatingPointError(
                "the model produced non-finite predictions (NaN/inf): training diverged; "
                "lower the learning rate or check the input data"
            )
        prob = logits.flatten(0, 1).float().softmax(-1)  # (B*Q, C+1)
        out_boxes = boxes.flatten(0, 1).float()  # (B*Q, 4)
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        cost_class = -prob[:, tgt_ids]
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(
            box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        C = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        if self.cost_anchor:
            anchors = anchor_points(Q).to(out_boxes).repeat(B, 1)  # (B*Q, 2)
            C = C + self.cost_anchor * torch.cdist(anchors, tgt_boxes[:, :2], p=1)
        C = C.view(B, Q, -1).cpu()
        result = []
        for n, c in enumerate(C.split(sizes, -1)):
            i, j = linear_sum_assignment(c[n].numpy())
            result.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
        return result
