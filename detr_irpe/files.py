"""Writing result files: into a place checked before the work starts, so that a reader
never sees half of one, and never over a file the run reads."""

from __future__ import annotations

import json
import os
from pathlib import Path


def writable_folder(path, flag: str, room: int = 0) -> Path:
    """Create the folder ``path`` (with its parents) and write and delete a probe file of
    ``room`` bytes in it.  Raises ``OSError`` naming ``flag`` when ``path`` is a file or
    the folder cannot be written."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{flag} {folder} is a file, not a folder; give a folder")
    probe = folder / ".write_test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"\0" * room)
        probe.unlink()
    except OSError as err:
        raise OSError(f"{flag} {folder} is not writable ({err.strerror}); choose another "
                      f"folder or free some space") from None
    return folder


def writable_file(path, flag: str) -> Path:
    """Check that the file ``path`` can be written: not a folder, in a folder that can be
    written (created when missing).  Raises ``OSError`` naming ``flag``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give a file name")
    writable_folder(path.parent, f"{flag} {path}: its folder")
    return path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename, so a reader
    (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON with :func:`write_text` (``indent=None``: compact, for large
    detection lists)."""
    write_text(path, json.dumps(obj, indent=indent))


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
