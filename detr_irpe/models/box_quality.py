"""A box-quality head: each query's estimate of its own box's IoU, blended into its score.

DETR scores a box by its class probability p.  Trained to match one query per object, p
says "this query owns an object" and hardly "this box fits it": on real aerial photos the
order of p among a model's best boxes follows their IoU with a rank correlation of 0.1-0.2
(docs/scratch_training.md).  This head reads the last decoder layer's query vector and
its box and predicts q, the box's IoU with the object it overlaps most.  Once fitted, the
detection score becomes

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


def best_iou(boxes: Tensor, target_boxes: list[Tensor]) -> Tensor:
    """(B, Q, 4) normalised cxcywh boxes and each image's (n, 4) target boxes -> (B, Q):
    each box's highest IoU with its image's targets (0 for an image without any)."""
    rows = []
    for image_boxes, targets in zip(boxes, target_boxes):
        if len(targets) == 0:
            rows.append(image_boxes.new_zeros(len(image_boxes)))
            continue
        ious = box_iou(box_convert(image_boxes, "cxcywh", "xyxy"),
                       box_convert(targets.to(image_boxes), "cxcywh", "xyxy"))
        rows.append(ious.max(1).values)
    return torch.stack(rows)
