"""Checking a COCO-format dataset before training: nothing lost, nothing crashes.

:func:`check_dataset` reads the annotation JSON and the image files and sorts every problem
into one of four groups of a :class:`DatasetReport`:

errors (``report.errors``; training must not start)
    The JSON cannot be read or is not JSON; a top-level ``images``, ``annotations`` or
    ``categories`` list is missing; an image lacks ``id``, ``file_name``, ``width`` or
    ``height`` (or has a non-integer id, a non-positive size), an annotation lacks ``id``,
    ``image_id``, ``category_id`` or ``bbox``, a category lacks an integer ``id`` or a
    ``name``; image, annotation or category ids are duplicated; an annotation refers to an
    image or a category that is not declared; a ``bbox`` is not 4 finite numbers (NaN, inf);
    a ``file_name`` is absolute or leaves the image directory (``../../etc/passwd``); an image
    file is missing, not an image, unreadable or truncated; an image's real size differs from
    its ``width``/``height`` in the JSON (its boxes would be wrong).

skipped (``report.skipped``, ``report.skipped_image_ids``; only with ``skip_unreadable``)
    Image files that are missing, not images, unreadable or truncated are left out of the
    dataset with their annotations instead of being errors.

repairs (``report.repairs``; done at load time, the same way every time)
    Boxes with zero or negative width or height are dropped, boxes partly outside the image
    are clipped to it, boxes entirely outside it are dropped (all by :func:`clip_boxes`, which
    :func:`~detr_irpe.data.coco.prepare_target` uses, so the counts are what loading does);
    images that are not 8-bit RGB (grayscale ``L``, palette ``P``, ``RGBA``, ``CMYK``,
    16-bit ``I;16``/``I``, ...) are converted to RGB by
    :func:`~detr_irpe.data.image_source.to_rgb`.

info (``report.info``)
    Crowd annotations; images without annotations (legal: pure background); photos with an
    EXIF orientation tag. Those photos are **not** rotated: pixels are used as stored, exactly
    like pycocotools and the official DETR code, because COCO annotations refer to the stored
    orientation.

``quick=True`` (run by :class:`~detr_irpe.data.coco.CocoDetection` at construction) checks the
JSON fully and that every image file exists, but only reads image *headers* (size, colour
mode, EXIF) and, for datasets larger than ``max_headers`` images, only of an evenly spaced
sample (reading 118k COCO headers takes from seconds to minutes depending on the disk).
Truncated files are found only by the full check (``quick=False``), which decodes every image:
``python tools/check_dataset.py --json ANN --images DIR_OR_ZIP``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert

from .image_source import (
    SIXTEEN_BIT_MODES,
    FolderImageSource,
    UnsafeFileNameError,
    ZipImageSource,
    make_image_source,
    safe_file_name,
)

MAX_EXAMPLES = 5
QUICK_MAX_HEADERS = 5000
TOP_KEYS = ("images", "annotations", "categories")
IMAGE_KEYS = ("id", "file_name", "width", "height")
ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
EXIF_ORIENTATION = 0x0112

ERROR, SKIPPED, REPAIR, INFO = "error", "skipped", "repair", "info"
_ON_JSON, _ON_IMAGES = "json", "images"

_FULL_CHECK = "python tools/check_dataset.py --json {ann_file} --images {images}"
_SKIP_HINT = "or pass --skip_unreadable (CocoDetection(..., skip_unreadable=True)) to leave them out"


@dataclass(frozen=True)
class _Kind:
    section: str
    on: str  # which file the problem is in: the annotation JSON or the image folder/zip
    singular: str
    plural: str
    advice: str


# Every problem the checker reports, in the order the summary lists them.
_KINDS: dict[str, _Kind] = {
    # ---- errors in the JSON
    "annotation_file_unreadable": _Kind(
        ERROR, _ON_JSON, "annotation file cannot be read", "annotation file cannot be read",
        "Check the path (--json) and the file's permissions",
    ),
    "json_malformed": _Kind(
        ERROR, _ON_JSON, "annotation file is not valid JSON", "annotation file is not valid JSON",
        "The file may have been cut short by an interrupted download or copy: compare its size "
        "with the original, or export it again",
    ),
    "missing_top_key": _Kind(
        ERROR, _ON_JSON, "required top-level key is missing or not a list",
        "required top-level keys are missing or not lists",
        'A COCO detection file needs "images", "annotations" and "categories" lists (an empty '
        "list is allowed); is this an instances_*.json file?",
    ),
    "no_images": _Kind(
        ERROR, _ON_JSON, "file lists no images", "file lists no images",
        "Check that --json is the annotation file of this split",
    ),
    "image_missing_key": _Kind(
        ERROR, _ON_JSON, "image entry lacks required keys", "image entries lack required keys",
        "Every image needs id, file_name, width and height; fix or remove these entries",
    ),
    "image_bad_value": _Kind(
        ERROR, _ON_JSON, "image entry has an invalid value", "image entries have invalid values",
        "Image ids must be integers, file_name a non-empty string, width and height positive "
        "integers",
    ),
    "duplicate_image_id": _Kind(
        ERROR, _ON_JSON, "image id is used more than once", "image ids are used more than once",
        "Give every image its own id (annotations refer to images by id, so a duplicate makes "
        "them ambiguous)",
    ),
    "unsafe_file_name": _Kind(
        ERROR, _ON_JSON, "image file name is absolute or leaves the image directory",
        "image file names are absolute or leave the image directory",
        "file_name must be a path relative to the image folder or zip (--images); these files "
        "are never opened. Fix the JSON (and distrust where it came from)",
    ),
    "category_invalid": _Kind(
        ERROR, _ON_JSON, "category entry lacks an integer id or a name",
        "category entries lack an integer id or a name",
        "Every category needs an integer id and a name",
    ),
    "duplicate_category_id": _Kind(
        ERROR, _ON_JSON, "category id is declared more than once",
        "category ids are declared more than once",
        "Declare each category once",
    ),
    "annotation_missing_key": _Kind(
        ERROR, _ON_JSON, "annotation lacks required keys", "annotations lack required keys",
        "Every annotation needs id, image_id, category_id and bbox; fix or remove these",
    ),
    "annotation_bad_value": _Kind(
        ERROR, _ON_JSON, "annotation has a non-integer id, image_id or category_id",
        "annotations have a non-integer id, image_id or category_id",
        "Ids must be integers",
    ),
    "duplicate_annotation_id": _Kind(
        ERROR, _ON_JSON, "annotation id is used more than once",
        "annotation ids are used more than once",
        "Give every annotation its own id (COCO evaluation keeps only one annotation per id)",
    ),
    "annotation_missing_image": _Kind(
        ERROR, _ON_JSON, "annotation refers to an image id not listed in \"images\"",
        "annotations refer to image ids not listed in \"images\"",
        "Add the missing images to the JSON or delete these annotations",
    ),
    "annotation_unknown_category": _Kind(
        ERROR, _ON_JSON, "annotation uses a category id not declared in \"categories\"",
        "annotations use category ids not declared in \"categories\"",
        "Declare the category or correct category_id",
    ),
    "bad_bbox": _Kind(
        ERROR, _ON_JSON, "annotation's bbox is not 4 finite numbers",
        "annotations' bboxes are not 4 finite numbers",
        "bbox must be [x, y, width, height] in pixels; NaN or inf usually come from a broken "
        "export: fix or delete these annotations",
    ),
    # ---- errors in the image files (skipped instead with skip_unreadable)
    "images_not_found": _Kind(
        ERROR, _ON_IMAGES, "image folder or zip does not exist",
        "image folder or zip does not exist",
        "Check the path given as --images",
    ),
    "images_unreadable": _Kind(
        ERROR, _ON_IMAGES, "image folder or zip cannot be read", "image folder or zip cannot be read",
        "Check its permissions; a damaged zip must be downloaded or copied again",
    ),
    "image_missing": _Kind(
        ERROR, _ON_IMAGES, "image file is missing", "image files are missing",
        f"Restore the files (an incomplete download or unzip?), {_SKIP_HINT}",
    ),
    "image_not_an_image": _Kind(
        ERROR, _ON_IMAGES, "file is not an image Pillow can read",
        "files are not images Pillow can read",
        f"Replace them with the real images (an HTML error page saved as .jpg?), {_SKIP_HINT}",
    ),
    "image_unreadable": _Kind(
        ERROR, _ON_IMAGES, "image file cannot be opened", "image files cannot be opened",
        f"Check the files' permissions and the disk, {_SKIP_HINT}",
    ),
    "image_truncated": _Kind(
        ERROR, _ON_IMAGES, "image file is truncated or corrupt (decoding failed)",
        "image files are truncated or corrupt (decoding failed)",
        f"Download or copy them again, {_SKIP_HINT}",
    ),
    "size_mismatch": _Kind(
        ERROR, _ON_IMAGES, "image's real size differs from width/height in the JSON",
        "images' real sizes differ from width/height in the JSON",
        "The boxes were drawn for another size, so they would be wrong: correct width, height "
        "and the boxes in the JSON, or put back the annotated version of the files",
    ),
    # ---- repairs, done at load time
    "box_clipped": _Kind(
        REPAIR, _ON_JSON, "box clipped to the image", "boxes clipped to the image",
        "Boxes partly outside the image; nothing to do (loading clips them)",
    ),
    "box_empty": _Kind(
        REPAIR, _ON_JSON, "empty box dropped", "empty boxes dropped",
        "Boxes with zero or negative width or height; nothing to do (loading drops them), fix "
        "the JSON to silence this",
    ),
    "box_outside": _Kind(
        REPAIR, _ON_JSON, "box entirely outside the image dropped",
        "boxes entirely outside the image dropped",
        "Nothing to do (loading drops them); check the annotation tool's export if there are "
        "many",
    ),
    # converted_<mode> kinds are made by _conversion_kind
    # ---- information
    "crowd": _Kind(
        INFO, _ON_JSON, "crowd annotation (iscrowd=1)", "crowd annotations (iscrowd=1)",
        "Nothing to do: they are dropped from training targets and kept, flagged, for "
        "evaluation, as in DETR",
    ),
    "no_annotations": _Kind(
        INFO, _ON_JSON, "image has no annotations", "images have no annotations",
        "Legal: they are used as pure background",
    ),
    "exif_rotated": _Kind(
        INFO, _ON_IMAGES, "photo has an EXIF orientation tag", "photos have an EXIF orientation tag",
        "They are NOT rotated: pixels are used as stored, like pycocotools and the official "
        "DETR code, because COCO boxes refer to the stored orientation. If your boxes were "
        "drawn on the rotated view, rotate the files (PIL.ImageOps.exif_transpose) and "
        "correct width/height",
    ),
}

# Names of Pillow's colour modes in messages ("1 grayscale image converted to RGB").
_MODE_NAMES = {
    "1": "1-bit black-and-white",
    "L": "grayscale",
    "LA": "grayscale+alpha",
    "La": "grayscale+alpha",
    "P": "palette",
    "PA": "palette+alpha",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGBX",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
    "I;16": "16-bit",
    "I;16L": "16-bit",
    "I;16B": "16-bit",
    "I;16N": "16-bit",
    "I": "32-bit integer",
    "F": "32-bit float",
}


def _conversion_kind(mode: str) -> tuple[str, _Kind]:
    name = _MODE_NAMES.get(mode, f"{mode}-mode")
    if mode in SIXTEEN_BIT_MODES:
        advice = "Nothing to do: values are scaled from 0..65535 to 0..255"
    elif "A" in mode or "a" in mode:
        advice = "Nothing to do: loading converts them (the alpha channel is dropped)"
    else:
        advice = "Nothing to do: loading converts them"
    target = "8-bit RGB" if mode in SIXTEEN_BIT_MODES else "RGB"
    code = "converted_" + name.replace(" ", "_")
    return code, _Kind(
        REPAIR, _ON_IMAGES, f"{name} image converted to {target}",
        f"{name} images converted to {target}", advice,
    )


@dataclass
class Issue:
    """One kind of problem: ``count`` occurrences, the first few described in ``examples``."""

    code: str
    section: str  # "error", "skipped", "repair" or "info"
    where: str  # the annotation file or the image folder/zip
    text: str  # the count and the problem, e.g. "3 boxes clipped to the image"
    count: int
    examples: list[str]
    advice: str

    def line(self) -> str:
        shown = ""
        if self.examples:
            more = ", ..." if self.count > len(self.examples) else ""
            shown = ": " + ", ".join(self.examples) + more
        return f"{self.where}: {self.text}{shown}. {self.advice}."


class DatasetError(ValueError):
    """A dataset with errors that cannot be repaired; the message is the report's summary."""

    def __init__(self, report: DatasetReport, message: str | None = None):
        super().__init__(f"{message}\n{report.summary()}" if message else report.summary())
        self.report = report


