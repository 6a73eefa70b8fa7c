"""A detection confusion matrix at one score and one IoU threshold.

Rows are the predicted category, then ``"missed"``; columns the true category, then
``"background"``.  Per image, the detections scoring at least ``score_threshold`` are taken
in order of score; each is paired with the unpaired ground-truth box of highest IoU, of
*any* category, if that IoU is at least ``iou_threshold``:

- a pair counts in (predicted category, true category): the diagonal is right, the rest
  confusions;
- a detection left without a pair counts in (its category, "background"): a false alarm;
- a ground-truth box left without a pair counts in ("missed", its category).

Crowd boxes (``iscrowd``) are left out on both sides: the detections paired with a crowd
region (any number of them) are not counted, and a crowd box is never "missed".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

SCORE_THRESHOLD, IOU_THRESHOLD = 0.5, 0.5


class ConfusionMatrix(NamedTuple):
    """``counts``: (K + 1, K + 1) int; ``category_ids``: the K ids in row/column order (the
    last row is "missed", the last column "background")."""

    counts: np.ndarray
    category_ids: list[int]
    score_threshold: float
    iou_threshold: float


def _xyxy(boxes: list) -> torch.Tensor:
    xywh = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return box_convert(xywh, in_fmt="xywh", out_fmt="xyxy")


def _pair(det_boxes: torch.Tensor, gt_boxes: torch.Tensor, crowd: torch.Tensor,
          iou_threshold: float) -> list[int]:
    """For detections in score order: the index of the paired ground truth, or -1.  A crowd
    box can take any number of detections."""
    iou = box_iou(det_boxes, gt_boxes) if len(gt_boxes) else torch.zeros(len(det_boxes), 0)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    pairs = []
    for row in iou:
        row = row.masked_fill(taken, -1.0)
        best = int(row.argmax()) if len(row) else -1
        if best >= 0 and row[best] >= iou_threshold:
            taken[best] = not crowd[best]
            pairs.append(best)
        else:
            pairs.append(-1)
    return pairs


def confusion_matrix(gt_dataset: dict, detections: list[dict], image_ids: list[int],
                     score_threshold: float = SCORE_THRESHOLD,
                     iou_threshold: float = IOU_THRESHOLD) -> ConfusionMatrix:
    """Count ``detections`` (COCO results: ``bbox`` absolute xywh) against the ground truth
    of ``gt_dataset`` (a COCO-format dict) on ``image_ids``."""
    cat_ids = sorted(c["id"] for c in gt_dataset["categories"])
    index = {c: i for i, c in enumerate(cat_ids)}
    k = len(cat_ids)
    counts = np.zeros((k + 1, k + 1), dtype=np.int64)
    wanted = set(image_ids)
    gts: dict[int, list[dict]] = {i: [] for i in wanted}
    for ann in gt_dataset["annotations"]:
        if ann["image_id"] in wanted:
            gts[ann["image_id"]].append(ann)
    dets: dict[int, list[dict]] = {i: [] for i in wanted}
    for det in detections:
        if det["image_id"] in wanted and det["score"] >= score_threshold:
            dets[det["image_id"]].append(det)
    for image_id in wanted:
        image_dets = sorted(dets[image_id], key=lambda d: -d["score"])
        image_gts = gts[image_id]
        crowd = torch.tensor([bool(g.get("iscrowd", 0)) for g in image_gts], dtype=torch.bool)
        pairs = _pair(_xyxy([d["bbox"] for d in image_dets]), _xyxy([g["bbox"] for g in image_gts]),
                      crowd, iou_threshold)
        for det, gt in zip(image_dets, pairs):
            if gt < 0:
                counts[index[det["category_id"]], k] += 1
            elif not crowd[gt]:
                counts[index[det["category_id"]], index[image_gts[gt]["category_id"]]] += 1
        paired = set(pairs)
        for j, gt in enumerate(image_gts):
            if j not in paired and not crowd[j]:
                counts[k, index[gt["category_id"]]] += 1
    return ConfusionMatrix(counts, cat_ids, score_threshold, iou_threshold)
