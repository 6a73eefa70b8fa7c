"""Where images come from: a folder on disk or a ``.zip`` archive.

The official iRPE code reads COCO straight out of ``train2017.zip``; :class:`ZipImageSource`
does the same. Images are always returned as 8-bit RGB ``PIL.Image`` objects (see
:func:`to_rgb`: grayscale, palette, RGBA, CMYK and 16-bit files are converted), so the rest of
the pipeline sees one format. EXIF orientation tags are *not* applied: pixels are used as
stored, as pycocotools and the official DETR code do, because COCO boxes refer to the stored
orientation.

A ``file_name`` from the annotation JSON is never trusted as a path: :func:`safe_file_name`
refuses absolute names and names whose ``..`` parts leave the image folder (or zip), e.g.
``../../etc/passwd``. The check is lexical: a symbolic link *inside* the folder is followed
(datasets are often assembled from links into a shared copy).

A ``zipfile.ZipFile`` handle holds a file position, so one handle must never be shared by
several processes. :class:`ZipImageSource` opens its handle lazily, re-opens it when it finds
itself in a new process (forked DataLoader workers inherit the parent's objects without
pickling), and leaves it out of its pickled state (spawned workers).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

# Pillow modes holding 16-bit samples ("I" is 32-bit, but 16-bit PNG/TIFF files are read
# as "I" by some Pillow versions; its values are read on the same 0..65535 scale).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_DRIVE = re.compile(r"[A-Za-z]:")  # a Windows drive ("C:..."); UNC paths start with a slash


class UnsafeFileNameError(ValueError):
    """An image ``file_name`` that is absolute or leaves the image folder."""


def safe_file_name(file_name: str, image_dir: str | os.PathLike) -> str:
    """``file_name`` as a normalised relative path inside ``image_dir``.

    Raises :class:`UnsafeFileNameError` (naming the file and ``image_dir``) for an empty name,
    an absolute path (``/x``, ``\\x``, ``C:x``) or one whose ``..`` parts lead out of the
    folder (``../../etc/passwd``); backslashes count as separators for this check.
    """
    problem = None
    if not isinstance(file_name, str) or not file_name or "\x00" in file_name:
        problem = "is not a file name"
    else:
        slashed = file_name.replace("\\", "/")
        normal = posixpath.normpath(slashed)
        if slashed.startswith("/") or _DRIVE.match(file_name):
            problem = "is an absolute path"
        elif normal == ".." or normal.startswith("../"):
            problem = "leaves the image directory through '..'"
        elif normal == ".":
            problem = "is not a file name"
    if problem:
        raise UnsafeFileNameError(
            f"image file name {file_name!r} {problem}; file names must be relative paths inside "
            f"the image directory {image_dir}, so this file is not opened"
        )
    return posixpath.normpath(file_name)


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (which is loaded, if it was not yet).

    16-bit modes (:data:`SIXTEEN_BIT_MODES`) are scaled from 0..65535 to 0..255 (Pillow's own
    conversion would clip them, turning most pixels white); every other mode (grayscale,
    palette, RGBA, CMYK, ...) goes through ``Image.convert("RGB")``, which drops any alpha.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64).clip(0, 65535)
        gray = (values * 255 + 32767) // 65535  # v / 257, rounded: 65535 -> 255
        return Image.fromarray(gray.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


class _ImageSource:
    """Shared :meth:`open` of the two sources; subclasses provide :meth:`open_raw`."""

    where: str

    def contains(self, file_name: str) -> bool:
        raise NotImplementedError

    def contains_many(self, file_names: list[str]) -> list[bool]:
        """:meth:`contains` for each name (names must pass :func:`safe_file_name`)."""
        return [self.contains(name) for name in file_names]

    def open_raw(
        self, file_name: str, header_only: bool = False
    ) -> contextlib.AbstractContextManager[Image.Image]:
        """The file as Pillow opens it (header read, pixels not loaded, mode unchanged), as a
        context manager. ``header_only``: the caller reads no pixels (a zip member is then
        streamed rather than read whole)."""
        raise NotImplementedError

    def open(self, file_name: str) -> Image.Image:
        """The image as 8-bit RGB (see :func:`to_rgb`).

        Raises ``UnsafeFileNameError`` for a name leaving the image directory,
        ``FileNotFoundError`` for a missing file and ``OSError`` naming the file for one that
        cannot be decoded (not an image, truncated, corrupt).
        """
        try:
            with self.open_raw(file_name) as image:
                return to_rgb(image)
        except (FileNotFoundError, UnsafeFileNameError):
            raise
        except (OSError, SyntaxError, ValueError) as err:
            raise OSError(
                f"cannot decode image {file_name!r} from {self.where}: {err}. Find all such "
                "files with `python tools/check_dataset.py --json ANN --images DIR`; leave "
                "them out with skip_unreadable=True"
            ) from err


class FolderImageSource(_ImageSource):
    """Images stored as files under ``root``; ``file_name`` is relative to it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        self.where = f"folder {self.root}"

    def _path(self, file_name: str) -> Path:
        return self.root / safe_file_name(file_name, self.root)

    def contains(self, file_name: str) -> bool:
        """Whether ``file_name`` (checked with :func:`safe_file_name`) is a file here."""
        return self._path(file_name).is_file()

    def contains_many(self, file_names: list[str]) -> list[bool]:
        # One listing per directory instead of one stat per file (118k files for COCO train).
        names = [safe_file_name(name, self.root) for name in file_names]
        listings: dict[str, set[str]] = {}
        for name in names:
            folder = posixpath.dirname(name)
            if folder not in listings:
                try:
                    with os.scandir(self.root / folder) as entries:
                        listings[folder] = {entry.name for entry in entries if entry.is_file()}
                except OSError:  # missing or not a folder
                    listings[folder] = set()
        return [posixpath.basename(name) in listings[posixpath.dirname(name)] for name in names]

    @contextlib.contextmanager
    def open_raw(self, file_name: str, header_only: bool = False) -> Iterator[Image.Image]:
        path = self._path(file_name)
        if not path.is_file():
            raise FileNotFoundError(f"image {file_name!r} not found in folder {self.root}")
        with Image.open(path) as image:
            yield image

    def __repr__(self) -> str:
        return f"FolderImageSource({str(self.root)!r})"


