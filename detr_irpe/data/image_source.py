"""Where images come from: a folder on disk or a ``.zip`` archive.

The official iRPE code reads COCO straight out of ``train2017.zip``; :class:`ZipImageSource`
does the same. Images are always returned as RGB ``PIL.Image`` objects (grayscale, RGBA and
palette files are converted), so the rest of the pipeline sees one format.

A ``zipfile.ZipFile`` handle holds a file position, so one handle must never be shared by
several processes. :class:`ZipImageSource` opens its handle lazily, re-opens it when it finds
itself in a new process (forked DataLoader workers inherit the parent's objects without
pickling), and leaves it out of its pickled state (spawned workers).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from PIL import Image


class FolderImageSource:
    """Images stored as files under ``root``; ``file_name`` is relative to it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")

    def open(self, file_name: str) -> Image.Image:
        path = self.root / file_name
        if not path.is_file():
            raise FileNotFoundError(f"image {file_name!r} not found in folder {self.root}")
        with Image.open(path) as image:
            return image.convert("RGB")

    def __repr__(self) -> str:
        return f"FolderImageSource({str(self.root)!r})"


class ZipImageSource:
    """Images stored inside a zip archive.

    Files may sit at the archive root (``000000000139.jpg``) or under one top folder
    (``val2017/000000000139.jpg``, as in the official COCO zips); the top folder is detected
    once here and prepended on lookup.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"image zip not found: {self.path}")
        with zipfile.ZipFile(self.path) as archive:
            self.prefix = _single_top_folder(archive.namelist())
        self._archive: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def _handle(self) -> zipfile.ZipFile:
        # A handle opened in another process (inherited through fork) is never reused.
        if self._archive is None or self._pid != os.getpid():
            self._archive = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._archive

    def open(self, file_name: str) -> Image.Image:
        archive = self._handle()
        for member in (self.prefix + file_name, file_name):
            try:
                data = archive.read(member)
            except KeyError:
                continue
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        raise FileNotFoundError(f"image {file_name!r} not found in zip {self.path}")

    def close(self) -> None:
        if self._archive is not None and self._pid == os.getpid():
            self._archive.close()
        self._archive = None
        self._pid = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_archive"] = None
        state["_pid"] = None
        return state

    def __repr__(self) -> str:
        return f"ZipImageSource({str(self.path)!r}, prefix={self.prefix!r})"


def _single_top_folder(names: list[str]) -> str:
    """``"folder/"`` when every file of the archive lies under that one folder, else ``""``."""
    files = [name for name in names if not name.endswith("/")]
    tops = {name.split("/", 1)[0] for name in files if "/" in name}
    if len(tops) == 1 and all("/" in name for name in files):
        return tops.pop() + "/"
    return ""


def make_image_source(images: str | os.PathLike) -> FolderImageSource | ZipImageSource:
    """A :class:`ZipImageSource` for a path ending in ``.zip``, else a folder source."""
    if str(images).lower().endswith(".zip"):
        return ZipImageSource(images)
    return FolderImageSource(images)
