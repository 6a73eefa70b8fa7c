"""COCO box AP (faster-coco-eval or pycocotools) for single- and multi-process evaluation."""

from .backends import load_backend, resolve_backend
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
    "load_backend",
    "per_category_ap",
    "resolve_backend",
]