class ZipImageSource(_ImageSource):
    """Images stored inside a zip archive.

    Files may sit at the archive root (``000000000139.jpg``) or under one top folder
    (``val2017/000000000139.jpg``, as in the official COCO zips); the top folder is detected
    once here and prepended on lookup.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"image zip not found: {self.path}")
        try:
            with zipfile.ZipFile(self.path) as archive:
                self.prefix = _single_top_folder(archive.namelist())
        except zipfile.BadZipFile as err:
            raise zipfile.BadZipFile(
                f"image zip {self.path} cannot be read ({err}); it may be damaged or cut short: "
                "test it with `unzip -t` and download or copy it again"
            ) from err
        self.where = f"zip {self.path}"
        self._archive: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def _handle(self) -> zipfile.ZipFile:
        # A handle opened in another process (inherited through fork) is never reused.
        if self._archive is None or self._pid != os.getpid():
            self._archive = zipfile.ZipFile(self.path)
            self._pid = os.getpid()
        return self._archive

    def _member(self, file_name: str) -> str | None:
        """The archive member holding ``file_name``, or None."""
        name = safe_file_name(file_name, self.path)
        archive = self._handle()
        for member in (self.prefix + name, name):
            try:
                archive.getinfo(member)
            except KeyError:
                continue
            return member
        return None

    def contains(self, file_name: str) -> bool:
        """Whether ``file_name`` (checked with :func:`safe_file_name`) is in the archive."""
        return self._member(file_name) is not None

    @contextlib.contextmanager
    def open_raw(self, file_name: str, header_only: bool = False) -> Iterator[Image.Image]:
        member = self._member(file_name)
        if member is None:
            raise FileNotFoundError(f"image {file_name!r} not found in zip {self.path}")
        # Decoding from memory is faster than from a (compressed) member stream, but reading
        # a whole member only for its header costs ten times more than streaming it.
        if header_only:
            stream = self._handle().open(member)
        else:
            stream = io.BytesIO(self._handle().read(member))
        with stream, Image.open(stream) as image:
            yield image

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
