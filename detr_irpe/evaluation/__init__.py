"""COCO box AP (faster-coco-eval or pycocotools) for single- and multi-process evaluation."""

from detr_irpe.evaluation.backends import load_backend, resolve_backend
from detr_irpe.evaluation.coco_eval import (
    STAT_NAMES,
    CocoEvaluator,
    CocoSummary,
    format_stats,
    per_category_ap,
)
from detr_irpe.evaluation.per_category import format_metrics_table, per_category_metrics

__all__ = [
    "STAT_NAMES",
    "CocoEvaluator",
    "CocoSummary",
    "format_metrics_table",
    "format_stats",
    "load_backend",
    "per_category_ap",
    "per_category_metrics",
    "resolve_backend",
]
