"""Score a detections file (COCO results format) against ground truth with this project's
evaluator: the 12 COCO box numbers and the per-category table, as ``--eval`` prints them.

    python tools/score.py --json datasets/val.json --detections other_detector.json

For comparing with another detector (e.g. one trained with another library) on the same
ground truth and the same evaluator.  The ground truth is checked first (duplicated ids,
undeclared images or categories are errors: COCOeval would silently mis-score them).  Every
image of the ground truth counts; an image without detections counts as all misses.
Detections must be a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}`` with image and category ids of the ground truth.  Exit code 0 when scored, 1
for an input problem (one line says what).
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace

import torch

from detr_irpe.data.checker.checks import check_annotations
from detr_irpe.evaluation import CocoEvaluator, format_stats
from detr_irpe.evaluation.per_category import format_metrics_table
from detr_irpe.options import input_error


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="ground truth: COCO instances JSON")
    parser.add_argument("--detections", required=True,
                        help="COCO results JSON: a list of image_id, category_id, bbox, score")
    parser.add_argument("--eval_backend", default="auto",
                        choices=("auto", "faster_coco_eval", "pycocotools"),
                        help="COCOeval implementation (the same numbers)")
    return parser.parse_args(argv)


def read_detections(path: str, image_ids: set, category_ids: set) -> dict[int, dict]:
    """{image_id: {"scores", "labels", "boxes" xyxy}} for every image of the ground truth."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--detections {path}: cannot be read as JSON ({err})") from err
    if not isinstance(entries, list):
        raise ValueError(f"--detections {path}: expected a JSON list of detections")
    grouped: dict[int, list] = {i: [] for i in image_ids}
    for n, d in enumerate(entries):
        try:
            image, category, (x, y, w, h), score = (d["image_id"], d["category_id"], d["bbox"],
                                                   float(d["score"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"--detections {path}: entry {n} is not "
                             f"{{image_id, category_id, bbox: [x, y, w, h], score}}") from err
        if image not in image_ids or category not in category_ids:
            raise ValueError(f"--detections {path}: entry {n} has image_id {image} / "
                             f"category_id {category}, not in the ground truth")
        grouped[image].append((score, category, [x, y, x + w, y + h]))
    return {i: {"scores": torch.tensor([s for s, _, _ in g], dtype=torch.float64),
                "labels": torch.tensor([c for _, c, _ in g], dtype=torch.int64),
                "boxes": torch.tensor([b for _, _, b in g], dtype=torch.float64).reshape(-1, 4)}
            for i, g in grouped.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    report, gt = check_annotations(args.json)
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        return input_error(ValueError(f"--json {args.json}: fix the errors above first"))
    categories = {c["id"]: c["name"] for c in gt["categories"]}
    try:
        results = read_detections(args.detections, {im["id"] for im in gt["images"]},
                                  set(categories))
    except ValueError as err:
        return input_error(err)
    evaluator = CocoEvaluator(SimpleNamespace(dataset=gt), None, backend=args.eval_backend)
    evaluator.update(results)
    summary = evaluator.summarize()
    print(format_stats(summary.stats))
    print(format_metrics_table(evaluator.per_category(), categories))
    return 0


if __name__ == "__main__":
    sys.exit(main())
