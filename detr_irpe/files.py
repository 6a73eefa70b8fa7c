"""Writing result files so that a reader never sees half of one, and never over a file
the run reads."""

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


def refuse_overwriting_inputs(outputs, inputs, flag: str) -> None:
    """Raise ``ValueError`` when one of the ``outputs`` paths is one of the ``inputs``
    (the same file, through a link or another spelling of its path), naming it and
    ``flag``, the option that chose where outputs go."""
    read = {_file_key(p) for p in inputs} - {None}
    for path in outputs:
        if _file_key(path) in read:
            raise ValueError(
                f"{flag}: writing {path} would overwrite a file this run reads; choose "
                f"another {flag} folder"
            )


def _file_key(path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, ``None`` for a path that names none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
