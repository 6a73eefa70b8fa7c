"""DETR's set criterion: Hungarian matching, then classification and box losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from .box_attention import box_attention_loss
from .dense_head import dense_losses
from .matcher import HungarianMatcher


class SetCriterion(nn.Module):
    """Losses of one DETR forward pass.

    ``forward(outputs, targets)`` returns the *unweighted* losses ``loss_ce``,
    ``loss_bbox``, ``loss_giou``, ``cardinality_error``, ``class_error`` and, for every
    auxiliary decoder output n, the same with suffix ``_n`` (no class_error), and, when the
    outputs hold ``dense_outputs``, ``loss_dense_{ce,bbox,giou}`` (weighted by
    ``dense_coef`` times the usual weights; :mod:`detr_irpe.models.dense_head`); when an
    output holds ``attention``, ``loss_attention`` (and ``_n``), weighted by
    ``attention_coef`` (:mod:`detr_irpe.models.box_attention`).  The
    training loss is ``sum(losses[k] * weight_dict[k] for k in weight_dict)``.

    targets: per image ``{"labels": int64 (n,), "boxes": float (n, 4) normalised cxcywh}``.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float,
        bbox_loss_coef: float,
        giou_loss_coef: float,
        num_aux: int,
        dense_coef: float = 0.0,
        attention_coef: float = 0.0,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        weights = {"loss_ce": 1.0, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
        if attention_coef > 0:
            weights["loss_attention"] = attention_coef
        self.weight_dict = dict(weights)
        for n in range(num_aux):
            self.weight_dict.update({f"{k}_{n}": v for k, v in weights.items()})
        if dense_coef > 0:
            self.weight_dict.update({f"loss_dense_{k}": v * dense_coef for k, v in
                                     (("ce", 1.0), ("bbox", bbox_loss_coef),
                                      ("giou", giou_loss_coef))})

    def _losses(self, out: dict, targets: list[dict], indices: list[tuple[Tensor, Tensor]],
                num_boxes: Tensor, log: bool) -> dict:
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        batch_idx = torch.cat([torch.full_like(src, n) for n, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        batch_idx, src_idx = batch_idx.to(logits.device), src_idx.to(logits.device)
        matched_labels = torch.cat(
            [t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)]
        ).to(logits.device)

        target_classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        target_classes[batch_idx, src_idx] = matched_labels
        losses = {
            "loss_ce": F.cross_entropy(
                logits.transpose(1, 2).float(), target_classes, self.empty_weight.to(logits.device)
            )
        }
        if log:
            if matched_labels.numel():
                correct = (logits[batch_idx, src_idx].argmax(-1) == matched_labels).float().mean()
                losses["class_error"] = 100.0 - 100.0 * correct
            else:
                losses["class_error"] = torch.tensor(100.0, device=logits.device)

        with torch.no_grad():
            counts = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device)
            predicted = (logits.argmax(-1) != self.num_classes).sum(1)
            losses["cardinality_error"] = F.l1_loss(predicted.float(), counts.float())

        src_boxes = boxes[batch_idx, src_idx].float()
        tgt_boxes = torch.cat(
            [t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)]
        ).to(src_boxes)
        losses["loss_bbox"] = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        giou = torch.diag(
            generalized_box_iou(
                box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
            )
        )
        losses["loss_giou"] = (1 - giou).sum() / num_boxes
        if "attention" in out:
            losses["loss_attention"] = box_attention_loss(out["attention"], out["attention_mask"],
                                                          indices, targets, num_boxes)
        return losses

    def forward(
        self, outputs: dict, targets: list[dict], num_boxes: float | Tensor | None = None
    ) -> dict[str, Tensor]:
        """``num_boxes``: what the box losses are divided by; default: the target boxes of
        this batch, at least 1.  Several processes pass DETR's count, the boxes of all
        processes divided by their number (:mod:`detr_irpe.engine` does, for the whole
        optimiser step when batches are accumulated)."""
        device = outputs["pred_logits"].device
        if num_boxes is None:
            num_boxes = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        num_boxes = torch.as_tensor(num_boxes, dtype=torch.float32, device=device)

        aux_outputs = outputs.get("aux_outputs", [])
        *aux_indices, indices = self.matcher.match_layers([*aux_outputs, outputs], targets)
        losses = self._losses(outputs, targets, indices, num_boxes, log=True)
        for n, (aux, aux_idx) in enumerate(zip(aux_outputs, aux_indices)):
            aux_losses = self._losses(aux, targets, aux_idx, num_boxes, log=False)
            losses.update({f"{k}_{n}": v for k, v in aux_losses.items()})
        if "dense_outputs" in outputs:
            losses.update(dense_losses(outputs["dense_outputs"], targets, self.num_classes))
        return losses
