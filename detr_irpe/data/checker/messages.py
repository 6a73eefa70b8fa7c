"""The dataset checker's message catalogue: every problem it can report, in which section,
about which file, in words for one and for many, and what to do about it.

The policy (what is an error, a repair, a note) is described in :mod:`detr_irpe.data.checker.checks`;
docs/dataset_errors.md explains each message to users.
"""

from __future__ import annotations

from dataclasses import dataclass

from detr_irpe.data.image_source import SIXTEEN_BIT_MODES

ERROR, SKIPPED, REPAIR, INFO = "error", "skipped", "repair", "info"
ON_JSON, ON_IMAGES = "json", "images"

SKIP_HINT = "or pass --skip_unreadable (CocoDetection(..., skip_unreadable=True)) to leave them out"


def full_check_command(ann_file: str, images: str) -> str:
    """The command line of the full check of this dataset, for the advice in messages."""
    return f"python tools/check_dataset.py --json {ann_file} --images {images}"


@dataclass(frozen=True)
class Kind:
    """One kind of problem: its section, its file, its text for one and for many, its advice."""

    section: str
    on: str  # which file the problem is in: the annotation JSON or the image folder/zip
    singular: str
    plural: str
    advice: str


# Every problem the checker reports, in the order the summary lists them.
KINDS: dict[str, Kind] = {
    # ---- errors in the JSON
    "annotation_file_unreadable": Kind(
        ERROR, ON_JSON, "annotation file cannot be read", "annotation file cannot be read",
        "Check the path (--json) and the file's permissions",
    ),
    "json_malformed": Kind(
        ERROR, ON_JSON, "annotation file is not valid JSON", "annotation file is not valid JSON",
        "The file may have been cut short by an interrupted download or copy: compare its size "
        "with the original, or export it again",
    ),
    "missing_top_key": Kind(
        ERROR, ON_JSON, "required top-level key is missing or not a list",
        "required top-level keys are missing or not lists",
        'A COCO detection file needs "images", "annotations" and "categories" lists (an empty '
        "list is allowed); is this an instances_*.json file?",
    ),
    "no_images": Kind(
        ERROR, ON_JSON, "file lists no images", "file lists no images",
        "Check that --json is the annotation file of this split",
    ),
    "image_missing_key": Kind(
        ERROR, ON_JSON, "image entry lacks required keys", "image entries lack required keys",
        "Every image needs id, file_name, width and height; fix or remove these entries",
    ),
    "image_bad_value": Kind(
        ERROR, ON_JSON, "image entry has an invalid value", "image entries have invalid values",
        "Image ids must be integers, file_name a non-empty string, width and height positive "
        "integers",
    ),
    "image_too_elongated": Kind(
        ERROR, ON_JSON, "image is too elongated to resize", "images are too elongated to resize",
        "Their shorter side would be resized to 0 pixels (a strip more than about 2 x max_size "
        "times longer than wide); crop or pad these images and their width/height, or remove "
        "them",
    ),
    "duplicate_image_id": Kind(
        ERROR, ON_JSON, "image id is used more than once", "image ids are used more than once",
        "Give every image its own id (annotations refer to images by id, so a duplicate makes "
        "them ambiguous)",
    ),
    "unsafe_file_name": Kind(
        ERROR, ON_JSON, "image file name is absolute or leaves the image directory",
        "image file names are absolute or leave the image directory",
        "file_name must be a path relative to the image folder or zip (--images); these files "
        "are never opened. Fix the JSON (and distrust where it came from)",
    ),
    "category_invalid": Kind(
        ERROR, ON_JSON, "category entry lacks an integer id or a name",
        "category entries lack an integer id or a name",
        "Every category needs an integer id and a name",
    ),
    "duplicate_category_id": Kind(
        ERROR, ON_JSON, "category id is declared more than once",
        "category ids are declared more than once",
        "Declare each category once",
    ),
    "annotation_missing_key": Kind(
        ERROR, ON_JSON, "annotation lacks required keys", "annotations lack required keys",
        "Every annotation needs id, image_id, category_id and bbox; fix or remove these",
    ),
    "annotation_bad_value": Kind(
        ERROR, ON_JSON, "annotation has a non-integer id, image_id or category_id",
        "annotations have a non-integer id, image_id or category_id",
        "Ids must be integers",
    ),
    "duplicate_annotation_id": Kind(
        ERROR, ON_JSON, "annotation id is used more than once",
        "annotation ids are used more than once",
        "Give every annotation its own id (COCO evaluation keeps only one annotation per id)",
    ),
    "annotation_missing_image": Kind(
        ERROR, ON_JSON, "annotation refers to an image id not listed in \"images\"",
        "annotations refer to image ids not listed in \"images\"",
        "Add the missing images to the JSON or delete these annotations",
    ),
    "annotation_unknown_category": Kind(
        ERROR, ON_JSON, "annotation uses a category id not declared in \"categories\"",
        "annotations use category ids not declared in \"categories\"",
        "Declare the category or correct category_id",
    ),
    "bad_bbox": Kind(
        ERROR, ON_JSON, "annotation's bbox is not 4 finite numbers",
        "annotations' bboxes are not 4 finite numbers",
        "bbox must be [x, y, width, height] in pixels; NaN or inf usually come from a broken "
        "export: fix or delete these annotations",
    ),
    "bad_area": Kind(
        ERROR, ON_JSON, "annotation's area is not a finite number >= 0",
        "annotations' areas are not finite numbers >= 0",
        "area is optional: delete it (width x height of the bbox is used) or write the real "
        "area; NaN usually comes from a broken export",
    ),
    # ---- errors in the image files (skipped instead with skip_unreadable)
    "images_not_found": Kind(
        ERROR, ON_IMAGES, "image folder or zip does not exist",
        "image folder or zip does not exist",
        "Check the path given as --images",
    ),
    "images_unreadable": Kind(
        ERROR, ON_IMAGES, "image folder or zip cannot be read", "image folder or zip cannot be read",
        "Check its permissions; a damaged zip must be downloaded or copied again",
    ),
    "image_missing": Kind(
        ERROR, ON_IMAGES, "image file is missing", "image files are missing",
        f"Restore the files (an incomplete download or unzip?), {SKIP_HINT}",
    ),
    "image_not_an_image": Kind(
        ERROR, ON_IMAGES, "file is not an image Pillow can read",
        "files are not images Pillow can read",
        f"Replace them with the real images (an HTML error page saved as .jpg?), {SKIP_HINT}",
    ),
    "image_unreadable": Kind(
        ERROR, ON_IMAGES, "image file cannot be opened", "image files cannot be opened",
        f"Check the files' permissions and the disk, {SKIP_HINT}",
    ),
    "image_truncated": Kind(
        ERROR, ON_IMAGES, "image file is truncated or corrupt (decoding failed)",
        "image files are truncated or corrupt (decoding failed)",
        f"Download or copy them again, {SKIP_HINT}",
    ),
    "size_mismatch": Kind(
        ERROR, ON_IMAGES, "image's real size differs from width/height in the JSON",
        "images' real sizes differ from width/height in the JSON",
        "The boxes were drawn for another size, so they would be wrong: correct width, height "
        "and the boxes in the JSON, or put back the annotated version of the files",
    ),
    # ---- repairs, done at load time
    "box_clipped": Kind(
        REPAIR, ON_JSON, "box clipped to the image", "boxes clipped to the image",
        "Boxes partly outside the image; nothing to do (loading clips them)",
    ),
    "box_empty": Kind(
        REPAIR, ON_JSON, "empty box dropped", "empty boxes dropped",
        "Boxes with zero or negative width or height; nothing to do (loading drops them), fix "
        "the JSON to silence this",
    ),
    "box_outside": Kind(
        REPAIR, ON_JSON, "box entirely outside the image dropped",
        "boxes entirely outside the image dropped",
        "Nothing to do (loading drops them); check the annotation tool's export if there are "
        "many",
    ),
    # converted_<mode> kinds are made by conversion_kind
    # ---- information
    "crowd": Kind(
        INFO, ON_JSON, "crowd annotation (iscrowd=1)", "crowd annotations (iscrowd=1)",
        "Nothing to do: they are dropped from training targets and kept, flagged, for "
        "evaluation, as in DETR",
    ),
    "no_annotations": Kind(
        INFO, ON_JSON, "image has no annotations", "images have no annotations",
        "Legal: they are used as pure background",
    ),
    "exif_rotated": Kind(
        INFO, ON_IMAGES, "photo has an EXIF orientation tag", "photos have an EXIF orientation tag",
        "They are NOT rotated: pixels are used as stored, like pycocotools and the official "
        "DETR code, because COCO boxes refer to the stored orientation. If your boxes were "
        "drawn on the rotated view, rotate the files (PIL.ImageOps.exif_transpose) and "
        "correct width/height",
    ),
}

# Names of Pillow's colour modes in messages ("1 grayscale image converted to RGB").
MODE_NAMES = {
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


def conversion_kind(mode: str) -> tuple[str, Kind]:
    """The code and kind of the repair "image of Pillow mode ``mode`` converted to RGB"."""
    name = MODE_NAMES.get(mode, f"{mode}-mode")
    if mode in SIXTEEN_BIT_MODES:
        advice = "Nothing to do: values are scaled from 0..65535 to 0..255"
    elif "A" in mode or "a" in mode:
        advice = "Nothing to do: loading converts them (the alpha channel is dropped)"
    else:
        advice = "Nothing to do: loading converts them"
    target = "8-bit RGB" if mode in SIXTEEN_BIT_MODES else "RGB"
    code = "converted_" + name.replace(" ", "_")
    return code, Kind(
        REPAIR, ON_IMAGES, f"{name} image converted to {target}",
        f"{name} images converted to {target}", advice,
    )
