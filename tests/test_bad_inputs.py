"""Bad files and bad output places given to main.py and the tools: each is one line on
stderr naming the flag or file, exit code 1, never a traceback."""

import os
import sys

import pytest
import torch
from helpers import data_flags, shapes_dataset, tiny_config

import detr_irpe
import main as main_module
from detr_irpe.tools import export, make_shapes_dataset, plot_logs, predict, visualize_rpe


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
