"""The tools are scripts beside the package (``tools/<name>.py``, each with ``main``), run as
``python tools/<name>.py`` from any folder without editing sys.path; the benchmarks run as
``python -m benchmarks.<name>`` from the repository root."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
NAMES = sorted(p.stem for p in TOOLS.glob("*.py") if p.stem != "__init__")


def test_every_tool_has_its_main():
    assert "predict" in NAMES and "export" in NAMES
    for name in NAMES:
        assert callable(importlib.import_module(f"tools.{name}").main)


@pytest.mark.parametrize("name", NAMES)
def test_script_runs_its_main_without_editing_sys_path(name):
    text = (TOOLS / f"{name}.py").read_text()
    assert 'if __name__ == "__main__":\n    sys.exit(main())' in text
    assert "sys.path" not in text


def test_script_runs_from_another_folder(tmp_path):
    res = subprocess.run([sys.executable, str(TOOLS / "plot_logs.py"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "Plot training curves" in res.stdout


def test_plot_logs_exit_codes(tmp_path, capsys):
    """1 for a problem with the logs (one line on stderr), 2 for a bad command line."""
    from tools import plot_logs

    missing = tmp_path / "missing"
    assert plot_logs.main([str(missing)]) == 1
    err = capsys.readouterr().err
    assert "no training log" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "log.txt").write_text('{"epoch": 0}\n{oops\n')
    assert plot_logs.main([str(bad), "--out", str(tmp_path / "c.png")]) == 1
    assert "log.txt:2" in capsys.readouterr().err
    assert plot_logs.main([str(bad), str(missing), "--labels", "one"]) == 1
    assert "1 labels for 2 runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        plot_logs.main(["--out", "c.png"])  # no run
    assert exc.value.code == 2


def test_visualize_rpe_exit_codes(tmp_path, capsys):
    from tools import visualize_rpe

    missing = tmp_path / "missing.pth"
    assert visualize_rpe.main(["--checkpoint", str(missing), "--out", str(tmp_path / "r.png")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        visualize_rpe.main(["--out", "r.png"])  # no --checkpoint
    assert exc.value.code == 2


def test_compare_official_names_a_folder_that_is_not_the_official_code(tmp_path):
    from benchmarks import compare_official

    with pytest.raises(SystemExit) as exc:
        compare_official.main(["--official", str(tmp_path), "--serve", "official",
                               "--outputs", str(tmp_path / "o.pt")])
    assert str(tmp_path) in str(exc.value) and "DETR-with-iRPE" in str(exc.value)


def test_peer_labels_are_the_coco_boxes_normalised(tmp_path):
    """tools/peer_yolov8n.py hands YOLOv8n the COCO boxes as `class cx cy w h` over the
    image size, with contiguous class indices; crowd boxes are left out."""
    from tools.peer_yolov8n import yolo_split

    images = tmp_path / "img"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    (images / "b.png").write_bytes(b"")
    coco = {"images": [{"id": 3, "file_name": "a.png", "width": 200, "height": 100},
                       {"id": 4, "file_name": "b.png", "width": 50, "height": 50}],
            "annotations": [{"id": 1, "image_id": 3, "category_id": 7, "bbox": [20, 10, 40, 30]},
                            {"id": 2, "image_id": 3, "category_id": 9, "bbox": [0, 0, 200, 100],
                             "iscrowd": 1}],
            "categories": [{"id": 7, "name": "tree"}, {"id": 9, "name": "bush"}]}
    folder = yolo_split(coco, images, tmp_path / "yolo", {7: 0, 9: 1})
    assert (folder / "a.png").resolve() == (images / "a.png").resolve()
    values = (tmp_path / "yolo" / "labels" / "a.txt").read_text().split()
    assert values[0] == "0"
    assert [float(v) for v in values[1:]] == pytest.approx([0.2, 0.25, 0.2, 0.3])
    assert (tmp_path / "yolo" / "labels" / "b.txt").read_text() == ""  # no boxes: no lines
