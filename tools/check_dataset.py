"""Check a COCO-format dataset (annotation JSON + image folder or zip) before training.

    python tools/check_dataset.py --json datasets/shapes/annotations/instances_train.json \\
        --images datasets/shapes/train

Prints every problem with its count, file, first ids and what to do (see
docs/dataset_errors.md). Exit code 0 when the dataset can be loaded (possibly with repairs),
1 when it has errors.
"""

from __future__ import annotations

import argparse
import sys

from detr_irpe.data.checker.checks import check_dataset


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="COCO instances JSON")
    parser.add_argument("--images", required=True, help="image folder or .zip")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="read only image headers (of at most 5000 images), as done when a dataset is "
        "loaded; the default decodes every image, which finds truncated files",
    )
    parser.add_argument(
        "--skip_unreadable",
        action="store_true",
        help="report missing, unreadable or truncated images as skipped instead of as errors",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = check_dataset(args.json, args.images, quick=args.quick, skip_unreadable=args.skip_unreadable)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
