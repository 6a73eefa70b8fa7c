"""Training-only dense auxiliary head on the encoder output.

DETR learns slowly from scratch because only one query per object receives a box loss
(one-to-one matching).  This head gives the encoder a dense, one-to-many signal: every
encoder token near an object's centre predicts that object's class and box.  It is used
in training only; the inference model (and the ``model`` state dict of a checkpoint) is
an ordinary DETR.

Assignment (:func:`assign_cells`), on each image's own feature grid of h x w cells: the
cell holding a box centre is positive for that box, and so is each of its 8 neighbours
whose cell centre lies inside the box.  A cell claimed by several boxes goes to the
smallest.  Every other cell of the image is "no object"; padding cells are ignored.

Box prediction of the token of cell (cx, cy) (normalised cell centre):
``sigmoid(MLP(token) + logit((cx, cy, PRIOR_SIZE, PRIOR_SIZE)))`` -- a fresh head predicts
a box of 0.2 x 0.2 centred on its cell.  Losses (:func:`dense_losses`): cross-entropy over
all cells, "no object" weighted ``NO_OBJECT_WEIGHT``; L1 and GIoU over positive cells,
divided by their number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

from .mlp import MLP

PRIOR_SIZE = 0.2  # width and height of the box a fresh head predicts
NO_OBJECT_WEIGHT = 0.1  # cross-entropy weight of the "no object" class
STATE_PREFIX = "dense_head."  # its names in the DETR state dict


def grid_sizes(mask: Tensor) -> Tensor:
    """mask: bool (B, H, W), True on padding (bottom/right) -> (B, 2) valid rows, cols."""
    valid = ~mask
    return torch.stack([valid[:, :, 0].sum(1), valid[:, 0, :].sum(1)], dim=1)


def cell_centres(mask: Tensor) -> Tensor:
    """(B, H*W, 2) centres (cx, cy) of the cells, normalised by each image's own valid
    grid (so they match target boxes, which are normalised by each image's size).
    Padding cells get centres > 1."""
    B, H, W = mask.shape
    sizes = grid_sizes(mask).clamp(min=1).to(torch.float32)  # (B, 2)
    rows = (torch.arange(H, device=mask.device) + 0.5)[None, :] / sizes[:, :1]  # (B, H)
    cols = (torch.arange(W, device=mask.device) + 0.5)[None, :] / sizes[:, 1:]  # (B, W)
    cx = cols[:, None, :].expand(B, H, W)
    cy = rows[:, :, None].expand(B, H, W)
    return torch.stack([cx, cy], dim=-1).flatten(1, 2)


class DenseHead(nn.Module):
    """Class and box of every encoder token (see the module docstring).

    ``forward(memory, mask)``: memory (B, D, H, W), mask bool (B, H, W) True on padding.
    Returns ``pred_logits`` (B, H*W, C + 1), ``pred_boxes`` (B, H*W, 4) normalised cxcywh
    and ``grid`` (B, 3): each image's valid rows, valid columns and the padded width W.
    """

    def __init__(self, hidden_dim: int, num_classes: int):
        super().__init__()
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)

    def forward(self, memory: Tensor, mask: Tensor) -> dict[str, Tensor]:
        tokens = memory.flatten(2).transpose(1, 2)  # (B, H*W, D)
        centres = cell_centres(mask).to(tokens.dtype)
        prior = torch.cat([centres, torch.full_like(centres, PRIOR_SIZE)], dim=-1)
        # eps clamps the padding cells' centres (> 1) to a finite logit.
        boxes = (self.bbox_embed(tokens) + torch.logit(prior, eps=1e-4)).sigmoid()
        sizes = grid_sizes(mask)
        padded_width = torch.full_like(sizes[:, :1], mask.shape[-1])
        return {"pred_logits": self.class_embed(tokens), "pred_boxes": boxes,
                "grid": torch.cat([sizes, padded_width], dim=1)}


def assign_cells(boxes: Tensor, h: int, w: int) -> Tensor:
    """Which box each cell of an h x w grid predicts: (h*w,) int64, the box index or -1.

    boxes: (n, 4) normalised cxcywh.  Row-major cells; cell (r, c) has centre
    ((c + 0.5) / w, (r + 0.5) / h).  Larger boxes are written first, so the smallest wins.
    """
    owner = torch.full((h, w), -1, dtype=torch.int64)
    areas = (boxes[:, 2] * boxes[:, 3]).tolist()
    for j in sorted(range(len(areas)), key=lambda k: -areas[k]):
        cx, cy, bw, bh = boxes[j].tolist()
        row, col = min(int(cy * h), h - 1), min(int(cx * w), w - 1)
        for r in range(max(row - 1, 0), min(row + 2, h)):
            for c in range(max(col - 1, 0), min(col + 2, w)):
                inside = abs((c + 0.5) / w - cx) < bw / 2 and abs((r + 0.5) / h - cy) < bh / 2
                if (r, c) == (row, col) or inside:
                    owner[r, c] = j
    return owner.flatten()


def _targets(out: dict, targets: list[dict], num_classes: int):
    """Per-cell class targets (B, N) (-100 on padding) and (batch, cell, box) of the
    positive cells."""
    B, N = out["pred_logits"].shape[:2]
    classes = torch.full((B, N), -100, dtype=torch.int64)
    pos_b, pos_cell, pos_box = [], [], []
    for b, t in enumerate(targets):
        h, w, W = out["grid"][b].tolist()
        cells = (torch.arange(h)[:, None] * W + torch.arange(w)[None, :]).flatten()
        owner = assign_cells(t["boxes"].detach().float().cpu(), h, w)
        labels = t["labels"].cpu()
        classes[b, cells] = num_classes
        positive = owner >= 0
        classes[b, cells[positive]] = labels[owner[positive]]
        pos_b.append(torch.full((int(positive.sum()),), b))
        pos_cell.append(cells[positive])
        pos_box.append(t["boxes"][owner[positive].to(t["boxes"].device)])
    return classes, torch.cat(pos_b), torch.cat(pos_cell), torch.cat(pos_box)


def dense_losses(out: dict, targets: list[dict], num_classes: int) -> dict[str, Tensor]:
    """Unweighted ``loss_dense_ce``, ``loss_dense_bbox`` (L1) and ``loss_dense_giou`` of a
    :class:`DenseHead` output; targets as for DETR (labels, normalised cxcywh boxes)."""
    logits, boxes = out["pred_logits"], out["pred_boxes"]
    classes, b, cell, tgt = _targets(out, targets, num_classes)
    weight = torch.ones(num_classes + 1, device=logits.device)
    weight[-1] = NO_OBJECT_WEIGHT
    ce = F.cross_entropy(logits.transpose(1, 2).float(), classes.to(logits.device), weight)
    src = boxes[b.to(boxes.device), cell.to(boxes.device)].float()
    tgt = tgt.to(src)
    n = max(len(src), 1)
    giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"),
                                          box_convert(tgt, "cxcywh", "xyxy")))
    return {"loss_dense_ce": ce,
            "loss_dense_bbox": F.l1_loss(src, tgt, reduction="sum") / n,
            "loss_dense_giou": (1 - giou).sum() / n}


def split_state(state: dict) -> tuple[dict, dict]:
    """A DETR state dict -> (the inference model's entries, the head's without prefix)."""
    model = {k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)}
    head = {k[len(STATE_PREFIX):]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
    return model, head


def join_state(model: nn.Module, stored: dict, stored_head: dict | None) -> dict:
    """The state dict to load into ``model`` from a checkpoint's ``model`` entries and its
    stored head (or None): a model with a head keeps its own head weights when the
    checkpoint has none."""
    if getattr(model, "dense_head", None) is None:
        return stored
    head = stored_head if stored_head else model.dense_head.state_dict()
    return {**stored, **{STATE_PREFIX + k: v for k, v in head.items()}}
