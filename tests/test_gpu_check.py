"""benchmarks/gpu_check.py's scaling, compile and reruns sections, end to end on the CPU with a
tiny model (--device cpu --tiny): the JSON they write, and GPU targets marked unmeasured."""

import json

import pytest

from benchmarks import gpu_check


@pytest.mark.inductor  # its compile section captures graphs (10-15 s): with the long checks
def test_cpu_sections_write_figures_and_mark_gpu_targets_not_measured(tmp_path, capsys):
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--reps", "1", "--out", str(tmp_path),
                         "--only", "scaling,compile,reruns"])
    text = capsys.readouterr().out
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rc == 0, text
    assert "no GPU: GPU figures are NOT MEASURED" in text
    batches = report["scaling"]["batches"]
    assert set(batches) == {"2", "8", "16"}
    for row in batches.values():
        assert row["images_per_s"] > 0
        assert 0 <= row["busy_fraction"] <= 1
    targets = [c for c in report["checks"] if "batch 16" in c["check"] and "GPU" in c["check"]
               or "2.5 x" in c["check"]]
    assert len(targets) == 2 and all(c["passed"] is None for c in targets)
    assert all("not measured: no GPU" in c["detail"] for c in targets)
    assert all(v["images_per_s"] > 0 for v in report["compile"]["variants"].values())
    reruns = report["reruns"]
    assert set(reruns) == {"dense_aux", "stride16", "ema", "export", "faster_coco_eval"}
    assert all(r["passed"] for r in reruns.values()), reruns


def test_gpu_only_sections_are_refused_on_the_cpu(tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--only", "train"]) == 2
    assert "runs only" in capsys.readouterr().err
