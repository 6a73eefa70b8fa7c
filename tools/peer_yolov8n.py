"""Train the peer, Ultralytics YOLOv8n, from scratch on a COCO-format set for a fixed time,
and write its detections on the validation images as a COCO results file.

    make peer DATASET=datasets/trees_dev MINUTES=10     # its own venv, .peer-venv
    python tools/score.py --json datasets/trees_dev/annotations/val.json \
        --detections output/peer/detections.json

This runs in a venv of its own (the Makefile builds it); Ultralytics is not a dependency
of this project and this file imports nothing of it.  The settings are those of our side-by-
side runs (docs/scratch_training.md): ``yolov8n.yaml`` from random init, 256-px images,
batches of 16, the CPU, no validation during training, the last weights; at prediction a
score threshold of 0.001, its NMS at IoU 0.7 and at most 100 boxes per image (COCO's
``maxDets``).  The dataset is read as ``tools/make_trees_dataset.py`` writes it:
``annotations/{train,val}.json`` and the images in ``train/`` and ``val/``; for another
layout (the shapes' ``annotations/instances_train.json``, say) give ``--train_json``,
``--train_images``, ``--val_json`` and ``--val_images`` and run this file directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, required=True,
                        help="folder with annotations/train.json, annotations/val.json, "
                             "train/ and val/")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the YOLO copy of the labels, the run and "
                             "detections.json")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="training time (Ultralytics' `time`, in hours / 60)")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    for split in ("train", "val"):
        parser.add_argument(f"--{split}_json", type=Path, default=None)
        parser.add_argument(f"--{split}_images", type=Path, default=None)
    return parser.parse_args(argv)


def yolo_split(coco: dict, images: Path, out: Path, index: dict[int, int]) -> Path:
    """Write ``out/images/*`` (links to the images) and ``out/labels/*.txt`` (one line
    ``class cx cy w h`` per box, normalised) for one COCO split (its parsed JSON); returns
    the images folder."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    boxes: dict[int, list[str]] = {img["id"]: [] for img in coco["images"]}
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        w_img, h_img = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        boxes[ann["image_id"]].append(
            f"{index[ann['category_id']]} {(x + w / 2) / w_img:.6f} {(y + h / 2) / h_img:.6f} "
            f"{w / w_img:.6f} {h / h_img:.6f}")
    for img in coco["images"]:
        name = Path(img["file_name"])
        link = out / "images" / name.name
        if not link.exists():
            link.symlink_to((images / name).resolve())
        (out / "labels" / f"{name.stem}.txt").write_text("\n".join(boxes[img["id"]]))
    return out / "images"


def detections(model, coco: dict, images: Path, imgsz: int, classes: list[int]) -> list:
    """The model's boxes on every image of a COCO split (its parsed JSON), as COCO results."""
    results = []
    for img in coco["images"]:
        pred = model.predict(str(images / img["file_name"]), imgsz=imgsz, conf=0.001, iou=0.7,
                             max_det=100, device="cpu", verbose=False)[0]
        for (x0, y0, x1, y1), score, cls in zip(pred.boxes.xyxy.tolist(),
                                                pred.boxes.conf.tolist(),
                                                pred.boxes.cls.tolist()):
            results.append({"image_id": img["id"], "category_id": classes[int(cls)],
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # the peer's venv only

    splits = {}  # split: (its parsed COCO JSON, its images folder)
    for split in ("train", "val"):
        path = getattr(args, f"{split}_json") or args.dataset / "annotations" / f"{split}.json"
        splits[split] = (json.loads(path.read_text()),
                         getattr(args, f"{split}_images") or args.dataset / split)
    categories = splits["train"][0]["categories"]
    classes = sorted(c["id"] for c in categories)
    index = {c: i for i, c in enumerate(classes)}
    names = {c["id"]: c["name"] for c in categories}
    args.out.mkdir(parents=True, exist_ok=True)
    folders = {split: yolo_split(*splits[split], args.out / "yolo" / split, index)
               for split in splits}
    data = args.out / "data.yaml"
    data.write_text(f"train: {folders['train'].resolve()}\nval: {folders['val'].resolve()}\n"
                    f"names:\n" + "".join(f"  {i}: {names[c]}\n" for i, c in enumerate(classes)))
    model = YOLO("yolov8n.yaml")
    model.train(data=str(data), imgsz=args.imgsz, batch=args.batch, time=args.minutes / 60,
                device="cpu", pretrained=False, val=False, workers=2, seed=args.seed,
                project=str(args.out.resolve()), name="run", exist_ok=True, plots=False)
    trained = YOLO(str(args.out / "run" / "weights" / "last.pt"))
    found = detections(trained, *splits["val"], args.imgsz, classes)
    (args.out / "detections.json").write_text(json.dumps(found))
    print(f"{len(found)} detections on {len(splits['val'][0]['images'])} images -> "
          f"{args.out / 'detections.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
