"""Fitting the box-quality head after training (:mod:`detr_irpe.models.box_quality`).

The finished model runs, as in evaluation, over the training images read with the
evaluation transform (no augmentation, no mosaic); over ``MAX_IMAGES`` of them, drawn from
the run's seed, when the set is larger (COCO).  Each query's vector and box are kept
with its target (:func:`~detr_irpe.models.box_quality.quality_targets`: its IoU with its
object, discounted for a duplicate), and the head alone is fitted to them:
binary cross-entropy, AdamW, ``STEPS`` steps on batches of ``BATCH`` boxes, in passes over
them in an order drawn from the run's seed (about 60 passes over the 12,000 boxes of 297
tiles with 40 queries; many more over a tiny set).  On those 297 tiles of 200 px the fit
took 8-9 s on 2 CPU cores, on 1000 images of 96-128 px 13 s.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from detr_irpe.config import DataConfig
from detr_irpe.data import CocoDetection, collate_fn
from detr_irpe.models.box_quality import quality_targets

from .loaders import evaluation_transform
from .loop import backbone_per_image, eval_outputs

STEPS = 3000
MAX_IMAGES = 2000
BATCH = 256
LR = 1e-3
WEIGHT_DECAY = 0.05


def fitting_set(train: CocoDetection, data: DataConfig, seed: int) -> Dataset:
    """The training set as the evaluation reads images (its resize, no augmentation), or
    ``MAX_IMAGES`` of its images drawn from ``seed``."""
    fit = copy.copy(train)
    fit.transforms = evaluation_transform(data)
    fit.mosaic_probability = 0.0
    if len(fit) <= MAX_IMAGES:
        return fit
    chosen = torch.randperm(len(fit), generator=torch.Generator().manual_seed(seed))
    return Subset(fit, sorted(chosen[:MAX_IMAGES].tolist()))


@torch.no_grad()
def _collect(model, dataset: Dataset, batch_size: int, device: torch.device,
             amp: str) -> tuple[Tensor, Tensor]:
    """(N, D + 4) query vectors and boxes, (N,) their targets, over all queries."""
    loader = DataLoader(dataset, batch_size, shuffle=False, collate_fn=collate_fn)
    inputs, ious = [], []
    model.eval()
    with backbone_per_image(model, True):
        for images, targets in loader:
            out = eval_outputs(model, [image.to(device) for image in images], device, amp)
            boxes = out["pred_boxes"]
            inputs.append(model.quality_embed.inputs(out["query_features"], boxes).flatten(0, 1))
            ious.append(quality_targets(boxes, [t["boxes"].to(device) for t in targets]).flatten())
    return torch.cat(inputs), torch.cat(ious)


def fit_quality_head(model, dataset: Dataset, batch_size: int, device: torch.device,
                     amp: str, seed: int, verbose: bool) -> float:
    """Fit ``model.quality_embed`` on ``dataset`` (see the module doc) and mark it fitted;
    returns its final loss over all the boxes.  Several processes fit alike; the main
    process's head is then given to all."""
    started = time.time()
    x, y = _collect(model, dataset, batch_size, device, amp)
    head = model.quality_embed
    mlp = head.mlp.float().requires_grad_(True)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    order = torch.Generator().manual_seed(seed)
    batches = []
    with torch.enable_grad():
        for _ in range(STEPS):
            if not batches:
                batches = list(torch.randperm(len(x), generator=order).split(BATCH))
            rows = batches.pop().to(x.device)
            loss = F.binary_cross_entropy_with_logits(mlp(x[rows])[:, 0], y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    mlp.requires_grad_(False)
    if dist.is_available() and dist.is_initialized():
        for p in mlp.parameters():
            dist.broadcast(p.data, 0)
    head.fitted.fill_(True)
    with torch.no_grad():
        final = float(F.binary_cross_entropy_with_logits(mlp(x)[:, 0], y))
    if verbose:
        print(f"box-quality head fitted on the {len(x)} boxes of {len(dataset)} training "
              f"images in {time.time() - started:.0f} s (loss {final:.3f}; mean target "
              f"{float(y.mean()):.3f})", flush=True)
    return final
