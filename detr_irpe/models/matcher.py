"""Hungarian matching between predictions and targets (scipy linear_sum_assignment)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


def describe_target(target: dict, index: int) -> str:
    """'image_id N' when the target carries one, else 'batch image i' (for messages)."""
    image = target.get("image_id", None)
    return f"image_id {int(image)}" if image is not None else f"batch image {index}"


BAD_BOX, BAD_LABEL = 1, 2  # the codes of target_problems


def target_problems(labels: Tensor, boxes: Tensor, num_classes: int) -> Tensor:
    """(n,) float codes of the concatenated targets, computed without a host sync: +1
    (``BAD_BOX``) for a box that is not finite or has no area, +2 (``BAD_LABEL``) for a
    label outside [0, num_classes).  labels (n,) int64, boxes (n, 4) normalised cxcywh."""
    bad_box = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    bad_label = (labels < 0) | (labels >= num_classes)
    return bad_box.float() + BAD_LABEL * bad_label.float()


def raise_for_problems(targets: list[dict], problems: np.ndarray, num_classes: int) -> None:
    """Raise a clear ValueError for the first bad box, else the first bad label, that
    :func:`target_problems` found (``problems``: its codes, on the host).

    A bad box would otherwise surface as NaN costs or a meaningless GIoU hours into
    training, a bad label as an index error (on a GPU, a device-side assert)."""
    codes = problems.astype(np.int64)
    starts = np.cumsum([0] + [len(t["labels"]) for t in targets])
    for flag in (BAD_BOX, BAD_LABEL):
        hits = np.flatnonzero(codes & flag)
        if not len(hits):
            continue
        n = int(np.searchsorted(starts, hits[0], side="right")) - 1
        k = int(hits[0] - starts[n])
        t = targets[n]
        if flag == BAD_BOX:
            count = int(((hits >= starts[n]) & (hits < starts[n + 1])).sum())
            raise ValueError(
                f"{describe_target(t, n)}: target box {k} has no area or is not finite "
                f"(cxcywh {t['boxes'][k].tolist()}); {count} such box(es) in this image. "
                f"Fix or drop it in the annotations (zero/negative width or height, NaN)."
            )
        raise ValueError(
            f"{describe_target(t, n)}: label {int(t['labels'][k])} "
            f"is outside [0, num_classes={num_classes}); num_classes must be the "
            f"largest label + 1"
        )


def _grid(num_queries: int) -> tuple[int, int]:
    """Columns and rows of the anchor grid: ``ceil(sqrt(n))`` columns, rows as needed."""
    cols = math.ceil(math.sqrt(num_queries))
    return cols, math.ceil(num_queries / cols)


@functools.lru_cache(maxsize=16)
def anchor_points(num_queries: int) -> Tensor:
    """(num_queries, 2) points (cx, cy) spread over the unit square: a grid of
    ``ceil(sqrt(n))`` columns and as many rows as needed, cell centres, row-major, the last
    row possibly incomplete.  Query q owns point q (:class:`HungarianMatcher`'s anchor cost)."""
    cols, rows = _grid(num_queries)
    points = [((c + 0.5) / cols, (r + 0.5) / rows) for r in range(rows) for c in range(cols)]
    return torch.tensor(points[:num_queries])


def anchor_cells(num_queries: int) -> Tensor:
    """(num_queries, 4) boxes (cx, cy, w, h): the grid cell around each
    :func:`anchor_points` point."""
    cols, rows = _grid(num_queries)
    sizes = torch.tensor([1 / cols, 1 / rows]).expand(num_queries, 2)
    return torch.cat([anchor_points(num_queries), sizes], dim=1)


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
        return self.match_layers([outputs], targets)[0]

    @torch.no_grad()
    def match_layers(self, layers: list[dict], targets: list[dict]) -> list[list[tuple[Tensor, Tensor]]]:
        """:meth:`forward` of every output in ``layers`` (dicts of ``pred_logits`` (B, Q, C+1)
        and ``pred_boxes`` (B, Q, 4)) against the same targets, per layer and image."""
        logits = torch.stack([o["pred_logits"] for o in layers])
        boxes = torch.stack([o["pred_boxes"] for o in layers])
        return [[(torch.as_tensor(i), torch.as_tensor(j)) for i, j in layer]
                for layer in self.assign(logits, boxes, targets)]

    @torch.no_grad()
    def assign(self, logits: Tensor, boxes: Tensor, targets: list[dict]) -> list[list[tuple]]:
        """The optimal assignment of every layer and image: per layer, per image (query
        indices, target indices) as int64 numpy arrays.  logits (L, B, Q, C+1), boxes
        (L, B, Q, 4) normalised cxcywh: the predictions of L decoder layers.

        One cost computation for all layers and one transfer to the host (the costs and
        the target checks of :func:`target_problems`), then scipy per layer and image: the
        only host sync of the loss."""
        sizes = [len(t["boxes"]) for t in targets]
        empty = np.empty(0, dtype=np.int64)
        if sum(sizes) == 0:
            return [[(empty, empty) for _ in targets] for _ in range(len(logits))]
        num_classes = logits.shape[-1] - 1
        labels = torch.cat([t["labels"] for t in targets])
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).float()
        problems = target_problems(labels, tgt_boxes, num_classes)
        cost = self.cost(logits, boxes, labels.clamp(0, num_classes), tgt_boxes)  # (L*B*Q, T)
        host = torch.cat([cost, problems[None]]).cpu().numpy()
        raise_for_problems(targets, host[-1], num_classes)
        costs = host[:-1].reshape(*logits.shape[:3], -1)  # (L, B, Q, T)
        if not np.isfinite(costs).all():
            raise FloatingPointError(
                "the model produced non-finite predictions (NaN/inf): training diverged; "
                "lower the learning rate or check the input data"
            )
        starts = np.cumsum([0, *sizes])
        return [[_assign(c[n, :, starts[n]:starts[n + 1]]) for n in range(len(targets))]
                for c in costs]

    @torch.no_grad()
    def lowest_cost(self, logits: Tensor, boxes: Tensor, labels: Tensor, tgt_boxes: Tensor,
                    sizes: list[int], k: int) -> Tensor:
        """For every layer and target, the ``k`` queries of the target's own image with the
        lowest :meth:`cost` (all of them when ``k`` >= Q), as (4, L * T * k) int64 pairs on
        the device, rows as :func:`~detr_irpe.models.criterion.matched_pairs`: layer,
        image, query, target.  logits (L, B, Q, C+1), boxes (L, B, Q, 4); labels (T,) and
        tgt_boxes (T, 4) concatenated over the B images, ``sizes`` the targets per image."""
        L, B, Q, _ = logits.shape
        device = logits.device
        owner = torch.repeat_interleave(torch.arange(B, device=device),
                                        torch.as_tensor(sizes, device=device))  # (T,)
        cost = self.cost(logits, boxes, labels, tgt_boxes.float()).view(L, B, Q, -1)
        foreign = torch.arange(B, device=device)[:, None] != owner  # (B, T)
        cost = cost.masked_fill(foreign[None, :, None, :], float("inf"))
        flat = cost.permute(0, 3, 1, 2).reshape(L, len(owner), B * Q)
        best = flat.topk(min(k, Q), dim=-1, largest=False).indices  # (L, T, k): image * Q + query
        layer = torch.arange(L, device=device)[:, None, None].expand_as(best)
        target = torch.arange(len(owner), device=device)[None, :, None].expand_as(best)
        return torch.stack([layer, best // Q, best % Q, target]).view(4, best.numel())

    def cost(self, logits: Tensor, boxes: Tensor, labels: Tensor, tgt_boxes: Tensor) -> Tensor:
        """(L*B*Q, T) matching costs of predictions (..., Q, C+1) logits and (..., Q, 4)
        boxes against the concatenated targets, (T,) labels and (T, 4) boxes (cxcywh)."""
        prob = logits.flatten(0, -2).float().softmax(-1)  # (L*B*Q, C+1)
        out_boxes = boxes.flatten(0, -2).float()  # (L*B*Q, 4)
        cost_class = -prob[:, labels]
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(
            box_convert(out_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        C = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        if self.cost_anchor:
            Q = logits.shape[-2]
            anchors = anchor_points(Q).to(out_boxes).repeat(len(out_boxes) // Q, 1)
            C = C + self.cost_anchor * torch.cdist(anchors, tgt_boxes[:, :2], p=1)
        return C


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy's optimal assignment of a (Q, n) cost matrix: (query indices, target indices)."""
    i, j = linear_sum_assignment(cost)
    return i.astype(np.int64, copy=False), j.astype(np.int64, copy=False)
