"""Writing result files so that a reader never sees half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON through a temporary file and an atomic rename
    (``indent=None``: compact, for large detection lists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    os.replace(tmp, path)
