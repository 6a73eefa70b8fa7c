"""The dataset checker's checks of the annotation JSON: its lists, images, categories and
annotations (keys, value types, duplicate ids, references, boxes).

What each problem means is in :mod:`detr_irpe.data.checker.messages`; the policy in
:mod:`detr_irpe.data.checker.checks`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from detr_irpe.data.checker.report import DatasetReport, Findings, annotation_label, image_label, short
from detr_irpe.data.image_source import UnsafeFileNameError, safe_file_name
from detr_irpe.data.transforms import resizes_to_nothing

TOP_KEYS = ("images", "annotations", "categories")
IMAGE_KEYS = ("id", "file_name", "width", "height")
ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")


@dataclass
class ValidBoxes:
    """The valid annotations, as arrays of length n."""

    ann_ids: np.ndarray  # int64
    image_ids: np.ndarray  # int64
    crowd: np.ndarray  # bool
    xywh: np.ndarray  # float64 (n, 4), as in the JSON


@dataclass
class CheckedJson:
    """What the file checks and the box-repair count need from the JSON."""

    images: dict[int, dict]  # the valid image entries by id; unsafe file names flagged "unsafe"
    boxes: ValidBoxes
    per_image: Counter  # the number of annotations per image id


def check_json(data: dict, report: DatasetReport, found: Findings,
               max_size: int | None) -> CheckedJson:
    """Check the parsed JSON ``data``: problems go to ``found``, the counts to ``report``;
    ``max_size`` is the longer-side cap of the resize (elongated images vanish under it)."""
    lists = _top_level_lists(data, found)
    images = _check_images(lists["images"] or [], report.images, found, max_size)
    categories = _check_categories(lists["categories"], found)
    declared = _declared_image_ids(lists["images"]) if lists["images"] is not None else None
    boxes, per_image = _check_annotations(lists["annotations"] or [], declared, categories, found)
    report.num_images = len(lists["images"] or [])
    report.num_annotations = len(lists["annotations"] or [])
    report.num_categories = len(lists["categories"] or [])
    if lists["images"] is not None and not lists["images"]:
        found.add("no_images")
    for image_id, image in images.items():
        if image_id not in per_image:
            found.add("no_annotations", image_label(image_id, image["file_name"]))
    return CheckedJson(images, boxes, per_image)


def _top_level_lists(data: dict, found: Findings) -> dict[str, list | None]:
    """The ``images``, ``annotations`` and ``categories`` lists (None where not a list)."""
    lists = {}
    for key in TOP_KEYS:
        value = data.get(key)
        if not isinstance(value, list):
            found.add("missing_top_key", repr(key) if value is None else f"{key!r} (not a list)")
        lists[key] = value if isinstance(value, list) else None
    return lists


def _declared_image_ids(entries: list) -> set:
    return {e["id"] for e in entries if isinstance(e, dict) and _is_int(e.get("id"))}


def _check_images(entries: list, images_dir: str, found: Findings,
                  max_size: int | None) -> dict[int, dict]:
    """The valid image entries with safe file names, by id."""
    images: dict[int, dict] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            found.add("image_missing_key", f"images[{index}] is not an object")
            continue
        label = f"images[{index}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
        absent = [key for key in IMAGE_KEYS if key not in entry]
        if absent:
            found.add("image_missing_key", f"{label}: no {', '.join(absent)}")
            continue
        bad = _bad_image_values(entry)
        if bad:
            found.add("image_bad_value", f"{label}: {', '.join(bad)}")
            continue
        image_id, file_name = entry["id"], entry["file_name"]
        if resizes_to_nothing((entry["height"], entry["width"]), max_size):
            found.add("image_too_elongated", f"{image_label(image_id, file_name)}: "
                      f"{entry['width']}x{entry['height']} (width x height), max_size {max_size}")
        if image_id in images:
            first = images[image_id]["file_name"]
            found.add("duplicate_image_id", f"image {image_id} ({first!r} and {file_name!r})")
            continue
        try:
            safe_file_name(file_name, images_dir)
        except UnsafeFileNameError:
            found.add("unsafe_file_name", image_label(image_id, file_name))
            images[image_id] = {**entry, "unsafe": True}
            continue
        images[image_id] = entry
    return images


def _bad_image_values(entry: dict) -> list[str]:
    """The invalid values of an image entry that has all its keys, e.g. ``["width '640'"]``."""
    bad = []
    if not _is_int(entry["id"]):
        bad.append(f"id {short(entry['id'])}")
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        bad.append(f"file_name {short(entry['file_name'])}")
    for key in ("width", "height"):
        if not _is_size(entry[key]):
            bad.append(f"{key} {short(entry[key])}")
    return bad


def _check_categories(entries: list | None, found: Findings) -> set | None:
    """The declared category ids (None when there is no categories list)."""
    if entries is None:
        return None
    ids = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or "name" not in entry:
            found.add("category_invalid", f"categories[{index}] {short(entry)}")
            continue
        if entry["id"] in ids:
            found.add("duplicate_category_id", f"category {entry['id']}")
        ids.add(entry["id"])
    return ids


def _check_annotations(
    entries: list, image_ids: set | None, category_ids: set | None, found: Findings
) -> tuple[ValidBoxes, Counter]:
    """The valid annotations' boxes, and the number of annotations per image id.

    Written for COCO train's 860k annotations: plain type tests in the loop, the
    finiteness of the boxes tested at once afterwards (:func:`_finite_boxes`), examples
    formatted only when kept.
    """
    required = frozenset(ANNOTATION_KEYS)
    numbers = (int, float)
    ann_ids, image_ids_, crowds, flat, seen, on_image = [], [], [], [], set(), []
    for index, entry in enumerate(entries):
        if type(entry) is not dict or not entry.keys() >= required:
            _annotation_missing_key(index, entry, found)
            continue
        ann_id, image_id, category_id = entry["id"], entry["image_id"], entry["category_id"]
        if type(ann_id) is not int or type(image_id) is not int or type(category_id) is not int:
            _annotation_bad_value(index, entry, found)
            continue
        on_image.append(image_id)

        def where(ann_id=ann_id, image_id=image_id):
            return annotation_label(ann_id, image_id)

        ok = True
        if ann_id in seen:
            found.add("duplicate_annotation_id", where)
        seen.add(ann_id)
        if image_ids is not None and image_id not in image_ids:
            found.add("annotation_missing_image", where)
            ok = False
        if category_ids is not None and category_id not in category_ids:
            found.add("annotation_unknown_category", lambda w=where, c=category_id: f"{w()}: category {c}")
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
            found.add("bad_bbox", lambda w=where, b=bbox: f"{w()}: bbox {short(b)}")
        if "area" in entry and not _is_area(entry["area"]):
            found.add("bad_area", lambda w=where, a=entry["area"]: f"{w()}: area {short(a)}")
        if entry.get("iscrowd", 0):
            found.add("crowd", where)
    return _finite_boxes(ann_ids, image_ids_, crowds, flat, found), Counter(on_image)


def _finite_boxes(ann_ids: list, image_ids: list, crowds: list, flat: list, found: Findings) -> ValidBoxes:
    """The boxes of 4 numbers whose values are all finite; the others are ``bad_bbox``."""
    array = np.array(flat, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(array).all(axis=1)
    for index in np.flatnonzero(~finite).tolist():
        found.add(
            "bad_bbox",
            f"{annotation_label(ann_ids[index], image_ids[index])}: bbox {short(array[index].tolist())}",
        )
    return ValidBoxes(
        np.array(ann_ids, dtype=np.int64)[finite],
        np.array(image_ids, dtype=np.int64)[finite],
        np.array(crowds, dtype=bool)[finite],
        array[finite],
    )


def _annotation_missing_key(index: int, entry, found: Findings) -> None:
    if not isinstance(entry, dict):
        found.add("annotation_missing_key", f"annotations[{index}] is not an object")
        return
    label = f"annotations[{index}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
    absent = [key for key in ANNOTATION_KEYS if key not in entry]
    found.add("annotation_missing_key", f"{label}: no {', '.join(absent)}")


def _annotation_bad_value(index: int, entry: dict, found: Findings) -> None:
    label = f"annotations[{index}]" + (f" (id {entry['id']!r})" if "id" in entry else "")
    bad = [key for key in ("id", "image_id", "category_id") if not _is_int(entry[key])]
    shown = ", ".join(f"{key} {short(entry[key])}" for key in bad)
    found.add("annotation_bad_value", f"{label}: {shown}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_area(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _is_size(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
        and float(value).is_integer()
    )
