"""The command line of main.py: help text, defaults, speed and exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detr_irpe.options import EXIT_ERROR, EXIT_USAGE, build_parser

pytestmark = pytest.mark.slow  # every test here runs main.py or Python in a subprocess

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _documented(parser):
    return [a for a in parser._actions if a.help != "==SUPPRESS==" and a.dest != "help"]


def test_every_flag_has_a_help_line_with_one_true_default():
    parser = build_parser()
    formatter = parser._get_formatter()
    for action in _documented(parser):
        text = formatter._get_help_string(action) % {"default": action.default}
        flag = action.option_strings[0]
        assert action.help and action.help.strip(), f"{flag} has no help"
        if action.nargs == 0:  # a switch: off unless given
            assert "default" not in text, f"{flag}: {text}"
            continue
        assert text.count("default") == 1, f"{flag}: {text}"
        if action.default is not None:  # the shown default is the parser's own value
            assert str(action.default) in text.split("default")[1], f"{flag}: {text}"
    shown = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], env=ENV,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    for action in _documented(parser):
        assert action.option_strings[0] in shown.stdout
    assert "exit codes" in shown.stdout and "75" in shown.stdout


PROBE = """
import contextlib, io, sys
import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main.main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(code, any(name == "torch" or name.startswith("torch.") for name in sys.modules))
"""


def test_help_and_usage_errors_answer_before_torch_is_imported():
    for argv, code in ((["--help"], 0), (["--epochs", "0"], EXIT_USAGE),
                       (["--backbone", "resnet99"], EXIT_USAGE), ([], EXIT_USAGE)):
        res = subprocess.run([sys.executable, "-c", PROBE, *argv], env=ENV, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert res.stdout.split() == [str(code), "False"], (argv, res.stdout, res.stderr)


def test_exit_codes_usage_2_error_1(tmp_path):
    (tmp_path / "val.json").write_text("{}")
    base = [sys.executable, str(ROOT / "main.py"), "--val_json", str(tmp_path / "val.json"),
            "--val_images", str(tmp_path), "--device", "cpu"]
    usage = subprocess.run(base + ["--eval"], env=ENV, capture_output=True, text=True, timeout=60)
    assert usage.returncode == EXIT_USAGE
    assert usage.stderr.startswith("main.py: error: --eval needs --resume")
    missing = tmp_path / "missing.pth"
    error = subprocess.run(base + ["--eval", "--resume", str(missing)], env=ENV,
                           capture_output=True, text=True, timeout=120)
    assert error.returncode == EXIT_ERROR
    assert error.stderr.count("\n") == 1 and str(missing) in error.stderr
    assert "Traceback" not in error.stderr
