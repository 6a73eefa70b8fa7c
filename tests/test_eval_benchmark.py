"""The evaluation benchmark: a generated set both backends score alike, and its entry in
benchmarks/speed.py."""

import pytest

from benchmarks import coco_eval
from benchmarks import speed as benchmark


def test_generated_set_shape_and_both_backends_agree():
    gt, results = coco_eval.generated_set(12, 30)
    assert len(gt.dataset["images"]) == 12 == len(results)
    assert all(len(r["scores"]) == 30 for r in results.values())
    report = coco_eval.time_backends(12, 30)
    faster, reference = report["backends"]["faster_coco_eval"], report["backends"]["pycocotools"]
    assert 0.05 < reference["AP"] < 0.95  # jittered hits among random boxes: a real case
    assert faster["AP"] == pytest.approx(reference["AP"], rel=1e-12)
    assert faster["seconds"] > 0 and reference["seconds"] > 0


def test_benchmark_flag_runs_the_evaluation_section(capsys):
    assert benchmark.main(["--eval_images", "3", "--eval_dets", "5"]) == 0
    out = capsys.readouterr().out
    assert "COCO evaluation, 3 images x 5 detections" in out
    assert "faster_coco_eval" in out and "pycocotools" in out
