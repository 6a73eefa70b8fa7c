"""Time COCO evaluation with each backend on a generated set of detections.

    python -m benchmarks.eval_benchmark --images 5000 --dets 100   # the figure in docs/benchmarks.md
    python -m benchmarks.speed --eval_images 5000 --eval_dets 100   # the same, from benchmark.py

``--images`` generated images of 640 x 480 with ``--dets`` detections each, scored by
every backend; the time is ``summarize()``, best of ``--reps``.  The set is described in
``benchmarks.coco_eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.coco_eval import print_report, time_backends


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="generated images")
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--reps", type=int, default=1, help="timed runs per backend (best kept)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.images < 1 or args.dets < 1:
        parser.error("--images and --dets must be >= 1")
    report = time_backends(args.images, args.dets, args.reps)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
