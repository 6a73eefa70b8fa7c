"""The tools are modules of the package (``detr_irpe.tools.<name>``, each with ``main``);
``tools/<name>.py`` only runs that ``main``, from any folder, without editing sys.path."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
NAMES = sorted(p.stem for p in TOOLS.glob("*.py"))


def test_every_tool_has_its_module():
    assert "predict" in NAMES and "benchmark" in NAMES
    for name in NAMES:
        assert callable(importlib.import_module(f"detr_irpe.tools.{name}").main)


@pytest.mark.parametrize("name", NAMES)
def test_script_only_calls_the_module(name):
    text = (TOOLS / f"{name}.py").read_text()
    assert f"from detr_irpe.tools.{name} import main" in text
    assert "sys.path" not in text


def test_script_runs_from_another_folder(tmp_path):
    res = subprocess.run([sys.executable, str(TOOLS / "plot_logs.py"), "--help"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "Plot training curves" in res.stdout
