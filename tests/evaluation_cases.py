"""A small COCO evaluation case shared by the evaluation tests: three categories with
non-contiguous ids, four images, ground truth with a crowd box, and detections derived from
it."""

import contextlib
import io
import json

import numpy as np
import torch
from pycocotools.coco import COCO

# Non-contiguous category ids; category 9 has no ground truth. Model labels 0, 1, 2.
CATEGORIES = [{"id": 2, "name": "apple"}, {"id": 5, "name": "pear"}, {"id": 9, "name": "plum"}]
LABEL_TO_CATEGORY = {0: 2, 1: 5, 2: 9}
IMAGES = [
    {"id": 1, "width": 100, "height": 80, "file_name": "1.jpg"},
    {"id": 2, "width": 120, "height": 90, "file_name": "2.jpg"},
    {"id": 3, "width": 50, "height": 50, "file_name": "3.jpg"},
    {"id": 4, "width": 60, "height": 40, "file_name": "4.jpg"},  # no ground truth
]
GT_BOXES = [  # (image_id, category_id, xywh, iscrowd)
    (1, 2, [10, 10, 30, 20], 0),
    (1, 5, [50, 30, 40, 40], 0),
    (2, 2, [5, 5, 10, 10], 0),
    (2, 2, [60, 20, 50, 60], 0),
    (2, 5, [0, 0, 120, 90], 1),
    (3, 5, [20, 15, 12, 30], 0),
]


def write_gt_file(path) -> None:
    """The ground truth above as a COCO annotation file."""
    annotations = [
        {"id": i + 1, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3],
         "iscrowd": crowd}
        for i, (img, cat, box, crowd) in enumerate(GT_BOXES)
    ]
    path.write_text(
        json.dumps({"images": IMAGES, "annotations": annotations, "categories": CATEGORIES})
    )


def load_coco(path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def xyxy(xywh):
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def perfect_results():
    """Model-style results that reproduce every non-crowd ground-truth box."""
    results = {image["id"]: {"scores": [], "labels": [], "boxes": []} for image in IMAGES}
    category_to_label = {c: label for label, c in LABEL_TO_CATEGORY.items()}
    for image_id, category_id, box, crowd in GT_BOXES:
        if not crowd:
            results[image_id]["scores"].append(0.9)
            results[image_id]["labels"].append(category_to_label[category_id])
            results[image_id]["boxes"].append(xyxy(box))
    return {
        image_id: {
            "scores": torch.tensor(r["scores"]),
            "labels": torch.tensor(r["labels"], dtype=torch.int64),
            "boxes": torch.tensor(r["boxes"], dtype=torch.float32).reshape(-1, 4),
        }
        for image_id, r in results.items()
    }


def noisy_detections(seed=0):
    """COCO-format detections (xywh, category ids): jittered true boxes plus false positives."""
    rng = np.random.default_rng(seed)
    detections = []
    for image_id, category_id, box, _ in GT_BOXES:
        for _ in range(3):
            jitter = rng.normal(0, 3, size=4)
            x, y = box[0] + jitter[0], box[1] + jitter[1]
            w, h = max(box[2] + jitter[2], 1.0), max(box[3] + jitter[3], 1.0)
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [round(v, 2) for v in (x, y, w, h)],
                    "score": round(float(rng.uniform(0.05, 1)), 4),
                }
            )
    for image in IMAGES:
        for _ in range(5):
            w, h = rng.uniform(5, 30, size=2)
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            detections.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([2, 5, 9])),
                    "bbox": [round(v, 2) for v in (x, y, w, h)],
                    "score": round(float(rng.uniform(0.05, 1)), 4),
                }
            )
    return detections


def as_model_results(detections):
    """The same detections in the evaluator's input format (xyxy, model labels)."""
    category_to_label = {c: label for label, c in LABEL_TO_CATEGORY.items()}
    results = {}
    for image in IMAGES:
        dets = [d for d in detections if d["image_id"] == image["id"]]
        results[image["id"]] = {
            "scores": torch.tensor([d["score"] for d in dets], dtype=torch.float64),
            "labels": torch.tensor([category_to_label[d["category_id"]] for d in dets]),
            "boxes": torch.tensor([xyxy(d["bbox"]) for d in dets], dtype=torch.float64),
        }
    return results
