"""Per-category numbers read from an accumulated COCOeval, and their table.

``coco_eval.eval["precision"]`` is (T iou thresholds, R recall thresholds, K categories,
A areas, M maxDets), ``eval["recall"]`` (T, K, A, M); -1 marks "no ground truth".  Area
index 0 is "all" and the last maxDets is 100, as in COCOeval's own summary.
"""

from __future__ import annotations

import math

import numpy as np

# Name -> (iou threshold or None for the mean over 0.50:0.95, "precision" or "recall").
PER_CATEGORY_METRICS = {"AP": (None, "precision"), "AP50": (0.5, "precision"),
                        "AR100": (None, "recall")}


def _iou_rows(coco_eval, iou: float | None) -> slice | list[int]:
    if iou is None:
        return slice(None)
    thresholds = np.asarray(coco_eval.params.iouThrs)
    return [int(np.argmin(np.abs(thresholds - iou)))]


def per_category_metrics(coco_eval) -> dict[str, dict[int, float]]:
    """{"AP": {category id: AP@[.5:.95]}, "AP50": {...}, "AR100": {...}}, area "all",
    100 detections; NaN for a category without ground truth."""
    result: dict[str, dict[int, float]] = {name: {} for name in PER_CATEGORY_METRICS}
    for name, (iou, kind) in PER_CATEGORY_METRICS.items():
        array = coco_eval.eval[kind]
        rows = _iou_rows(coco_eval, iou)
        for k, cat_id in enumerate(coco_eval.params.catIds):
            values = array[rows, ..., k, 0, -1] if kind == "precision" else array[rows, k, 0, -1]
            values = values[values > -1]
            result[name][int(cat_id)] = float(np.mean(values)) if values.size else math.nan
    return result


def precision_curve(coco_eval, iou: float, cat_id: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(recall thresholds (R,), interpolated precision (R,)) of one category at ``iou``
    (area all, 100 detections), as COCOeval computes its AP; None without ground truth."""
    k = list(coco_eval.params.catIds).index(cat_id)
    precision = coco_eval.eval["precision"][_iou_rows(coco_eval, iou)[0], :, k, 0, -1]
    if np.all(precision == -1):
        return None
    return np.asarray(coco_eval.params.recThrs), np.asarray(precision)


def format_metrics_table(metrics: dict[str, dict[int, float]],
                         category_names: dict[int, str] | None = None) -> str:
    """A table with one line per category id and one column (in %) per metric."""
    names = category_names or {}
    cat_ids = sorted(next(iter(metrics.values())))
    width = max([len("category")] + [len(names.get(c, str(c))) for c in cat_ids])
    lines = [f"{'id':>4}  {'category':<{width}}" + "".join(f"  {m + ' (%)':>9}" for m in metrics)]
    for cat_id in cat_ids:
        cells = ["n/a" if math.isnan(v[cat_id]) else f"{100 * v[cat_id]:.1f}" for v in metrics.values()]
        lines.append(f"{cat_id:>4}  {names.get(cat_id, str(cat_id)):<{width}}"
                     + "".join(f"  {c:>9}" for c in cells))
    return "\n".join(lines)
