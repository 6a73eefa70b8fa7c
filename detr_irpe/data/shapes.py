"""A small synthetic COCO-format dataset of coloured shapes, for CPU demos and tests.

Layout written by :func:`generate_shapes_dataset` (read back by :func:`build_shapes`):

    <out>/train/000001.png ...            <out>/val/000001.png ...
    <out>/annotations/instances_train.json
    <out>/annotations/instances_val.json
    <out>/params.json                     (the generation parameters; written last)

Each image has a noisy, textured background and 0-6 non-overlapping filled shapes (circle,
square, triangle; squares and triangles randomly rotated). About 5% of the images have no
object. Boxes are tight: they are the bounding box of the shape's own rasterised pixels.
Everything is a function of the seed (each image has its own random stream, keyed by seed,
split and index), so the same arguments give the same files.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from detr_irpe.data.coco import CocoDetection

CATEGORIES = (
    {"id": 1, "name": "circle"},
    {"id": 2, "name": "square"},
    {"id": 3, "name": "triangle"},
)
SPLITS = ("train", "val")
# Bump when the drawing changes, so existing datasets are regenerated.
GENERATOR_VERSION = 2
EMPTY_FRACTION = 0.05
MAX_OBJECTS = 6
# Shape radius (centre to corner) as a fraction of the image's shorter side: objects of
# roughly 1/6 to 2/5 of the image, so they span a few cells of a stride-32 feature map.
RADIUS_RANGE = (0.1, 0.22)


@dataclass(frozen=True)
class ShapesParams:
    """Everything that determines the generated files."""

    num_train: int = 1000
    num_val: int = 100
    image_size: int = 128  # longer side bound; each side is uniform in [0.75, 1] * image_size
    seed: int = 0
    version: int = GENERATOR_VERSION


def _random_colour(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
):
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb) * 255.0


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Muted colour, a linear gradient, faint stripes and pixel noise; float (h, w, 3)."""
    base = _random_colour(rng, (0.0, 0.35), (0.3, 0.75))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    gradient = ramp[..., None] * rng.uniform(-40, 40, size=3)
    period = rng.uniform(6, 20)
    stripes = np.sin(2 * math.pi * (xs * math.sin(angle) - ys * math.cos(angle)) / period)
    texture = stripes[..., None] * rng.uniform(3, 12)
    noise = rng.normal(0, 10, size=(height, width, 3))
    return base + gradient + texture + noise


def _shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple]:
    corners = 4 if kind == "square" else 3
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def _draw_mask(
    kind: str, height: int, width: int, cx: float, cy: float, radius: float, angle: float
):
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    else:
        draw.polygon(_shape_polygon(kind, cx, cy, radius, angle), fill=255)
    return mask


def _overlaps(box: tuple, boxes: list[tuple], gap: int = 2) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < bx1 + gap and bx0 < x1 + gap and y0 < by1 + gap and by0 < y1 + gap
        for bx0, by0, bx1, by1 in boxes
    )


def render_image(rng: np.random.Generator, image_size: int, empty: bool):
    """One image and its objects: ``(PIL RGB image, [(category_id, [x, y, w, h], area)])``."""
    low = round(0.75 * image_size)
    height, width = (int(rng.integers(low, image_size + 1)) for _ in range(2))
    pixels = _background(rng, height, width)
    num_objects = 0 if empty else int(rng.integers(1, MAX_OBJECTS + 1))
    objects, placed = [], []
    short = min(height, width)
    for _ in range(num_objects):
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        colour = _random_colour(rng, (0.6, 1.0), (0.65, 1.0))
        for _attempt in range(30):
            radius = rng.uniform(*RADIUS_RANGE) * short
            cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
            angle = rng.uniform(0, 2 * math.pi)
            mask = _draw_mask(category["name"], height, width, cx, cy, radius, angle)
            box = mask.getbbox()  # (left, top, right, bottom), right/bottom exclusive
            if box is not None and not _overlaps(box, placed):
                break
        else:
            continue  # no free spot for this object
        inside = np.asarray(mask) > 0
        pixels[inside] = colour + rng.normal(0, 6, size=(int(inside.sum()), 3))
        placed.append(box)
        x0, y0, x1, y1 = box
        objects.append((category["id"], [x0, y0, x1 - x0, y1 - y0], int(inside.sum())))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image, objects


def _write_split(out: Path, split: str, count: int, params: ShapesParams) -> None:
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    for old in image_dir.glob("*.png"):
        old.unlink()
    split_code = SPLITS.index(split)
    split_rng = np.random.default_rng([params.seed, split_code])
    num_empty = max(1, round(EMPTY_FRACTION * count)) if count else 0
    empty = set(split_rng.choice(count, size=num_empty, replace=False).tolist())

    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([params.seed, split_code, index])
        image, objects = render_image(rng, params.image_size, empty=index in empty)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        image.save(image_dir / file_name, compress_level=1)
        images.append(
            {"id": image_id, "file_name": file_name, "height": image.height, "width": image.width}
        )
        for category_id, bbox, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [float(v) for v in bbox],
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"synthetic shapes ({split})", **asdict(params)},
        "images": images,
        "annotations": annotations,
        "categories": [dict(cat, supercategory="shape") for cat in CATEGORIES],
    }
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    with open(out / "annotations" / f"instances_{split}.json", "w") as f:
        json.dump(coco, f)


def generate_shapes_dataset(
    out: str | os.PathLike = "datasets/shapes",
    num_train: int = 1000,
    num_val: int = 100,
    image_size: int = 128,
    seed: int = 0,
    force: bool = False,
) -> bool:
    """Write the shapes dataset under ``out``; returns False if it was already there.

    The dataset is considered present when ``<out>/params.json`` records the same parameters
    and both annotation files exist (``force`` regenerates anyway).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    out = Path(out)
    params = ShapesParams(num_train, num_val, image_size, seed)
    params_file = out / "params.json"
    if (
        not force
        and params_file.is_file()
        and all((out / "annotations" / f"instances_{split}.json").is_file() for split in SPLITS)
    ):
        with open(params_file) as f:
            if json.load(f) == asdict(params):
                return False
    params_file.unlink(missing_ok=True)  # a partial run is never mistaken for a complete one
    for split, count in zip(SPLITS, (num_train, num_val), strict=True):
        _write_split(out, split, count, params)
    with open(params_file, "w") as f:
        json.dump(asdict(params), f, indent=2)
    return True


def build_shapes(
    root: str | os.PathLike,
    split: str,
    transforms=None,
    contiguous_labels: bool = False,
) -> CocoDetection:
    """The ``split`` ("train" or "val") of a shapes dataset written under ``root``.

    ``transforms`` is used as given (None: images at their generated size, no augmentation);
    a demo would pass e.g. ``make_transforms(split, scales=range(160, 225, 32), max_size=320,
    val_size=192)``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(root)
    ann_file = root / "annotations" / f"instances_{split}.json"
    images = root / split
    for path in (ann_file, images):
        if not path.exists():
            raise FileNotFoundError(
                f"missing {path}; expected a shapes dataset with {root}/{split}/ and "
                f"{root}/annotations/instances_{split}.json "
                "(create it with `python tools/make_shapes_dataset.py --out ...`)"
            )
    return CocoDetection(
        images, ann_file, transforms, train=split == "train", contiguous_labels=contiguous_labels
    )