@dataclass
class DatasetReport:
    """What :func:`check_dataset` found (see the module docstring for the policy)."""

    ann_file: str
    images: str
    quick: bool
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    headers_read: int = 0  # image files opened (all of them, or a sample in quick mode)
    errors: list[Issue] = field(default_factory=list)
    skipped: list[Issue] = field(default_factory=list)
    repairs: list[Issue] = field(default_factory=list)
    info: list[Issue] = field(default_factory=list)
    skipped_image_ids: list[int] = field(default_factory=list)
    skipped_annotations: int = 0

    @property
    def ok(self) -> bool:
        """No errors: the dataset can be loaded (with its repairs and skipped images)."""
        return not self.errors

    def count(self, code: str) -> int:
        """How many times the problem ``code`` (e.g. ``"box_clipped"``) was found."""
        issues = self.errors + self.skipped + self.repairs + self.info
        return sum(issue.count for issue in issues if issue.code == code)

    def summary(self) -> str:
        """Multi-line text: one line per problem with its count, file, first ids and fix."""
        mode = "quick check" if self.quick else "full check"
        lines = [
            f"Dataset check ({mode}) of {self.ann_file} with images from {self.images}: "
            f"{_plural(self.num_images, 'image')}, {_plural(self.num_annotations, 'annotation')}, "
            f"{_plural(self.num_categories, 'category', 'categories')}."
        ]
        sections = (
            ("ERRORS (training cannot start until they are fixed):", self.errors),
            ("SKIPPED (skip_unreadable):", self.skipped),
            ("REPAIRED at load time:", self.repairs),
            ("NOTES:", self.info),
        )
        for title, issues in sections:
            if issues:
                lines.append(title)
                lines.extend("  " + issue.line() for issue in issues)
        if self.errors:
            again = _FULL_CHECK.format(ann_file=self.ann_file, images=self.images)
            lines.append(
                f"RESULT: NOT OK, {_plural(len(self.errors), 'kind of error', 'kinds of error')} "
                f"above: fix the data and check again with `{again}`."
            )
        else:
            lines.append("RESULT: OK" + (f" ({self.repair_line()})" if self.repair_line() else ""))
        return "\n".join(lines)

    def repair_line(self) -> str:
        """One line saying what loading changes (repairs, skipped images); "" if nothing."""
        parts = []
        if self.repairs:
            parts.append("repaired " + ", ".join(issue.text for issue in self.repairs))
        if self.skipped_image_ids:
            ids = ", ".join(str(i) for i in self.skipped_image_ids[:MAX_EXAMPLES])
            more = ", ..." if len(self.skipped_image_ids) > MAX_EXAMPLES else ""
            parts.append(
                f"skipped {_plural(len(self.skipped_image_ids), 'unreadable image')} "
                f"(ids {ids}{more}) with "
                f"{_plural(self.skipped_annotations, 'annotation')}"
            )
        return f"{self.ann_file}: {'; '.join(parts)}" if parts else ""

    def raise_if_errors(self) -> None:
        """Raise :class:`DatasetError` (message: :meth:`summary`) if there are errors."""
        if self.errors:
            raise DatasetError(self)


