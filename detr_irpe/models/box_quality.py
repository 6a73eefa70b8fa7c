"""A box-quality head: each query's estimate of its own box's IoU, blended into its score.

DETR scores a box by its class probability p.  Trained to match one query per object, p
says "this query owns an object" and hardly "this box fits it": on real aerial photos the
order of p among a model's best boxes follows their IoU with a rank correlation of 0.1-0.2
(docs/scratch_training.md).  This head reads the last decoder layer's query vector and
its box and predicts q, the box's IoU with the object it overlaps most, discounted when
another box of the image fits that object better (:func:`quality_targets`: DETR has no
NMS, so the scores themselves must put each object's best box above its duplicates).
Once fitted, the detection score becomes

    score = p ** (1 - a) * q ** a          (a = ``--quality_weight``; 0: no head, DETR)

The head is fitted after training, on the finished model's boxes of the training images
(:mod:`detr_irpe.training.quality_fit`): trained along with the detector it ranked as well
but gained nothing.  Its parameters take no part in training (``requires_grad`` off).
Until it is fitted (the ``fitted`` buffer, saved with it) the model scores as DETR does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert, box_iou

from .mlp import MLP


class BoxQualityHead(nn.Module):
    """(B, Q, D) query vectors and (B, Q, 4) boxes -> (B, Q) IoU logits."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = MLP(hidden + 4, hidden, 1, 2)
        self.mlp.requires_grad_(False)
        self.register_buffer("fitted", torch.tensor(False))

    @staticmethod
    def inputs(queries: Tensor, boxes: Tensor) -> Tensor:
        """What the MLP reads: each query's vector and its box, side by side."""
        return torch.cat([queries, boxes.to(queries.dtype)], -1)

    def forward(self, queries: Tensor, boxes: Tensor) -> Tensor:
        return self.mlp(self.inputs(queries, boxes))[..., 0]


def blended_scores(probs: Tensor, quality_logits: Tensor, weight: float) -> Tensor:
    """p ** (1 - a) * sigmoid(quality_logits) ** a, elementwise."""
    return probs.pow(1.0 - weight) * torch.sigmoid(quality_logits.to(probs.dtype)).pow(weight)


# How hard a duplicate's target falls: q = IoU * (IoU / its object's best IoU) ** this.
DUPLICATE_SHARPNESS = 4.0


def quality_targets(boxes: Tensor, target_boxes: list[Tensor]) -> Tensor:
    """(B, Q, 4) normalised cxcywh boxes and each image's (n, 4) target boxes -> (B, Q):
    what the head learns.  A box's object is the target it overlaps most; its IoU u with it
    is discounted by how far it falls behind the best box that object has among the
    image's boxes, u_best: ``u * (u / u_best) ** DUPLICATE_SHARPNESS``.  The best box of
    each object keeps its IoU, a duplicate scores lower the worse it fits (0.6 beside 0.8:
    0.19), and a box on no object 0.  Without NMS, a duplicate scored above its object's
    best box takes the match and turns the better box into a false positive."""
    rows = []
    for image_boxes, targets in zip(boxes, target_boxes):
        if len(targets) == 0:
            rows.append(image_boxes.new_zeros(len(image_boxes)))
            continue
        ious = box_iou(box_convert(image_boxes, "cxcywh", "xyxy"),
                       box_convert(targets.to(image_boxes), "cxcywh", "xyxy"))
        iou, owner = ious.max(1)
        best = ious.max(0).values[owner].clamp_min(torch.finfo(ious.dtype).tiny)
        rows.append(iou * (iou / best).pow(DUPLICATE_SHARPNESS))
    return torch.stack(rows)
