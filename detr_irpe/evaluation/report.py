"""Writing one evaluation's files under ``--output_dir``/eval/ (``<tag>``: the epoch in four
digits, or ``eval`` for ``--eval``): ``<tag>.json``, ``detections_<tag>.json``,
``pr_<tag>.png`` and ``confusion_<tag>.png``.  What each holds is described once, in
docs/training.md ("What ``--output_dir`` holds")."""

from __future__ import annotations

import math
from pathlib import Path

from detr_irpe.evaluation.coco_eval import STAT_NAMES, CocoEvaluator, CocoSummary
from detr_irpe.evaluation.confusion import confusion_matrix
from detr_irpe.evaluation.plots import plot_confusion, plot_pr_curves
from detr_irpe.files import write_json


def _nan_to_none(values: dict[int, float]) -> dict[str, float | None]:
    return {str(k): (None if math.isnan(v) else v) for k, v in values.items()}


def write_evaluation(eval_dir: Path, tag: str, epoch: int | None, evaluator: CocoEvaluator,
                     summary: CocoSummary, category_names: dict[int, str],
                     test_stats: dict) -> list[Path]:
    """Write the files listed in the module docstring; returns their paths."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    metrics = evaluator.per_category()
    detections = evaluator.detections()
    matrix = confusion_matrix(evaluator.coco_gt.dataset, detections, evaluator.image_ids)
    record = {"epoch": epoch, "bbox": dict(zip(STAT_NAMES, summary.stats)),
              **{f"per_category_{name}": _nan_to_none(v) for name, v in metrics.items()},
              "category_names": {str(k): v for k, v in category_names.items()},
              "test_stats": test_stats,
              "confusion": {"score_threshold": matrix.score_threshold,
                            "iou_threshold": matrix.iou_threshold,
                            "rows": [*map(str, matrix.category_ids), "missed"],
                            "columns": [*map(str, matrix.category_ids), "background"],
                            "counts": matrix.counts.tolist()}}
    paths = [eval_dir / f"{tag}.json", eval_dir / f"detections_{tag}.json",
             eval_dir / f"pr_{tag}.png", eval_dir / f"confusion_{tag}.png"]
    write_json(paths[0], record)
    write_json(paths[1], detections)
    title = f"({'eval' if tag == 'eval' else f'epoch {epoch}'})"
    if evaluator.image_ids:
        plot_pr_curves(evaluator.coco_eval, category_names, paths[2], title)
    else:
        paths.remove(paths[2])
    plot_confusion(matrix, category_names, paths[-1], title)
    return paths
