"""Generate the synthetic shapes detection dataset (COCO format) used by the CPU demo.

    python tools/make_shapes_dataset.py --out datasets/shapes --num_train 1000 --num_val 100 --image_size 128

Skips the work when ``--out`` already holds a dataset made with the same arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

from detr_irpe.data.shapes import ShapesParams, generate_shapes_dataset
from detr_irpe.files import writable_folder
from detr_irpe.options import INPUT_ERRORS, input_error


def parse_args(argv=None) -> argparse.Namespace:
    defaults = ShapesParams()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="datasets/shapes", help="output folder")
    parser.add_argument("--num_train", type=int, default=defaults.num_train)
    parser.add_argument("--num_val", type=int, default=defaults.num_val)
    parser.add_argument(
        "--image_size",
        type=int,
        default=defaults.image_size,
        help="upper bound of each image side; sides are uniform in [0.75, 1] x this",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        writable_folder(args.out, "--out")
        made = generate_shapes_dataset(
            args.out, args.num_train, args.num_val, args.image_size, args.seed, force=args.force
        )
    except INPUT_ERRORS as err:
        return input_error(err)
    if made:
        print(f"wrote shapes dataset to {args.out} in {time.perf_counter() - start:.1f}s")
    else:
        print(f"shapes dataset in {args.out} is up to date; nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
