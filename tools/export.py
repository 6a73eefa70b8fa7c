"""Export a checkpoint as one ONNX model: the whole detector with post-processing.

    python tools/export.py --checkpoint output/checkpoint_best.pth --format onnx \
        --size 800 1066 --out detr_800x1066.onnx
    python tools/export.py --checkpoint C --format onnx --size 640 640 --dynamic  # any batch size

The model takes float32 ``images`` (B, 3, H, W), RGB in [0, 1], resized to exactly
``--size`` H W, and returns ``boxes`` (B, Q, 4) absolute x0, y0, x1, y1 in pixels of that
H x W image, ``scores`` (B, Q) and ``labels`` (B, Q) (model labels; the checkpoint's
``label_to_category_id`` and ``category_names`` are in the model's metadata).  ONNX opset
18.  One file serves one image size (the iRPE bucket map is a constant of the graph);
``--dynamic`` frees the batch size only.  The weights are the checkpoint's EMA when it has
one.  Exit codes: 0 done, 1 error (one line names it), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detr_irpe.options import (
    INPUT_ERRORS,
    add_checkpoint_argument,
    add_trust_argument,
    input_error,
)

DEFAULT_SIZE = (800, 1066)  # DETR's evaluation size of a 4:3 (640 x 480) COCO image


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_argument(parser)
    parser.add_argument("--format", required=True, choices=("onnx",), help="output format")
    parser.add_argument("--size", type=int, nargs=2, default=DEFAULT_SIZE, metavar=("H", "W"),
                        help=f"input image height and width (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]})")
    parser.add_argument("--dynamic", action="store_true",
                        help="let the batch size vary (the image size stays --size)")
    parser.add_argument("--out", default=None,
                        help="output file (default: beside the checkpoint, <name>_<H>x<W>.onnx)")
    add_trust_argument(parser)
    args = parser.parse_args(argv)
    if min(args.size) < 32:
        parser.error(f"--size {args.size[0]} {args.size[1]}: both sides must be >= 32 pixels "
                     f"(the backbone's stride)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from detr_irpe.checkpoint import load_checkpoint
        from detr_irpe.files import writable_file
        from detr_irpe.inference.export import OPSET, export_onnx
        from detr_irpe.models.detr import build_detr

        h, w = args.size
        out = args.out or str(Path(args.checkpoint).with_suffix("")) + f"_{h}x{w}.onnx"
        writable_file(out, "--out")
        ckpt = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
        model, _, _ = build_detr(ckpt.config())
        model.load_state_dict(ckpt.inference_model, strict=True)
        metadata = {"label_to_category_id": ckpt.raw.get("label_to_category_id"),
                    "category_names": ckpt.raw.get("category_names"),
                    "weights": "ema" if ckpt.inference_model is not ckpt.model else "model"}
        path = export_onnx(model, out, (h, w), dynamic_batch=args.dynamic, metadata=metadata)
    except INPUT_ERRORS as err:
        return input_error(err)
    batch = "any batch size" if args.dynamic else "batch size 1"
    print(f"wrote {path} (ONNX opset {OPSET}): images (B, 3, {h}, {w}) RGB in [0, 1], "
          f"{batch}; only this image size is supported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
