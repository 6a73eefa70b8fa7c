"""Plot training curves (losses, class error, box AP/AP50 per epoch) of one or more runs.

    python tools/plot_logs.py output/irpe output/plain --labels iRPE-K DETR --out curves.png

Each argument is an ``--output_dir`` of ``main.py`` (or its ``log.txt``).  Exit codes: 0 done,
1 error (a missing or unreadable log, labels that do not match the runs; one line names
it), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys

from detr_irpe.files import writable_file
from detr_irpe.options import INPUT_ERRORS, input_error
from detr_irpe.pictures.curves import plot_logs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="output folders (or log.txt files)")
    parser.add_argument("--out", default="curves.png", help="PNG to write (default curves.png)")
    parser.add_argument("--labels", nargs="+", default=None, help="legend names, one per run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        writable_file(args.out, "--out")
        out = plot_logs(args.runs, args.out, args.labels)
    except INPUT_ERRORS as err:
        return input_error(err)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
