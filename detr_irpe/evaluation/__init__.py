"""COCO box AP (pycocotools) for single- and multi-process evaluation."""

from .coco_eval import (
    STAT_NAMES,
    CocoEvaluator,
    CocoSummary,
    format_per_category,
    format_stats,
    per_category_ap,
)

__all__ = [
    "STAT_NAMES",
    "CocoEvaluator",
    "CocoSummary",
    "format_per_category",
    "format_stats",
    "per_category_ap",
]
