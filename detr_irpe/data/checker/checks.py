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
    are clipped to it, boxes entirely outside it are dropped (all by
    :func:`~detr_irpe.data.box_clipping.clip_boxes`, which
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

This module runs the checks in order; they live beside it: the JSON is read by
:mod:`~detr_irpe.data.annotation_file`, checked by :mod:`~detr_irpe.data.checker.annotations`,
the image files by :mod:`~detr_irpe.data.checker.files`; the problems are counted into the
report of :mod:`~detr_irpe.data.checker.report`, worded by the catalogue in
:mod:`~detr_irpe.data.checker.messages`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from detr_irpe.config import EVAL_MAX_SIZE
from detr_irpe.data.annotation_file import load_json
from detr_irpe.data.box_clipping import clip_boxes
from detr_irpe.data.checker.annotations import CheckedJson, check_json
from detr_irpe.data.checker.files import FileChecks
from detr_irpe.data.checker.report import MAX_EXAMPLES, DatasetReport, Findings, annotation_label
from detr_irpe.data.image_source import FolderImageSource, ZipImageSource, make_image_source

QUICK_MAX_HEADERS = 5000

ImageSource = FolderImageSource | ZipImageSource


def check_dataset(
    ann_file: str | os.PathLike,
    images: str | os.PathLike | ImageSource,
    quick: bool = False,
    skip_unreadable: bool = False,
    *,
    drop_crowd: bool = False,
    max_headers: int | None = QUICK_MAX_HEADERS,
    annotations: dict | None = None,
    max_size: int | None = EVAL_MAX_SIZE,
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
        max_size: the longer-side cap of the resize; images it would squeeze to 0 pixels
            are errors.
    """
    report = DatasetReport(str(ann_file), _where(images), quick)
    found = Findings()
    data = annotations
    if data is None:
        data = load_json(Path(ann_file), found)
    if data is not None:
        checked = check_json(data, report, found, max_size)
        source = _open_source(images, found)
        real_sizes = {}
        if source is not None:
            checks = FileChecks(report, found, source, quick, skip_unreadable, max_headers)
            real_sizes = checks.run(checked.images, checked.per_image)
        _count_box_repairs(checked, real_sizes, drop_crowd, report, found)
    found.sort_into(report)
    return report


def check_annotations(ann_file: str | os.PathLike) -> tuple[DatasetReport, dict | None]:
    """Only the JSON part of :func:`check_dataset` (no image files): the report and the parsed
    file (None when it cannot be read), e.g. for ground truth that detections are scored
    against."""
    report = DatasetReport(str(ann_file), "(images not checked)", True)
    found = Findings()
    data = load_json(Path(ann_file), found)
    if data is not None:
        check_json(data, report, found, max_size=None)  # ground truth is never resized
    found.sort_into(report)
    return report, data


def _where(images: str | os.PathLike | ImageSource) -> str:
    """The image folder or zip, as named in the report."""
    if isinstance(images, FolderImageSource):
        return str(images.root)
    if isinstance(images, ZipImageSource):
        return str(images.path)
    return str(images)


def _open_source(images: str | os.PathLike | ImageSource, found: Findings) -> ImageSource | None:
    """The image source of ``images``; None, with the reason in ``found``, if it cannot be opened."""
    if isinstance(images, (FolderImageSource, ZipImageSource)):
        return images
    try:
        return make_image_source(images)
    except FileNotFoundError as err:
        found.add("images_not_found", str(err))
    except (OSError, zipfile.BadZipFile) as err:
        found.add("images_unreadable", str(err))
    return None


def _count_box_repairs(
    checked: CheckedJson,
    real_sizes: dict[int, tuple[int, int]],
    drop_crowd: bool,
    report: DatasetReport,
    found: Findings,
) -> None:
    """Count what :func:`~detr_irpe.data.box_clipping.clip_boxes` will do to the boxes loading
    sees: those of images that are not skipped, without crowd boxes when they are dropped first."""
    images, boxes = checked.images, checked.boxes
    skipped = set(report.skipped_image_ids)
    usable = sorted(i for i in images if i not in skipped)
    if not usable or not len(boxes.image_ids):
        return
    # The size loading will see: the file's, where its header was read.
    sizes = [real_sizes.get(i, (images[i]["width"], images[i]["height"])) for i in usable]
    usable_ids = np.array(usable, dtype=np.int64)
    position = np.searchsorted(usable_ids, boxes.image_ids).clip(max=len(usable_ids) - 1)
    selected = usable_ids[position] == boxes.image_ids
    if drop_crowd:
        selected &= ~boxes.crowd
    selected = np.flatnonzero(selected)
    wh = torch.tensor(sizes, dtype=torch.float32)[torch.from_numpy(position[selected])]
    # float64 -> float32 rounds as torch.tensor(list of floats, dtype=float32) does.
    xywh = torch.from_numpy(boxes.xywh[selected].astype(np.float32))
    original = box_convert(xywh, in_fmt="xywh", out_fmt="xyxy")
    clipped, keep = _clip_per_image_size(xywh, wh)
    empty = (original[:, 2] <= original[:, 0]) | (original[:, 3] <= original[:, 1])
    outside = ~keep & ~empty
    changed = keep & (clipped != original).any(dim=1)
    for code, mask in (("box_empty", empty), ("box_outside", outside), ("box_clipped", changed)):
        hits = selected[mask.numpy()]
        if not len(hits):
            continue
        found.add(code, count=len(hits))
        found.examples[code] = [
            f"{annotation_label(boxes.ann_ids[i], boxes.image_ids[i])} "
            f"bbox {[int(v) if v.is_integer() else v for v in boxes.xywh[i].tolist()]}"
            for i in hits[:MAX_EXAMPLES]
        ]


def _clip_per_image_size(xywh: torch.Tensor, wh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~detr_irpe.data.box_clipping.clip_boxes` of (n, 4) boxes that belong to images
    of different sizes ((n, 2) ``wh``, one (width, height) per box): one call per size."""
    clipped = torch.empty_like(xywh)
    keep = torch.empty(len(xywh), dtype=torch.bool)
    sizes, group = torch.unique(wh, dim=0, return_inverse=True)
    rows_of_size = torch.argsort(group, stable=True).split(torch.bincount(group).tolist())
    for (width, height), rows in zip(sizes.tolist(), rows_of_size):
        clipped[rows], keep[rows] = clip_boxes(xywh[rows], (height, width))
    return clipped, keep
