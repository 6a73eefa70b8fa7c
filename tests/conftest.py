import importlib
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
    """The module ``detr_irpe.tools.<name>`` (``tools/<name>.py`` only calls its ``main``).
    Kept for the tests that still call it; new tests import the module."""
    return importlib.import_module(f"detr_irpe.tools.{name}")
