"""Build the tree-crown development set: real aerial RGB images of forests (NEON field sites)
with hand-drawn crown boxes, cut into 200-pixel tiles, in the custom COCO layout.

    python tools/make_trees_dataset.py --out datasets/trees_dev

The images and boxes come from the sample data inside the ``deepforest`` wheel (version
2.1.0, fetched with ``pip download`` unless ``--wheel`` names a local copy; deepforest is
never installed or imported).  Training tiles: the top three quarters of the large
Yellowstone scene (stride 100 pixels, so neighbours overlap by half) and the OSBS_029 and
SOAP_061 scenes; validation tiles: the bottom quarter of the large Yellowstone scene
without overlap.  A crown counts in a tile when at least half of its box lies inside; its
box is clipped to the tile.  Tiles without a crown are left out.  One category, "tree".
The tool reads only these three scenes: the wheel's other images include the source's
held-out test scene, which is never read, and no figure in the docs comes from it.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from PIL import Image

from detr_irpe.files import writable_folder
from detr_irpe.options import input_error

WHEEL = "deepforest==2.1.0"
DATA = "deepforest/data/"
TILE = 200
LARGE = "2019_YELL_2_528000_4978000_image_crop2"
# (scene, stride) of the training tiles; the large scene gives its top three quarters.
TRAIN_SCENES = ((LARGE, 100), ("OSBS_029", 100), ("SOAP_061", 100))
SMALL_SCENE_ROWS = 400  # the two small scenes: rows [0, 400)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="datasets/trees_dev", help="output folder")
    parser.add_argument("--wheel", default=None,
                        help=f"a local {WHEEL} wheel (default: pip download it)")
    return parser.parse_args(argv)


def crown_boxes(wheel: zipfile.ZipFile, scene: str) -> list[tuple[float, float, float, float]]:
    """The scene's crowns as (x0, y0, x1, y1) pixels, from its Pascal VOC XML."""
    root = ET.fromstring(wheel.read(f"{DATA}{scene}.xml"))
    return [tuple(float(obj.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            for obj in root.iter("object")]


def tile_boxes(boxes, x0: int, y0: int) -> list[list[float]]:
    """COCO [x, y, w, h] in tile pixels of the crowns with at least half their area inside
    the tile at (x0, y0), clipped to it."""
    kept = []
    for bx0, by0, bx1, by1 in boxes:
        cx0, cy0 = max(bx0, x0), max(by0, y0)
        cx1, cy1 = min(bx1, x0 + TILE), min(by1, y0 + TILE)
        if cx1 > cx0 and cy1 > cy0 and (cx1 - cx0) * (cy1 - cy0) >= 0.5 * (bx1 - bx0) * (by1 - by0):
            kept.append([cx0 - x0, cy0 - y0, cx1 - cx0, cy1 - cy0])
    return kept


def write_split(wheel, out: Path, split: str, regions) -> tuple[int, int]:
    """Tiles of ``regions`` [(scene, first row, end row, stride)] into ``out/split/`` and
    ``out/annotations/split.json``; returns (tiles, boxes)."""
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for scene, top, bottom, stride in regions:
        picture = Image.open(io.BytesIO(wheel.read(f"{DATA}{scene}.png"))).convert("RGB")
        boxes = crown_boxes(wheel, scene)
        for y0 in range(top, bottom - TILE + 1, stride):
            for x0 in range(0, picture.width - TILE + 1, stride):
                kept = tile_boxes(boxes, x0, y0)
                if not kept:
                    continue
                image_id = len(images) + 1
                name = f"{scene}_{x0}_{y0}.png"
                picture.crop((x0, y0, x0 + TILE, y0 + TILE)).save(out / split / name)
                images.append({"id": image_id, "file_name": name, "width": TILE, "height": TILE})
                for box in kept:
                    annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                        "category_id": 1, "bbox": box, "area": box[2] * box[3],
                                        "iscrowd": 0})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "tree"}]}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "annotations" / f"{split}.json").write_text(json.dumps(data))
    return len(images), len(annotations)


def build(wheel_path: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        height = Image.open(io.BytesIO(wheel.read(f"{DATA}{LARGE}.png"))).height
        cut = (height * 3 // 4) // TILE * TILE  # the row where validation starts
        train = [(scene, 0, cut if scene == LARGE else SMALL_SCENE_ROWS, stride)
                 for scene, stride in TRAIN_SCENES]
        for split, regions in (("train", train), ("val", [(LARGE, cut, height, TILE)])):
            tiles, boxes = write_split(wheel, out, split, regions)
            print(f"{split}: {tiles} tiles, {boxes} boxes -> {out / split}")


def download_wheel(folder: str) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder,
                    WHEEL], check=True)
    return next(Path(folder).glob("deepforest-*.whl"))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        writable_folder(args.out, "--out")
    except OSError as err:
        return input_error(err)
    try:
        if args.wheel:
            build(Path(args.wheel), Path(args.out))
            return 0
        with tempfile.TemporaryDirectory() as folder:
            build(download_wheel(folder), Path(args.out))
    except (OSError, KeyError, zipfile.BadZipFile, subprocess.CalledProcessError,
            StopIteration, ET.ParseError) as err:
        return input_error(f"could not build the tree set: {err!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