def clip_boxes(
    xywh: torch.Tensor, width: float | torch.Tensor, height: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The box repair used at load time (and counted by :func:`check_dataset`).

    Args:
        xywh: (n, 4) COCO boxes ``[x, y, w, h]`` in pixels.
        width, height: the image size, a number or one value per box ((n,) tensors).

    Returns ``(xyxy, keep)``: (n, 4) absolute XYXY boxes clipped to the image, and the (n,)
    bool mask of the boxes with a positive width and height after clipping.
    """
    xyxy = box_convert(xywh, in_fmt="xywh", out_fmt="xyxy")
    w = torch.as_tensor(width, dtype=xyxy.dtype).reshape(-1, 1)
    h = torch.as_tensor(height, dtype=xyxy.dtype).reshape(-1, 1)
    xyxy[:, 0::2] = torch.minimum(xyxy[:, 0::2].clamp(min=0), w)
    xyxy[:, 1::2] = torch.minimum(xyxy[:, 1::2].clamp(min=0), h)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    return xyxy, keep


def read_annotation_file(ann_file: str | os.PathLike) -> dict:
    """The parsed JSON of ``ann_file``.

    Raises ``FileNotFoundError`` if there is no such file and :class:`DatasetError` if it is
    not a JSON object.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    found = _Findings()
    data = _load_json(path, found)
    if data is None:
        report = DatasetReport(str(ann_file), "(not checked)", quick=True)
        report.errors = found.issues(str(ann_file), "(not checked)", ERROR)
        raise DatasetError(report)
    return data


def check_dataset(
    ann_file: str | os.PathLike,
    images: str | os.PathLike | FolderImageSource | ZipImageSource,
    quick: bool = False,
    skip_unreadable: bool = False,
    *,
    drop_crowd: bool = False,
    max_headers: int | None = QUICK_MAX_HEADERS,
    annotations: dict | None = None,
) -> DatasetReport:
    """Check a COCO-format dataset; see the module docstring for what is reported how.

    Args:
        ann_file: the COCO instances JSON.
        images: the image folder or ``.zip`` (or an image source made from one).
        quick: check the JSON fully and that every image file exists, but read only image
            headers (size, mode, EXIF), of at most ``max_headers`` evenly spaced images;
            without ``quick`` every image is decoded, which finds truncated files.
        skip_unreadable: report missing, unreadable, truncated and non-image files as skipped
            (their ids in ``skipped_image_ids``) instead of as errors.
        drop_crowd: count repairs only for non-crowd boxes (a training set drops crowd boxes
            before repairing), so the counts match what loading does.
        max_headers: quick mode's sample size (None: every image).
        annotations: the already parsed content of ``ann_file`` (to read a large file once).
    """
    if isinstance(images, FolderImageSource):
        where_images = str(images.root)
    elif isinstance(images, ZipImageSource):
        where_images = str(images.path)
    else:
        where_images = str(images)
    report = DatasetReport(str(ann_file), where_images, quick)
    found = _Findings()
    data = annotations
    if data is None:
        data = _load_json(Path(ann_file), found)
    if data is not None:
        source = images
        if not isinstance(images, (FolderImageSource, ZipImageSource)):
            try:
                source = make_image_source(images)
            except FileNotFoundError as err:
                found.add("images_not_found", str(err))
                source = None
            except (OSError, zipfile.BadZipFile) as err:
                found.add("images_unreadable", str(err))
                source = None
        _Checker(report, found, source, quick, skip_unreadable, drop_crowd, max_headers).run(data)
    report.errors = found.issues(str(ann_file), where_images, ERROR)
    report.skipped = found.issues(str(ann_file), where_images, SKIPPED)
    report.repairs = found.issues(str(ann_file), where_images, REPAIR)
    report.info = found.issues(str(ann_file), where_images, INFO)
    return report


# --------------------------------------------------------------------------- internals


class _Findings:
    """Counts and first examples per problem code; turned into :class:`Issue` objects."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.kinds: dict[str, _Kind] = dict(_KINDS)
        self.moved: dict[str, str] = {}  # code -> section, for skipped image errors
        self.advice: dict[str, str] = {}  # code -> advice replacing the kind's
        self.extra: list[Issue] = []

    def add(self, code: str, example: str | Callable[[], str] | None = None, count: int = 1) -> None:
        """Count ``code``; keep ``example`` (or call it, in hot loops) if fewer than 5 are."""
        self.counts[code] += count
        shown = self.examples.setdefault(code, [])
        if example is not None and len(shown) < MAX_EXAMPLES:
            shown.append(example() if callable(example) else example)

    def issues(self, ann_file: str, images: str, section: str) -> list[Issue]:
        result = []
        for code, kind in self.kinds.items():
            count = self.counts.get(code, 0)
            if not count or self.moved.get(code, kind.section) != section:
                continue
            result.append(
                Issue(
                    code=code,
                    section=section,
                    where=ann_file if kind.on == _ON_JSON else images,
                    text=f"{count} {kind.singular if count == 1 else kind.plural}",
                    count=count,
                    examples=self.examples.get(code, []),
                    advice=self.advice.get(code, kind.advice),
                )
            )
        return result + [issue for issue in self.extra if issue.section == section]


def _load_json(path: Path, found: _Findings) -> dict | None:
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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
        and float(value).is_integer()
    )


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


class _Checker:
    """One run of the checks over a parsed JSON ``data`` and an image source."""

    def __init__(self, report, found, source, quick, skip_unreadable, drop_crowd, max_headers):
        self.report = report
        self.found = found
        self.source = source
        self.quick = quick
        self.skip_unreadable = skip_unreadable
        self.drop_crowd = drop_crowd
        self.max_headers = max_headers

    def run(self, data: dict) -> None:
        lists = {}
        for key in TOP_KEYS:
            value = data.get(key)
            if not isinstance(value, list):
                self.found.add("missing_top_key", repr(key) if value is None else f"{key!r} (not a list)")
            lists[key] = value if isinstance(value, list) else None

        images = self._check_images(lists["images"] or [])
        categories = self._check_categories(lists["categories"])
        boxes, per_image = self._check_annotations(
            lists["annotations"] or [],
            self._declared_image_ids(lists["images"] or []) if lists["images"] is not None else None,
            categories,
        )
        self.report.num_images = len(lists["images"] or [])
        self.report.num_annotations = len(lists["annotations"] or [])
        self.report.num_categories = len(lists["categories"] or [])
        if lists["images"] is not None and not lists["images"]:
            self.found.add("no_images")

        for image_id, image in images.items():
            if image_id not in per_image:
                self.found.add("no_annotations", f"image {image_id} {image['file_name']!r}")

        real_sizes = self._check_files(images, per_image) if self.source is not None else {}
        self._count_box_repairs(images, boxes, real_sizes)

    # ---- JSON

    @staticmethod
    def _declared_image_ids(entries: list) -> set:
        return {e["id"] for e in entries if isinstance(e, dict) and _is_int(e.get("id"))}

    def _check_images(self, entries: list) -> dict[int, dict]:
        """The valid image entries with safe file names, by id."""
        images: dict[int, dict] = {}
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                self.found.add("image_missing_key", f"images[{index}] is not an object")
                continue
            label = f"images[{index}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
            absent = [key for key in IMAGE_KEYS if key not in entry]
            if absent:
                self.found.add("image_missing_key", f"{label}: no {', '.join(absent)}")
                continue
            bad = []
            if not _is_int(entry["id"]):
                bad.append(f"id {_short(entry['id'])}")
            if not isinstance(entry["file_name"], str) or not entry["file_name"]:
                bad.append(f"file_name {_short(entry['file_name'])}")
            for key in ("width", "height"):
                if not _is_size(entry[key]):
                    bad.append(f"{key} {_short(entry[key])}")
            if bad:
                self.found.add("image_bad_value", f"{label}: {', '.join(bad)}")
                continue
            image_id, file_name = entry["id"], entry["file_name"]
            if image_id in images:
                first = images[image_id]["file_name"]
                self.found.add("duplicate_image_id", f"image {image_id} ({first!r} and {file_name!r})")
                continue
            try:
                safe_file_name(file_name, self.report.images)
            except UnsafeFileNameError:
                self.found.add("unsafe_file_name", f"image {image_id} {file_name!r}")
                images[image_id] = {**entry, "unsafe": True}
                continue
            images[image_id] = entry
        return images

    def _check_categories(self, entries: list | None) -> set | None:
        """The declared category ids (None when there is no categories list)."""
        if entries is None:
            return None
        ids = set()
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not _is_int(entry.get("id")) or "name" not in entry:
                self.found.add("category_invalid", f"categories[{index}] {_short(entry)}")
                continue
            if entry["id"] in ids:
                self.found.add("duplicate_category_id", f"category {entry['id']}")
            ids.add(entry["id"])
        return ids

    def _check_annotations(
        self, entries: list, image_ids: set | None, category_ids: set | None
    ) -> tuple[_Boxes, Counter]:
        """The valid annotations' boxes, and the number of annotations per image id.

        Written for COCO train's 860k annotations: plain type tests in the loop, the
        finiteness of the boxes tested at once afterwards, examples formatted only when kept.
        """
        required = frozenset(ANNOTATION_KEYS)
        numbers = (int, float)
        ann_ids, image_ids_, crowds, flat, seen, on_image = [], [], [], [], set(), []
        for index, entry in enumerate(entries):
            if type(entry) is not dict or not entry.keys() >= required:
                self._annotation_missing_key(index, entry)
                continue
            ann_id, image_id, category_id = entry["id"], entry["image_id"], entry["category_id"]
            if type(ann_id) is not int or type(image_id) is not int or type(category_id) is not int:
                self._annotation_bad_value(index, entry)
                continue
            on_image.append(image_id)

            def where(ann_id=ann_id, image_id=image_id):
                return f"annotation {ann_id} (image {image_id})"

            ok = True
            if ann_id in seen:
                self.found.add("duplicate_annotation_id", where)
            seen.add(ann_id)
            if image_ids is not None and image_id not in image_ids:
                self.found.add("annotation_missing_image", where)
                ok = False
            if category_ids is not None and category_id not in category_ids:
                self.found.add(
                    "annotation_unknown_category", lambda w=where, c=category_id: f"{w()}: category {c}"
                )
                ok = False
            bbox = entry["bbox"]
            if (
                type(bbox) in (list, tuple)
                and len(bbox) == 4
                and type(bbox[0]) in numbers
                and type(bbox[1]) in numbers
                and type(bbox[2]) in numbers
                and type(bbox[3]) in numbers
            ):
                if ok:
                    ann_ids.append(ann_id)
                    image_ids_.append(image_id)
                    crowds.append(bool(entry.get("iscrowd", 0)))
                    flat.extend(bbox)
            else:
                self.found.add("bad_bbox", lambda w=where, b=bbox: f"{w()}: bbox {_short(b)}")
                ok = False
            if entry.get("iscrowd", 0):
                self.found.add("crowd", where)

        array = np.array(flat, dtype=np.float64).reshape(-1, 4)
        finite = np.isfinite(array).all(axis=1)
        for index in np.flatnonzero(~finite).tolist():
            self.found.add(
                "bad_bbox",
                f"annotation {ann_ids[index]} (image {image_ids_[index]}): "
                f"bbox {_short(array[index].tolist())}",
            )
        valid = _Boxes(
            np.array(ann_ids, dtype=np.int64)[finite],
            np.array(image_ids_, dtype=np.int64)[finite],
            np.array(crowds, dtype=bool)[finite],
            array[finite],
        )
        return valid, Counter(on_image)

    def _annotation_missing_key(self, index: int, entry) -> None:
        if not isinstance(entry, dict):
            self.found.add("annotation_missing_key", f"annotations[{index}] is not an object")
            return
        label = f"annotations[{index}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
        absent = [key for key in ANNOTATION_KEYS if key not in entry]
        self.found.add("annotation_missing_key", f"{label}: no {', '.join(absent)}")

    def _annotation_bad_value(self, index: int, entry: dict) -> None:
        label = f"annotations[{index}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
        bad = [key for key in ("id", "image_id", "category_id") if not _is_int(entry[key])]
        shown = ", ".join(f"{key} {_short(entry[key])}" for key in bad)
        self.found.add("annotation_bad_value", f"{label}: {shown}")

    # ---- image files

    def _check_files(self, images: dict[int, dict], per_image: Counter) -> dict[int, tuple[int, int]]:
        """Check existence (all), headers (all or a sample), decoding (full mode); return the
        real (width, height) of every image whose header was read."""
        candidates = [(i, image) for i, image in images.items() if not image.get("unsafe")]
        n = len(candidates)
        if self.quick and self.max_headers is not None and n > self.max_headers:
            k = self.max_headers
            sampled = {candidates[j * n // k][0] for j in range(k)}
        else:
            sampled = {i for i, _ in candidates}

        bad: dict[str, list[int]] = {}
        sizes = {}
        conversions: dict[str, tuple[str, _Kind]] = {}
        exists = self.source.contains_many([image["file_name"] for _, image in candidates])
        for (image_id, image), present in zip(candidates, exists):
            if present and image_id not in sampled:
                continue
            name = image["file_name"]
            label = f"image {image_id} {name!r}"
            problem, detail = None, ""
            if not present:
                problem = "image_missing"
            else:
                problem, detail, header = self._read(name)
                if header is not None:
                    self.report.headers_read += 1
                    (width, height), mode, orientation = header
                    sizes[image_id] = (width, height)
                    if mode != "RGB" and problem is None:
                        code, kind = conversions.setdefault(mode, _conversion_kind(mode))
                        self.found.kinds.setdefault(code, kind)
                        self.found.add(code, label)
                    if orientation not in (None, 1):
                        self.found.add("exif_rotated", f"{label} (orientation {orientation})")
                    if (width, height) != (image["width"], image["height"]):
                        swapped = (height, width) == (image["width"], image["height"])
                        note = (
                            "; swapped, as if the JSON describes the EXIF-rotated view"
                            if swapped and orientation in (5, 6, 7, 8)
                            else ""
                        )
                        self.found.add(
                            "size_mismatch",
                            f"{label}: file {width}x{height}, JSON "
                            f"{image['width']}x{image['height']} (width x height){note}",
                        )
            if problem is not None:
                bad.setdefault(problem, []).append(image_id)
                self.found.add(problem, label + (f" ({detail})" if detail else ""))

        if self.skip_unreadable:
            for code, ids in bad.items():
                lost = sum(per_image[i] for i in ids)
                self.found.moved[code] = SKIPPED
                self.found.advice[code] = (
                    f"Left out of the dataset together with {_plural(lost, 'annotation')} "
                    "(skip_unreadable); restore the files to use them"
                )
                self.report.skipped_image_ids.extend(ids)
                self.report.skipped_annotations += lost
                for image_id in ids:
                    sizes.pop(image_id, None)
            self.report.skipped_image_ids.sort()

        if len(sampled) < n:
            self.found.extra.append(
                Issue(
                    code="quick_sample",
                    section=INFO,
                    where=self.report.images,
                    text=f"quick check: headers read for an evenly spaced sample of "
                    f"{len(sampled)} of {n} images (size, colour mode, EXIF); all files "
                    "checked to exist",
                    count=len(sampled),
                    examples=[],
                    advice="Colour-mode counts cover the sample only; check every image with `"
                    + _FULL_CHECK.format(ann_file=self.report.ann_file, images=self.report.images)
                    + "`",
                )
            )
        if self.quick and n:
            self.found.extra.append(
                Issue(
                    code="quick_headers_only",
                    section=INFO,
                    where=self.report.images,
                    text="quick check: image headers read, pixels not decoded",
                    count=1,
                    examples=[],
                    advice="Truncated files are only found by the full check, `"
                    + _FULL_CHECK.format(ann_file=self.report.ann_file, images=self.report.images)
                    + "`",
                )
            )
        return sizes

    def _read(self, name: str):
        """``(problem, detail, header)`` for one image file; ``header`` is
        ``((width, height), mode, exif_orientation)`` when the header could be read."""
        header = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with self.source.open_raw(name, header_only=self.quick) as image:
                    header = (image.size, image.mode, _orientation(image))
                    if not self.quick:
                        image.load()
        except FileNotFoundError:
            return "image_missing", "", None
        except UnidentifiedImageError:
            return "image_not_an_image", "", None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            problem = "image_unreadable" if header is None else "image_truncated"
            return problem, _short(str(err), 80).strip("'\""), header
        return None, "", header

    # ---- boxes

    def _count_box_repairs(
        self, images: dict[int, dict], boxes: _Boxes, real_sizes: dict[int, tuple[int, int]]
    ) -> None:
        """Count what :func:`clip_boxes` will do to the boxes loading sees: those of images
        that are not skipped, without crowd boxes when they are dropped first."""
        skipped = set(self.report.skipped_image_ids)
        usable = sorted(i for i in images if i not in skipped)
        if not usable or not len(boxes.image_ids):
            return
        # The size loading will see: the file's, where its header was read.
        sizes = [real_sizes.get(i, (images[i]["width"], images[i]["height"])) for i in usable]
        usable_ids = np.array(usable, dtype=np.int64)
        position = np.searchsorted(usable_ids, boxes.image_ids).clip(max=len(usable_ids) - 1)
        selected = usable_ids[position] == boxes.image_ids
        if self.drop_crowd:
            selected &= ~boxes.crowd
        selected = np.flatnonzero(selected)
        wh = torch.tensor(sizes, dtype=torch.float32)[torch.from_numpy(position[selected])]
        # float64 -> float32 rounds as torch.tensor(list of floats, dtype=float32) does.
        xywh = torch.from_numpy(boxes.xywh[selected].astype(np.float32))
        original = box_convert(xywh, in_fmt="xywh", out_fmt="xyxy")
        clipped, keep = clip_boxes(xywh, wh[:, 0], wh[:, 1])
        empty = (original[:, 2] <= original[:, 0]) | (original[:, 3] <= original[:, 1])
        outside = ~keep & ~empty
        changed = keep & (clipped != original).any(dim=1)
        for code, mask in (("box_empty", empty), ("box_outside", outside), ("box_clipped", changed)):
            hits = selected[mask.numpy()]
            if not len(hits):
                continue
            self.found.add(code, count=len(hits))
            self.found.examples[code] = [
                f"annotation {boxes.ann_ids[i]} (image {boxes.image_ids[i]}) "
                f"bbox {[int(v) if v.is_integer() else v for v in boxes.xywh[i].tolist()]}"
                for i in hits[:MAX_EXAMPLES]
            ]


@dataclass
class _Boxes:
    """The valid annotations, as arrays of length n."""

    ann_ids: np.ndarray  # int64
    image_ids: np.ndarray  # int64
    crowd: np.ndarray  # bool
    xywh: np.ndarray  # float64 (n, 4), as in the JSON


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block does not make the image unusable
        return None
