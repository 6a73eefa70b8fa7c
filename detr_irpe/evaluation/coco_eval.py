"""COCO box AP with faster-coco-eval or pycocotools, for one process or many.

Usage::

    evaluator = CocoEvaluator(dataset.coco, dataset.label_to_category_id)
    for images, targets in loader:
        ...  # results: {image_id: {"scores": (Q,), "labels": (Q,), "boxes": (Q, 4)}}
        evaluator.update(results)
    evaluator.synchronize_between_processes()  # no-op without torch.distributed
    summary = evaluator.summarize()             # CocoSummary(stats, per_category_ap)
    print(format_stats(summary.stats))
    print(format_metrics_table(evaluator.per_category(), dataset.category_names))

Boxes given to :meth:`CocoEvaluator.update` are absolute (x0, y0, x1, y1) in pixels of the
*original* image (``target["orig_size"]``), not the normalised cxcywh the model predicts.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import NamedTuple

import torch
import torch.distributed as dist
from torchvision.ops import box_convert

from detr_irpe.config import EVAL_BACKENDS
from detr_irpe.evaluation.backends import coco_from_dataset, load_backend
from detr_irpe.evaluation.per_category import PER_CATEGORY_METRICS, per_category_metrics

# The 12 numbers of COCOeval.summarize() for "bbox", in order.
STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_S",
    "AP_M",
    "AP_L",
    "AR_1",
    "AR_10",
    "AR_100",
    "AR_S",
    "AR_M",
    "AR_L",
)
_STAT_DESCRIPTIONS = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


class CocoSummary(NamedTuple):
    """``stats``: the 12 COCOeval numbers (see ``STAT_NAMES``; -1 where there is no ground
    truth). ``per_category_ap``: original category id -> AP@[.5:.95] (area all, 100
    detections), NaN for a category with no ground truth in the evaluated images."""

    stats: list[float]
    per_category_ap: dict[int, float]


class CocoEvaluator:
    """Accumulates detections per image and scores them with COCOeval ("bbox").

    Args:
        coco_gt: ground truth (e.g. ``CocoDetection.coco``; any object with a COCO-format
            ``dataset`` dict).
        label_to_category_id: maps model labels back to the JSON's category ids; None when
            labels already are category ids. Detections whose label is not in the mapping
            are dropped.
        quiet: hide the library's prints.
        backend: "auto", "faster_coco_eval" or "pycocotools" (see ``backends.py``).
    """

    def __init__(
        self,
        coco_gt,
        label_to_category_id: dict[int, int] | None = None,
        quiet: bool = True,
        backend: str = EVAL_BACKENDS[0],
    ):
        self.backend = load_backend(backend)
        with _maybe_quiet(quiet):
            self.coco_gt = coco_from_dataset(self.backend.coco_cls, coco_gt.dataset)
        self.label_to_category_id = label_to_category_id
        self.quiet = quiet
        # image id -> its COCO-format detections; an image evaluated with no detection
        # still counts (it contributes misses).
        self._detections: dict[int, list[dict]] = {}
        self.coco_eval = None  # the last summarize()'s COCOeval

    def update(self, results: dict[int, dict[str, torch.Tensor]]) -> None:
        """Add the detections of some images.

        ``results[image_id]`` holds ``scores`` (Q,), ``labels`` (Q,) and ``boxes`` (Q, 4),
        absolute xyxy in the original image. An image seen again replaces its earlier entry
        (the DistributedSampler repeats images to even out the ranks).
        """
        for image_id, result in results.items():
            self._detections[int(image_id)] = self._to_coco(int(image_id), result)

    def _to_coco(self, image_id: int, result: dict[str, torch.Tensor]) -> list[dict]:
        boxes = torch.as_tensor(result["boxes"], dtype=torch.float64).detach().cpu().reshape(-1, 4)
        xywh = box_convert(boxes, in_fmt="xyxy", out_fmt="xywh").tolist()
        scores = torch.as_tensor(result["scores"]).detach().cpu().reshape(-1).tolist()
        labels = torch.as_tensor(result["labels"]).detach().cpu().reshape(-1).tolist()
        detections = []
        for box, score, label in zip(xywh, scores, labels, strict=True):
            label = int(label)
            if self.label_to_category_id is not None:
                if label not in self.label_to_category_id:
                    continue
                label = self.label_to_category_id[label]
            detections.append(
                {"image_id": image_id, "category_id": label, "bbox": box, "score": float(score)}
            )
        return detections

    @property
    def image_ids(self) -> list[int]:
        """The ids of the evaluated images, sorted."""
        return sorted(self._detections)

    def detections(self) -> list[dict]:
        """All detections in the COCO results format (``bbox`` is absolute xywh)."""
        return [det for image_id in self.image_ids for det in self._detections[image_id]]

    def synchronize_between_processes(self) -> None:
        """Gather every rank's detections (all ranks end up with all of them).

        A no-op unless ``torch.distributed`` is initialised. Images seen by several ranks
        (sampler padding) are kept once.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered: list[dict[int, list[dict]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._detections)
        merged: dict[int, list[dict]] = {}
        for per_rank in gathered:
            for image_id, detections in per_rank.items():
                merged.setdefault(image_id, detections)
        self._detections = merged

    def summarize(self) -> CocoSummary:
        """Run COCOeval "bbox" on exactly the evaluated images; also kept in ``coco_eval``."""
        image_ids = self.image_ids
        detections = self.detections()
        with _maybe_quiet(self.quiet):
            coco_dt = self._load_results([dict(det) for det in detections])
            coco_eval = self.backend.make_eval(self.coco_gt, coco_dt)
            coco_eval.params.imgIds = image_ids
            if image_ids:
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
        self.coco_eval = coco_eval
        if not image_ids:
            stats = [-1.0] * len(STAT_NAMES)
            per_category = {cat_id: math.nan for cat_id in sorted(self.coco_gt.cats)}
            return CocoSummary(stats, per_category)
        stats = [float(s) for s in coco_eval.stats[: len(STAT_NAMES)]]  # faster-coco-eval adds AR50, AR75
        return CocoSummary(stats, per_category_ap(coco_eval))

    def per_category(self) -> dict[str, dict[int, float]]:
        """After :meth:`summarize`: {"AP", "AP50", "AR100"} -> {category id: value}, NaN
        without ground truth (see ``per_category.py``)."""
        if not self.image_ids:
            return {name: {c: math.nan for c in sorted(self.coco_gt.cats)}
                    for name in PER_CATEGORY_METRICS}
        return per_category_metrics(self.coco_eval)

    def _load_results(self, detections: list[dict]):
        if detections:
            return self.coco_gt.loadRes(detections)
        # loadRes rejects an empty list; an empty result set is a COCO with no annotations.
        empty = {
            "images": self.coco_gt.dataset.get("images", []),
            "categories": self.coco_gt.dataset.get("categories", []),
            "annotations": [],
        }
        return coco_from_dataset(self.backend.coco_cls, empty)


def per_category_ap(coco_eval) -> dict[int, float]:
    """AP@[.5:.95] per category id (area "all", the largest maxDets) from an accumulated
    COCOeval; NaN where the category has no ground truth (precision -1 everywhere)."""
    return per_category_metrics(coco_eval)["AP"]


def format_stats(stats: list[float]) -> str:
    """The 12 numbers as COCOeval prints them."""
    return "\n".join(
        f" {description} = {value:0.3f}"
        for description, value in zip(_STAT_DESCRIPTIONS, stats, strict=True)
    )


def _maybe_quiet(quiet: bool):
    return contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
