"""Reading a COCO annotation file: the parsed JSON, or the reason it cannot be used.

Loading (:class:`~detr_irpe.data.coco.CocoDetection`) and the checker
(:func:`~detr_irpe.data.checker.checks.check_dataset`) read the file the same way, so a file that
loading refuses is reported by the checker with the same message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from detr_irpe.data.checker.report import DatasetError, DatasetReport, Findings


def read_annotation_file(ann_file: str | os.PathLike) -> dict:
    """The parsed JSON of ``ann_file``.

    Raises ``FileNotFoundError`` if there is no such file and :class:`DatasetError` if it is
    not a JSON object.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    found = Findings()
    data = load_json(path, found)
    if data is None:
        report = DatasetReport(str(ann_file), "(not checked)", quick=True)
        found.sort_into(report)
        raise DatasetError(report)
    return data


def load_json(path: Path, found: Findings) -> dict | None:
    """The JSON object in ``path``; None, with the reason added to ``found``, if there is none."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        found.add("annotation_file_unreadable", str(err))
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        found.add("json_malformed", f"line {err.lineno} column {err.colno}: {err.msg}")
        return None
    except (ValueError, RecursionError) as err:  # not UTF-8, nested too deeply
        found.add("json_malformed", str(err)[:120])
        return None
    if not isinstance(data, dict):
        found.add("json_malformed", f"the top level is a JSON {type(data).__name__}, not an object")
        return None
    return data
