import importlib.util
import os
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
FIXTURES = os.path.join(HERE, "fixtures")
sys.path.insert(0, HERE)  # for tests/reference.py

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def golden():
    return torch.load(os.path.join(FIXTURES, "irpe_attention_golden.pt"), weights_only=True)


@pytest.fixture(scope="session")
def bucket_fixture():
    return torch.load(os.path.join(FIXTURES, "bucket_ids.pt"), weights_only=True)


def load_tool(name: str):
    """Import ``tools/<name>.py`` (the tools are scripts, not a package)."""
    path = os.path.join(os.path.dirname(HERE), "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
