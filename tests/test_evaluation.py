"""CocoEvaluator against pycocotools run directly on the same detections."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from evaluation_cases import (
    IMAGES,
    LABEL_TO_CATEGORY,
    as_model_results,
    load_coco,
    noisy_detections,
    perfect_results,
)
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detr_irpe.evaluation import (
    STAT_NAMES,
    CocoEvaluator,
    format_metrics_table,
    format_stats,
    resolve_backend,
)


def _pycocotools_stats(gt_file, detections, tmp_path, cat_ids=None):
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(str(results_file)), iouType="bbox")
        if cat_ids is not None:
            coco_eval.params.catIds = cat_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


def test_perfect_detections_give_ap_one(coco_gt):
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    evaluator.update(perfect_results())
    stats, per_category = evaluator.summarize()
    assert len(stats) == len(STAT_NAMES) == 12
    assert stats[0] == pytest.approx(1.0) and stats[1] == pytest.approx(1.0)
    assert set(per_category) == {2, 5, 9}  # original category ids
    assert per_category[2] == pytest.approx(1.0) and per_category[5] == pytest.approx(1.0)
    assert math.isnan(per_category[9])  # no ground truth


def test_matches_pycocotools_onnoisy_detections(coco_gt, gt_file, tmp_path):
    detections = noisy_detections()
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    evaluator.update(as_model_results(detections))
    summary = evaluator.summarize()
    expected = _pycocotools_stats(gt_file, detections, tmp_path)
    assert 0.1 < expected[0] < 0.99  # a non-trivial case
    np.testing.assert_allclose(summary.stats, expected, atol=1e-9)
    # Per-category AP equals pycocotools restricted to that one category.
    for category_id in (2, 5):
        single = _pycocotools_stats(gt_file, detections, tmp_path, cat_ids=[category_id])
        assert summary.per_category_ap[category_id] == pytest.approx(single[0], abs=1e-9)


def test_labels_map_back_to_category_ids(coco_gt):
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    evaluator.update(
        {
            1: {
                "scores": torch.tensor([0.5, 0.4, 0.3]),
                "labels": torch.tensor([0, 2, 7]),  # 7 is not a known label
                "boxes": torch.tensor([[10.0, 10, 40, 30], [1, 2, 4, 6], [0, 0, 5, 5]]),
            }
        }
    )
    detections = evaluator.detections()
    assert [d["category_id"] for d in detections] == [2, 9]
    assert detections[0]["bbox"] == pytest.approx([10, 10, 30, 20])  # xyxy -> xywh
    assert detections[0]["image_id"] == 1

    raw = CocoEvaluator(coco_gt, None)  # labels already are category ids
    raw.update(
        {
            1: {
                "scores": torch.tensor([0.5]),
                "labels": torch.tensor([5]),
                "boxes": torch.tensor([[50.0, 30, 90, 70]]),
            }
        }
    )
    assert raw.detections()[0]["category_id"] == 5


def test_only_updated_images_are_evaluated(coco_gt):
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    evaluator.update({1: perfect_results()[1]})  # images 2 and 3 were never seen
    stats, per_category = evaluator.summarize()
    assert evaluator.image_ids == [1]
    assert stats[0] == pytest.approx(1.0)


def test_repeated_image_replaces_earlier_entry(coco_gt):
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    results = perfect_results()
    evaluator.update(results)
    evaluator.update({1: results[1]})
    assert len(evaluator.detections()) == 5
    assert evaluator.summarize().stats[0] == pytest.approx(1.0)


def test_empty_detections_give_zero_without_crashing(coco_gt):
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    empty = {
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
        "boxes": torch.zeros(0, 4),
    }
    evaluator.update({image["id"]: empty for image in IMAGES})
    stats, per_category = evaluator.summarize()
    assert evaluator.detections() == []
    assert stats[0] == 0.0 and stats[8] == 0.0
    assert per_category[2] == 0.0 and per_category[5] == 0.0

    nothing = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY).summarize()  # no update at all
    assert nothing.stats == [-1.0] * 12


def test_quiet_flag_controls_pycocotools_output(coco_gt, capsys):
    for quiet, printed in ((True, False), (False, True)):
        evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY, quiet=quiet)
        evaluator.update(perfect_results())
        evaluator.summarize()
        assert ("Average Precision" in capsys.readouterr().out) == printed


def test_evaluation_does_not_change_ground_truth(coco_gt, gt_file):
    evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    evaluator.update(perfect_results())
    evaluator.summarize()
    assert coco_gt.dataset == load_coco(gt_file).dataset


def test_formatting():
    text = format_stats([0.5] * 12)
    assert len(text.splitlines()) == 12 and "maxDets=100 ] = 0.500" in text
    metrics = {"AP": {5: 0.25, 2: 1.0, 9: math.nan}, "AP50": {5: 0.5, 2: 1.0, 9: math.nan},
               "AR100": {5: 0.125, 2: 0.75, 9: math.nan}}
    table = format_metrics_table(metrics, {2: "apple", 5: "pear", 9: "plum"})
    lines = table.splitlines()
    assert lines[0].split()[-6:] == ["AP", "(%)", "AP50", "(%)", "AR100", "(%)"]
    assert lines[1].split() == ["2", "apple", "100.0", "100.0", "75.0"]
    assert lines[2].split() == ["5", "pear", "25.0", "50.0", "12.5"]
    assert lines[3].split() == ["9", "plum", "n/a", "n/a", "n/a"]


def _distributed_worker(rank, world_size, init_file, gt_file, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        # Image 2 is on both ranks, as the DistributedSampler's padding would put it.
        mine = {0: (1, 2), 1: (2, 3, 4)}[rank]
        results = as_model_results(noisy_detections())
        evaluator = CocoEvaluator(load_coco(gt_file), LABEL_TO_CATEGORY)
        evaluator.update({image_id: results[image_id] for image_id in mine})
        evaluator.synchronize_between_processes()
        summary = evaluator.summarize()
        (out_dir / f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "image_ids": evaluator.image_ids,
                    "stats": summary.stats,
                    "num_detections": len(evaluator.detections()),
                }
            )
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_synchronize_gathers_and_deduplicates(coco_gt, gt_file, tmp_path):
    mp.start_processes(
        _distributed_worker,
        args=(2, tmp_path / "init", gt_file, tmp_path),
        nprocs=2,
        start_method="fork",
    )
    single = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY)
    single.update(as_model_results(noisy_detections()))
    expected = single.summarize().stats
    for rank in range(2):
        out = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert out["image_ids"] == [1, 2, 3, 4]
        assert out["num_detections"] == len(single.detections())
        np.testing.assert_allclose(out["stats"], expected, atol=1e-12)


def test_faster_coco_eval_gives_the_numbers_of_pycocotools(coco_gt):
    """Both backends on the same detections: the 12 numbers, per-category AP and the
    precision array agree (the C++ port sums in another order: at most a few ulps)."""
    results = as_model_results(noisy_detections(seed=3))
    summaries, precisions = {}, {}
    for backend in ("faster_coco_eval", "pycocotools"):
        evaluator = CocoEvaluator(coco_gt, LABEL_TO_CATEGORY, backend=backend)
        evaluator.update(results)
        summaries[backend] = evaluator.summarize()
        assert type(evaluator.coco_eval).__module__.startswith(backend)
        precisions[backend] = evaluator.coco_eval.eval["precision"]
    faster, reference = summaries["faster_coco_eval"], summaries["pycocotools"]
    assert 0.1 < reference.stats[0] < 0.99
    np.testing.assert_allclose(faster.stats, reference.stats, rtol=1e-12, atol=0)
    assert [f"{v:.6f}" for v in faster.stats] == [f"{v:.6f}" for v in reference.stats]
    assert faster.per_category_ap.keys() == reference.per_category_ap.keys()
    for category_id, ap in reference.per_category_ap.items():
        assert faster.per_category_ap[category_id] == pytest.approx(ap, rel=1e-12, nan_ok=True)
    np.testing.assert_allclose(precisions["faster_coco_eval"], precisions["pycocotools"], atol=1e-12)


def test_backend_choice():
    assert resolve_backend("auto") == "faster_coco_eval"  # installed from requirements.txt
    assert resolve_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="--eval_backend nope"):
        resolve_backend("nope")
