"""Bad files and bad output places given to main.py and the tools: each is one line on
stderr naming the flag or file, exit code 1, never a traceback."""

import json
import os
import sys

import pytest
import torch
from helpers import data_flags, shapes_dataset, tiny_config
from PIL import Image

import detr_irpe
import main as main_module
from detr_irpe.inference.image_input import ImageReadError
from tools import export, make_shapes_dataset, plot_logs, predict, visualize_rpe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = detr_irpe.DETRConfig.from_options(tiny_config(num_classes=3, num_queries=4))
    model, _, _ = detr_irpe.build_detr(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = shapes_dataset(tmp_path_factory.mktemp("data"), num_train=2, num_val=2,
                          image_size=48, seed=1)
    return root


@pytest.fixture
def unwritable(tmp_path):
    """A folder that refuses new files, also to root (sysfs refuses them to everyone)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = "/sys/detr_irpe_test"
    try:
        os.mkdir(folder)
    except OSError:
        yield folder
        return
    os.rmdir(folder)
    pytest.skip("no folder here refuses writes to root")


def _one_line(capsys, *needles) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


def _tools(checkpoint, images, out):
    """Each tool that writes ``out``, as its command line."""
    return {
        "predict": (predict, ["--checkpoint", str(checkpoint), "--images",
                              str(images / "val"), "--out", str(out), "--size", "48"]),
        "export": (export, ["--checkpoint", str(checkpoint), "--format", "onnx", "--size",
                            "64", "64", "--out", str(out)]),
        "visualize_rpe": (visualize_rpe, ["--checkpoint", str(checkpoint), "--out", str(out)]),
        "plot_logs": (plot_logs, [str(images), "--out", str(out)]),
        "make_shapes_dataset": (make_shapes_dataset, ["--out", str(out), "--num_train", "1",
                                                      "--num_val", "1"]),
    }


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>"])
@pytest.mark.parametrize("tool", ["predict", "export", "visualize_rpe"])
def test_a_damaged_checkpoint_is_one_line_in_every_tool(tool, content, checkpoint, images,
                                                        tmp_path, capsys):
    bad = tmp_path / "model.pth"
    bad.write_bytes(content)
    module, argv = _tools(bad, images, tmp_path / "out.png")[tool]
    assert module.main(argv) == 1
    line = _one_line(capsys, bad, "not a PyTorch checkpoint")
    assert "trust" not in line


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>"])
def test_a_damaged_checkpoint_is_one_line_in_main(content, images, tmp_path, capsys,
                                                  monkeypatch):
    bad = tmp_path / "model.pth"
    bad.write_bytes(content)
    monkeypatch.setattr(sys, "argv", ["main.py", "--eval", "--resume", str(bad),
                                      *data_flags(images), "--device", "cpu"])
    assert main_module.cli() == 1
    _one_line(capsys, bad, "not a PyTorch checkpoint")


@pytest.mark.parametrize("tool", ["predict", "export", "visualize_rpe", "plot_logs",
                                  "make_shapes_dataset"])
def test_out_that_is_a_file_is_one_line(tool, checkpoint, images, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    # A folder tool is given the file itself; a file tool a name inside it.
    out = blocker if tool in ("predict", "make_shapes_dataset") else blocker / "out.png"
    module, argv = _tools(checkpoint, images, out)[tool]
    assert module.main(argv) == 1
    _one_line(capsys, "--out", blocker)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("tool", ["export", "visualize_rpe", "plot_logs"])
def test_out_that_is_a_folder_where_a_file_goes_is_one_line(tool, checkpoint, images,
                                                            tmp_path, capsys):
    module, argv = _tools(checkpoint, images, tmp_path)[tool]
    assert module.main(argv) == 1
    _one_line(capsys, "--out", tmp_path, "is a folder")


@pytest.mark.parametrize("tool", ["predict", "export", "visualize_rpe", "plot_logs",
                                  "make_shapes_dataset"])
def test_out_that_cannot_be_written_is_one_line(tool, checkpoint, images, unwritable,
                                                capsys):
    out = f"{unwritable}/out" if tool in ("predict", "make_shapes_dataset") \
        else f"{unwritable}/out.png"
    module, argv = _tools(checkpoint, images, out)[tool]
    assert module.main(argv) == 1
    _one_line(capsys, "--out", unwritable, "not writable")


def test_resume_auto_without_output_dir_is_a_usage_error(images, capsys):
    with pytest.raises(SystemExit) as caught:
        main_module.main(["--eval", "--resume", "auto", *data_flags(images), "--device", "cpu"])
    assert caught.value.code == 2
    _one_line(capsys, "--resume auto needs --output_dir")


@pytest.mark.parametrize("flag, value", [("--batch_size", "0"), ("--batch_size", "-1"),
                                         ("--threshold", "1.5"), ("--threshold", "-0.1"),
                                         ("--threshold", "nan")])
def test_predict_refuses_values_that_would_predict_nothing(flag, value, checkpoint, images,
                                                           tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        predict.main(["--checkpoint", str(checkpoint), "--images", str(images / "val"),
                      "--out", str(tmp_path / "out"), flag, value])
    assert caught.value.code == 2
    assert f"{flag} {value}" in capsys.readouterr().err.replace("nan", value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def detector(checkpoint):
    return detr_irpe.Detector.from_checkpoint(checkpoint, size=48, max_size=64)


@pytest.mark.parametrize("image, match", [
    (torch.zeros(3, 0, 5, dtype=torch.uint8), "at least one pixel"),
    (torch.full((3, 8, 8), float("nan")), "finite"),
    (torch.full((3, 8, 8), float("inf")), "finite"),
])
def test_detector_refuses_empty_and_non_finite_tensors(detector, image, match):
    with pytest.raises(ValueError, match=match):
        detector.predict(image)


def test_detector_refuses_a_bad_threshold(detector):
    with pytest.raises(ValueError, match="--threshold nan"):
        detector.predict(torch.zeros(3, 8, 8), threshold=float("nan"))


def _odd_images(folder):
    """A good image, a 1 x 300 pixel strip (0 px tall at max_size 64) and a 120 x 120
    "decompression bomb" (over twice the pixel limit that the test sets), in ``folder``."""
    folder.mkdir()
    Image.new("RGB", (40, 30), (90, 20, 200)).save(folder / "a_good.png")
    Image.new("RGB", (300, 1)).save(folder / "b_strip.png")
    Image.new("1", (120, 120)).save(folder / "c_bomb.png")
    return folder


def test_predict_skips_strips_and_decompression_bombs(checkpoint, tmp_path, capsys,
                                                      monkeypatch):
    folder = _odd_images(tmp_path / "in")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 120 x 120 is a bomb, 40 x 30 not
    detector = detr_irpe.Detector.from_checkpoint(checkpoint, size=48, max_size=64)
    for name, match in (("b_strip.png", "too elongated"), ("c_bomb.png", "c_bomb.png")):
        with pytest.raises(ImageReadError, match=match):
            detector.predict(folder / name)
    code = predict.main(["--checkpoint", str(checkpoint), "--images", str(folder),
                         "--out", str(tmp_path / "out"), "--size", "48", "--max_size", "64",
                         "--batch_size", "3"])
    printed = capsys.readouterr().out
    assert code == 0 and "2 of 3 image(s) could not be read" in printed
    assert "b_strip.png" in printed and "c_bomb.png" in printed
    assert [i["file_name"] for i in json.loads((tmp_path / "out" / "images.json").read_text())] \
        == ["a_good.png"]
