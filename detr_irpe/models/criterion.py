"""DETR's set criterion: Hungarian matching, then classification and box losses."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_area, box_convert

from .box_attention import box_attention_loss
from .denoising import denoising_pairs
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
    ``attention_coef`` (:mod:`detr_irpe.models.box_attention`); with ``o2m_box_queries``
    K > 0, ``loss_o2m_bbox`` and ``loss_o2m_giou`` (and ``_n``): the box losses of each
    target against the K queries of its image with the lowest matching cost
    (:meth:`~detr_irpe.models.matcher.HungarianMatcher.lowest_cost`), divided by K times
    the number of boxes and weighted ``o2m_box_coef`` times the box weights; when the
    outputs hold ``dn_outputs`` (``denoising``: their weights),
    ``loss_dn_{ce,bbox,giou}`` (and ``_n``), :mod:`~detr_irpe.models.denoising`.  The
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
        class_loss_images: int = 0,
        class_iou_target: bool = False,
        o2m_box_queries: int = 0,
        o2m_box_coef: float = 1.0,
        denoising: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.class_loss_images = class_loss_images
        self.class_iou_target = class_iou_target
        self.o2m_box_queries = o2m_box_queries
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        weights = {"loss_ce": 1.0, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
        if attention_coef > 0:
            weights["loss_attention"] = attention_coef
        if denoising:
            weights.update(loss_dn_ce=1.0, loss_dn_bbox=bbox_loss_coef,
                           loss_dn_giou=giou_loss_coef)
        if o2m_box_queries > 0:
            weights.update(loss_o2m_bbox=o2m_box_coef * bbox_loss_coef,
                           loss_o2m_giou=o2m_box_coef * giou_loss_coef)
        self.weight_dict = dict(weights)
        for n in range(num_aux):
            self.weight_dict.update({f"{k}_{n}": v for k, v in weights.items()})
        if dense_coef > 0:
            self.weight_dict.update({f"loss_dense_{k}": v * dense_coef for k, v in
                                     (("ce", 1.0), ("bbox", bbox_loss_coef),
                                      ("giou", giou_loss_coef))})

    def forward(
        self, outputs: dict, targets: list[dict], num_boxes: float | Tensor | None = None
    ) -> dict[str, Tensor]:
        """``num_boxes``: what the box losses are divided by; default: the target boxes of
        this batch, at least 1.  Several processes pass DETR's count, the boxes of all
        processes divided by their number (:mod:`detr_irpe.training.loop` does, for the whole
        optimiser step when batches are accumulated).

        All decoder layers are matched and scored together, on their stacked outputs."""
        device = outputs["pred_logits"].device
        if num_boxes is None:
            num_boxes = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        num_boxes = torch.as_tensor(num_boxes, dtype=torch.float32, device=device)
        layers = [*outputs.get("aux_outputs", []), outputs]
        logits = torch.stack([o["pred_logits"] for o in layers])  # (L, B, Q, C+1)
        boxes = torch.stack([o["pred_boxes"] for o in layers])  # (L, B, Q, 4)
        assignment = self.matcher.assign(logits.detach(), boxes.detach(), targets)
        pairs = matched_pairs(assignment, targets).to(device)  # (4, L * M)
        labels = torch.cat([t["labels"] for t in targets]).to(device)  # (T,)
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(device)  # (T, 4)
        per_layer, iou = _box_losses(boxes, tgt_boxes, pairs, num_boxes)
        if self.o2m_box_queries > 0:
            k = self.o2m_box_queries
            many = self.matcher.lowest_cost(logits.detach(), boxes.detach(), labels, tgt_boxes,
                                            [len(t["labels"]) for t in targets], k)
            o2m, _ = _box_losses(boxes, tgt_boxes, many, num_boxes * k)
            per_layer.update({name.replace("loss_", "loss_o2m_"): v for name, v in o2m.items()})
        quality = iou.detach() if self.class_iou_target else None
        per_layer.update(loss_ce=self._class_loss(logits, labels, pairs, quality),
                         cardinality_error=self._cardinality_error(logits, targets))
        if "dn_outputs" in outputs:
            per_layer.update(self._denoising_losses(outputs["dn_outputs"], labels, tgt_boxes,
                                                    num_boxes))
        last_layer = pairs[:, pairs.shape[1] - pairs.shape[1] // len(layers):]
        losses = {"class_error": _class_error(logits[-1], labels, last_layer)}
        for name, values in per_layer.items():
            *aux, last = values.unbind()
            losses[name] = last
            losses.update({f"{name}_{n}": v for n, v in enumerate(aux)})
        for n, (out, layer) in enumerate(zip(layers, assignment)):
            if "attention" in out:
                indices = [(torch.as_tensor(i), torch.as_tensor(j)) for i, j in layer]
                loss = box_attention_loss(out["attention"], out["attention_mask"], indices,
                                          targets, num_boxes)
                losses["loss_attention" if n == len(layers) - 1 else f"loss_attention_{n}"] = loss
        if "dense_outputs" in outputs:
            losses.update(dense_losses(outputs["dense_outputs"], targets, self.num_classes))
        return losses

    def _class_loss(self, logits: Tensor, labels: Tensor, pairs: Tensor,
                    quality: Tensor | None = None) -> Tensor:
        """(L,) DETR's weighted cross-entropy of each layer: unmatched queries learn "no
        object" (weight ``eos_coef``); the mean over a layer's queries, by weight, or the
        mean over groups of ``class_loss_images`` images of each group's weighted mean
        (what DDP computes when each process holds one group).  ``quality``: the (L*M,)
        IoU of each matched pair; the pair's target is then that much of its class and the
        rest of "no object" (each class's term weighted as above)."""
        L, B, Q, K = logits.shape
        classes = torch.full((L, B, Q), self.num_classes, dtype=torch.int64, device=logits.device)
        classes[pairs[0], pairs[1], pairs[2]] = labels[pairs[3]]
        weight = self.empty_weight.to(logits.device)
        weighted = F.cross_entropy(logits.reshape(-1, K).float(), classes.view(-1), weight,
                                   reduction="none")  # (L*B*Q,) weight * -log p
        if quality is not None:
            soft = self.matched_class_terms(logits[pairs[0], pairs[1], pairs[2]],
                                            labels[pairs[3]], quality)
            flat = (pairs[0] * B + pairs[1]) * Q + pairs[2]
            weighted = weighted.index_put((flat,), soft)
        if not 0 < self.class_loss_images < B:
            return weighted.view(L, -1).sum(1) / weight[classes].view(L, -1).sum(1)
        per_image = torch.stack([weighted.view(L, B, Q).sum(-1), weight[classes].sum(-1)])
        groups = torch.stack([g.sum(-1) for g in per_image.split(self.class_loss_images, -1)], -1)
        return (groups[0] / groups[1]).mean(-1)  # groups: (2, L, number of groups)

    def _denoising_losses(self, outputs: dict, labels: Tensor, tgt_boxes: Tensor,
                          num_boxes: Tensor) -> dict[str, Tensor]:
        """(L,) losses of every decoder layer's denoising queries against their objects,
        those of a matched query (:meth:`matched_class_terms`, :func:`_box_losses`), and of
        each negative query -log p(no object), summed and divided by ``num_boxes`` times
        the groups (each group weighs as much as the one-to-one matching).  outputs:
        ``pred_logits`` (L, B, N, C + 1), ``pred_boxes`` (L, B, N, 4), ``targets`` (B, N),
        ``negative`` (B, N) and ``groups``; labels (T,), tgt_boxes (T, 4)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        pairs = denoising_pairs(outputs["targets"], len(boxes))
        norm = num_boxes * outputs["groups"]
        box, iou = _box_losses(boxes, tgt_boxes, pairs, norm)
        terms = self.matched_class_terms(logits[pairs[0], pairs[1], pairs[2]], labels[pairs[3]],
                                         iou.detach())
        negatives = -F.log_softmax(logits[:, outputs["negative"]].float(), -1)[..., -1]
        class_loss = terms.view(len(boxes), -1).sum(1) + negatives.sum(1)
        return {"loss_dn_bbox": box["loss_bbox"], "loss_dn_giou": box["loss_giou"],
                "loss_dn_ce": class_loss / norm}

    def matched_class_terms(self, logits: Tensor, labels: Tensor, iou: Tensor) -> Tensor:
        """(M,) the class-loss terms of M matched queries, logits (M, C+1), labels (M,):
        -log p(label), or with ``class_iou_target`` -(iou log p(label) + (1 - iou)
        ``eos_coef`` log p(no object)) (``iou``: (M,) each box's IoU with its object)."""
        log_p = F.log_softmax(logits.float(), -1)
        terms = -log_p.gather(1, labels[:, None]).squeeze(1)
        if not self.class_iou_target:
            return terms
        return iou * terms - (1 - iou) * self.eos_coef * log_p[:, -1]

    @torch.no_grad()
    def _cardinality_error(self, logits: Tensor, targets: list[dict]) -> Tensor:
        """(L,) mean over images of |predicted objects - target boxes| (logged only)."""
        counts = torch.as_tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        predicted = (logits.argmax(-1) != self.num_classes).sum(-1)  # (L, B)
        return (predicted - counts).abs().mean(-1)


def matched_pairs(assignment: list[list[tuple]], targets: list[dict]) -> Tensor:
    """(4, L * M) int64 on the host, layer by layer: decoder layer, image, query and the
    index into the concatenated targets of every matched pair.  Every layer matches the
    same number M of pairs (min(Q, boxes) per image)."""
    starts = np.cumsum([0] + [len(t["labels"]) for t in targets])
    parts = [np.stack([np.full_like(i, layer), np.full_like(i, n), i, j + starts[n]])
             for layer, per_image in enumerate(assignment) for n, (i, j) in enumerate(per_image)]
    return torch.from_numpy(np.concatenate(parts, axis=1))


@torch.no_grad()
def _class_error(logits: Tensor, labels: Tensor, pairs: Tensor) -> Tensor:
    """100 - the top-1 accuracy (%) of one layer's matched queries (logged only); logits
    (B, Q, C+1), pairs (4, M) of that layer (see :func:`matched_pairs`)."""
    if pairs.shape[1] == 0:
        return torch.tensor(100.0, device=logits.device)
    correct = (logits[pairs[1], pairs[2]].argmax(-1) == labels[pairs[3]]).float().mean()
    return 100.0 - 100.0 * correct


def _box_losses(boxes: Tensor, tgt_boxes: Tensor, pairs: Tensor,
                num_boxes: Tensor) -> tuple[dict, Tensor]:
    """(L,) L1 and GIoU losses of each layer's matched boxes (normalised cxcywh), summed
    over the pairs and divided by ``num_boxes``; and the (L*M,) IoU of the pairs."""
    L = boxes.shape[0]
    src = boxes[pairs[0], pairs[1], pairs[2]].float()  # (L*M, 4)
    tgt = tgt_boxes[pairs[3]].to(src)
    l1 = (src - tgt).abs().view(L, -1).sum(1)
    iou, giou = paired_iou_giou(box_convert(src, "cxcywh", "xyxy"),
                                box_convert(tgt, "cxcywh", "xyxy"))
    losses = {"loss_bbox": l1 / num_boxes, "loss_giou": (1 - giou).view(L, -1).sum(1) / num_boxes}
    return losses, iou


def paired_iou_giou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(n,) IoU and generalised IoU of box a[k] with box b[k], both (n, 4) xyxy: the
    diagonals of ``torchvision.ops.box_iou`` / ``generalized_box_iou(a, b)``, the same
    arithmetic, without the n x n matrices."""
    area_a, area_b = box_area(a), box_area(b)
    inter_wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    union = area_a + area_b - inter
    hull_wh = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0)
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    iou = inter / union
    return iou, iou - (hull - union) / hull
