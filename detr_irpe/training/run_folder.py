"""One run per output folder: a lock held for the life of the run, and a fresh run that
does not mix its checkpoints and log with those of a run already in the folder."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from detr_irpe.checkpoint import TEMP_PREFIX

LOCK_FILE = ".run.lock"  # holds the pid of the run that has the folder
RUN_FILES = ("checkpoint.pth", "checkpoint_best.pth", "log.txt")  # what --overwrite removes


@contextlib.contextmanager
def claim_run_folder(folder: Path, fresh: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``folder``'s lock for the block; a ``fresh`` run (one that does not resume)
    first checks the folder with :func:`start_fresh`."""
    with lock_run_folder(folder):
        remove_leftovers(folder)
        if fresh:
            start_fresh(folder, overwrite)
        yield


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of checkpoints whose writing a crash cut short (the lock
    is held, so no other run is writing them)."""
    for leftover in folder.glob(f"{TEMP_PREFIX}*.pth"):
        leftover.unlink(missing_ok=True)


def lock_run_folder(folder: Path) -> IO:
    """Take ``folder``'s lock (``fcntl.flock`` on :data:`LOCK_FILE`; the system releases it
    when the process ends, however it ends) and write our pid into it.  Keep the returned
    file open for as long as the run writes.  Raises ``RuntimeError`` naming the pid of
    the run that holds the lock."""
    handle = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise RuntimeError(
            f"--output_dir {folder} is in use by another run (pid {pid}); wait for it to end "
            f"or stop it, or choose another --output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def start_fresh(folder: Path, overwrite: bool) -> None:
    """Before a run that does not resume: refuse a folder that holds a run's checkpoint or
    log (a new log would be appended to the old one), or with ``overwrite`` delete them."""
    old = [name for name in RUN_FILES if (folder / name).exists()]
    if old and not overwrite:
        raise ValueError(
            f"--output_dir {folder} already holds a run ({', '.join(old)}); continue it with "
            f"--resume auto, replace it with --overwrite, or choose another --output_dir")
    for name in old:
        (folder / name).unlink()
