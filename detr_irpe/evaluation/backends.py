"""The COCO evaluation libraries this code base can score with.

``faster-coco-eval`` (a C++ port of COCOeval, same numbers) is the default; pycocotools, the
reference implementation, is the fallback when faster-coco-eval is not installed, and can be
chosen on purpose (``--eval_backend pycocotools``).  Both expose the same ``COCO`` /
``COCOeval`` interface; ``eval["precision"]`` has the same layout
(T iou thresholds, R recall thresholds, K categories, A areas, M maxDets).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import NamedTuple

from detr_irpe.config import EVAL_BACKENDS


class Backend(NamedTuple):
    """``name``: "faster_coco_eval" or "pycocotools"; ``coco_cls``: its COCO class;
    ``make_eval(coco_gt, coco_dt)``: a "bbox" COCOeval that prints with ``print``."""

    name: str
    coco_cls: type
    make_eval: object


def resolve_backend(name: str = EVAL_BACKENDS[0]) -> str:
    """The backend ``name`` stands for: "auto" is faster_coco_eval when installed."""
    if name not in EVAL_BACKENDS:
        raise ValueError(f"--eval_backend {name}: choose one of {', '.join(EVAL_BACKENDS)}")
    has_faster = importlib.util.find_spec("faster_coco_eval") is not None
    if name == "auto":
        return "faster_coco_eval" if has_faster else "pycocotools"
    if name == "faster_coco_eval" and not has_faster:
        raise ValueError("--eval_backend faster_coco_eval: the package is not installed; "
                         "pip install -r requirements.txt, or pass --eval_backend pycocotools")
    return name


def load_backend(name: str = EVAL_BACKENDS[0]) -> Backend:
    """Import the chosen library (see :func:`resolve_backend`)."""
    name = resolve_backend(name)
    if name == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return Backend(name, COCO, lambda gt, dt: COCOeval_faster(gt, dt, "bbox", print_function=print))
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return Backend(name, COCO, lambda gt, dt: COCOeval(gt, dt, iouType="bbox"))


def coco_from_dataset(coco_cls: type, dataset: dict):
    """A ``coco_cls`` index over a copy of a COCO-format dict (ground truth or results)."""
    coco = coco_cls()
    coco.dataset = copy.deepcopy(dataset)
    coco.createIndex()
    return coco
