"""Per-category AP50/AR100 and PR curves against pycocotools' own arrays; the confusion
matrix on a hand-counted case; the files one evaluation writes."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from evaluation_cases import LABEL_TO_CATEGORY, as_model_results, noisy_detections
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detr_irpe.evaluation import CocoEvaluator
from detr_irpe.evaluation.confusion import confusion_matrix
from detr_irpe.evaluation.per_category import precision_curve
from detr_irpe.evaluation.report import write_evaluation


def _reference(gt_path, detections, cat_ids=None) -> COCOeval:
    """pycocotools run on its own, from the files."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(detections)), iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_per_category_ap50_ar100_and_curves_match_pycocotools(coco_gt, gt_file, backend):  # noqa: F811
    detections = noisy_detections(seed=1)
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY, backend=backend)
    evaluator.update(as_model_results(detections))
    evaluator.summarize()
    metrics = evaluator.per_category()
    full = _reference(gt_file, detections)
    for k, category_id in enumerate(full.params.catIds):
        if category_id == 9:  # no ground truth
            assert all(np.isnan(metrics[m][9]) for m in ("AP", "AP50", "AR100"))
            assert precision_curve(evaluator.coco_eval, 0.5, 9) is None
            continue
        alone = _reference(gt_file, detections, cat_ids=[category_id])
        assert metrics["AP"][category_id] == pytest.approx(alone.stats[0], abs=1e-12)
        assert metrics["AP50"][category_id] == pytest.approx(alone.stats[1], abs=1e-12)
        assert metrics["AR100"][category_id] == pytest.approx(alone.stats[8], abs=1e-12)
        for t, iou in ((0, 0.5), (5, 0.75)):
            recall, precision = precision_curve(evaluator.coco_eval, iou, category_id)
            np.testing.assert_array_equal(recall, np.linspace(0, 1, 101))
            np.testing.assert_allclose(precision, full.eval["precision"][t, :, k, 0, 2], atol=1e-12)
    assert 0 < metrics["AP50"][2] < 1 and metrics["AP50"][2] != metrics["AP"][2]


def _gt(boxes):
    """(category_id, xywh[, iscrowd]) on image 1 -> a COCO-format dict."""
    anns = [{"id": i + 1, "image_id": 1, "category_id": b[0], "bbox": b[1], "area": 1.0,
             "iscrowd": b[2] if len(b) > 2 else 0} for i, b in enumerate(boxes)]
    return {"images": [{"id": 1, "width": 100, "height": 100}], "annotations": anns,
            "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}


def _det(category_id, box, score):
    return {"image_id": 1, "category_id": category_id, "bbox": box, "score": score}


def test_confusion_matrix_counts_a_hand_made_image():
    gt = _gt([(3, [0, 0, 10, 10]), (7, [50, 50, 10, 10]), (7, [80, 0, 10, 10]),
              (3, [0, 60, 20, 20], 1)])  # the last is a crowd region
    detections = [
        _det(3, [0, 0, 10, 10], 0.9),     # right
        _det(3, [0, 0, 10, 9], 0.8),      # a duplicate: its box is taken -> background
        _det(3, [50, 50, 10, 10], 0.7),   # wrong class on a "b" box
        _det(7, [30, 30, 5, 5], 0.6),     # nothing there -> background
        _det(7, [80, 0, 10, 10], 0.3),    # below the score threshold: ignored, box missed
        _det(3, [0, 60, 20, 20], 0.95),   # on the crowd region: not counted
        _det(7, [0, 60, 20, 19], 0.55),   # and a second one there neither
    ]
    m = confusion_matrix(gt, detections, [1], score_threshold=0.5, iou_threshold=0.5)
    assert m.category_ids == [3, 7]
    #                 true a  true b  background
    expected = [[1, 1, 1],   # predicted a
                [0, 0, 1],   # predicted b
                [0, 1, 0]]   # missed
    assert m.counts.tolist() == expected
    lower = confusion_matrix(gt, detections, [1], score_threshold=0.2, iou_threshold=0.5)
    assert lower.counts[1, 1] == 1 and lower.counts[2, 1] == 0  # now found
    near = [_det(3, [0, 0, 10, 9], 0.9)]  # IoU 0.9 with the "a" box
    assert confusion_matrix(gt, near, [1], 0.5, 0.85).counts[:, 0].tolist() == [1, 0, 0]
    strict = confusion_matrix(gt, near, [1], 0.5, 0.95).counts
    assert strict[0, 2] == 1 and strict[2, 0] == 1  # not close enough: background and missed


def test_write_evaluation_files(coco_gt, tmp_path):  # noqa: F811
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    evaluator.update(as_model_results(noisy_detections(seed=2)))
    summary = evaluator.summarize()
    names = {2: "apple", 5: "pear", 9: "plum"}
    paths = write_evaluation(tmp_path, "0007", 7, evaluator, summary, names, {"loss": 1.0})
    assert [p.name for p in paths] == ["0007.json", "detections_0007.json", "pr_0007.png",
                                       "confusion_0007.png"]
    record = json.loads(paths[0].read_text())
    assert record["epoch"] == 7 and record["bbox"]["AP"] == summary.stats[0]
    assert record["per_category_AP50"]["9"] is None and record["per_category_AR100"]["2"] > 0
    assert record["confusion"]["rows"][-1] == "missed"
    assert record["confusion"]["columns"][-1] == "background"
    for png in paths[2:]:
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 200
