import os
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)  # tests/helpers.py, reference.py, evaluation_cases.py

from evaluation_cases import load_coco, write_gt_file  # noqa: E402
from helpers import FIXTURES  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def golden():
    return torch.load(os.path.join(FIXTURES, "irpe_attention_golden.pt"), weights_only=True)


@pytest.fixture(scope="session")
def bucket_fixture():
    return torch.load(os.path.join(FIXTURES, "bucket_ids.pt"), weights_only=True)


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory):
    """The ground truth of ``evaluation_cases`` as a COCO annotation file."""
    path = tmp_path_factory.mktemp("gt") / "gt.json"
    write_gt_file(path)
    return path


@pytest.fixture
def coco_gt(gt_file):
    return load_coco(gt_file)
