"""COCO evaluation time per backend, on a generated set of detections.

The set: ``num_images`` images of 640 x 480 with 1-15 ground-truth boxes each over 80
categories; per image ``dets_per_image`` detections, a jittered copy of each true box
(scored high) and random boxes (scored low), all with random categories partly wrong.
Each backend scores the same detections through :class:`CocoEvaluator`; the time is
``summarize()`` (loading the results, evaluate, accumulate, summarize), best of ``reps``.

    python -m benchmarks.coco_eval --images 5000 --dets 100   # the figure in docs/benchmarks.md
    python -m benchmarks.speed --eval_images 5000 --eval_dets 100   # the same, from speed.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from detr_irpe.evaluation import CocoEvaluator

WIDTH, HEIGHT, NUM_CATEGORIES = 640, 480, 80


class _GroundTruth:
    """The minimal COCO-like object CocoEvaluator reads: a ``dataset`` dict."""

    def __init__(self, dataset: dict):
        self.dataset = dataset


def generated_set(num_images: int, dets_per_image: int, seed: int = 0):
    """(ground truth, results) with results in CocoEvaluator.update's format (labels are
    category ids, boxes absolute xyxy)."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], {}
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id}.jpg"})
        n_true = int(rng.integers(1, 16))
        true = _random_xywh(rng, n_true)
        cats = rng.integers(1, NUM_CATEGORIES + 1, n_true)
        for box, cat in zip(true, cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat),
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
        n_hit = min(n_true, dets_per_image)
        hits = true[:n_hit] + rng.normal(0, 4, (n_hit, 4))
        hits[:, 2:] = np.maximum(hits[:, 2:], 1.0)
        boxes = np.concatenate([hits, _random_xywh(rng, dets_per_image - n_hit)])
        labels = np.concatenate([np.where(rng.random(n_hit) < 0.8, cats[:n_hit],
                                          rng.integers(1, NUM_CATEGORIES + 1, n_hit)),
                                 rng.integers(1, NUM_CATEGORIES + 1, dets_per_image - n_hit)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, n_hit), rng.uniform(0.0, 0.6, dets_per_image - n_hit)])
        results[image_id] = {"boxes": box_convert(torch.from_numpy(boxes), "xywh", "xyxy"),
                             "labels": torch.from_numpy(labels), "scores": torch.from_numpy(scores)}
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    return _GroundTruth({"images": images, "annotations": annotations, "categories": categories}), results


def _random_xywh(rng, n: int) -> np.ndarray:
    w, h = rng.uniform(8, 300, n), rng.uniform(8, 250, n)
    x, y = rng.uniform(0, 1, n) * (WIDTH - w), rng.uniform(0, 1, n) * (HEIGHT - h)
    return np.stack([x, y, w, h], axis=1).round(2)


def time_backends(num_images: int, dets_per_image: int, reps: int = 1,
                  backends=("pycocotools", "faster_coco_eval")) -> dict:
    """Seconds of ``summarize()`` per backend (best of ``reps``) and the AP each found."""
    gt, results = generated_set(num_images, dets_per_image)
    report = {"images": num_images, "detections_per_image": dets_per_image, "backends": {}}
    for backend in backends:
        evaluator = CocoEvaluator(gt, None, backend=backend)
        evaluator.update(results)
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            summary = evaluator.summarize()
            best = min(best, time.perf_counter() - start)
        report["backends"][backend] = {"seconds": best, "AP": summary.stats[0], "AP50": summary.stats[1]}
    return report


def print_report(report: dict) -> None:
    print(f"\n## COCO evaluation, {report['images']} images x {report['detections_per_image']} "
          f"detections (summarize: load results, evaluate, accumulate)")
    base = report["backends"].get("pycocotools", {}).get("seconds")
    for name, r in report["backends"].items():
        speedup = f"{base / r['seconds']:6.1f} x" if base else ""
        print(f"{name:18s} {r['seconds']:8.2f} s  {speedup}  AP {r['AP']:.4f}  AP50 {r['AP50']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="generated images")
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--reps", type=int, default=1, help="timed runs per backend (best kept)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.images < 1 or args.dets < 1:
        parser.error("--images and --dets must be >= 1")
    report = time_backends(args.images, args.dets, args.reps)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
