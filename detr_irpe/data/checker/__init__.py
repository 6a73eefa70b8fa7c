"""The dataset checker (``tools/check_dataset.py`` and every dataset load): the steps
(``checks``), the annotation and file checks, the messages and the report."""

from detr_irpe.data.checker.checks import check_dataset
from detr_irpe.data.checker.report import DatasetError, DatasetReport

__all__ = ["DatasetError", "DatasetReport", "check_dataset"]
