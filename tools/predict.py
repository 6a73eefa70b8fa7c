"""Detect objects in images with a trained checkpoint; optionally draw the detections.

    python tools/predict.py --checkpoint output/checkpoint_best.pth --images photos/ \
        --out output/predictions --render
    python tools/predict.py --checkpoint detr-r50.pth --images "data/**/*.jpg" --threshold 0.7 \
        --out preds

Writes ``OUT/predictions.json`` (COCO results format: ``image_id``, ``category_id`` as the
original category id, ``bbox`` absolute [x, y, width, height], ``score``),
``OUT/images.json`` ([{id, file_name, width, height}]; ``id`` is the index in the sorted
file list, or the id in ``--coco_json``) and, with ``--render``, ``OUT/<stem>.png`` per image.
Images are resized as the checkpoint's evaluation did, unless ``--size``/``--max_size`` say
otherwise.  Exit codes: 0 done, 1 error (one line names it), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys

from detr_irpe.inference.settings import BATCH_SIZE, THRESHOLD, check_prediction
from detr_irpe.machine.memory import configure_memory
from detr_irpe.options import (
    INPUT_ERRORS,
    add_checkpoint_argument,
    add_trust_argument,
    input_error,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_argument(parser)
    parser.add_argument("--images", required=True,
                        help="an image file, a folder (its image files) or a quoted glob")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"keep detections with score >= this (default {THRESHOLD})")
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE,
                        help=f"images per forward pass (default {BATCH_SIZE})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    parser.add_argument("--size", type=int, default=None,
                        help="shorter image side (default: the checkpoint's evaluation size, "
                             "--val_size of its run; 800 for official checkpoints)")
    parser.add_argument("--max_size", type=int, default=None,
                        help="longer image side at most (default: the checkpoint's; 1333 for "
                             "official checkpoints)")
    parser.add_argument("--render", action="store_true", help="write OUT/<stem>.png with boxes")
    parser.add_argument("--compile", action="store_true",
                        help="compile the ResNet for inference (torch.compile, weights frozen): "
                             "faster per image, but each new image size compiles once "
                             "(seconds to a minute); for many images of a few sizes")
    parser.add_argument("--strict", action="store_true",
                        help="stop at an unreadable image instead of skipping it")
    parser.add_argument("--coco_json", default=None,
                        help="take image ids from this COCO file (matched by file_name)")
    parser.add_argument("--no_exif_transpose", action="store_true",
                        help="ignore the EXIF orientation tag of photos")
    add_trust_argument(parser)
    args = parser.parse_args(argv)
    try:
        check_prediction(args.threshold, args.batch_size)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_memory()  # before torch is imported
    from detr_irpe.files import writable_folder
    from detr_irpe.inference.detector import Detector
    from detr_irpe.inference.predict import find_images, predict_to_folder

    try:
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        files, root = find_images(args.images)
        writable_folder(args.out, "--out")
        detector = Detector.from_checkpoint(
            args.checkpoint, device=device, size=args.size, max_size=args.max_size,
            trust=args.trust_checkpoint, exif_transpose=not args.no_exif_transpose,
        )
        if args.compile:
            detector.compile()
        print(f"{len(files)} image(s) from {args.images}; checkpoint {args.checkpoint} "
              f"on {detector.device}, resized to shorter side {detector.size} (longer at most "
              f"{detector.max_size})", flush=True)
        predict_to_folder(
            detector, files, args.out, threshold=args.threshold, batch_size=args.batch_size,
            render=args.render, strict=args.strict, root=root, coco_json=args.coco_json,
        )
    except INPUT_ERRORS as err:
        return input_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
