"""Draw the learned iRPE tables of every encoder layer of a checkpoint.

    python tools/visualize_rpe.py --checkpoint output/checkpoint.pth --out rpe.png

Product method: a heat map per layer (per head when heads are not shared) of each
bucket's table norm over head_dim (ctx) or bias value (bias), row offset bucket on the y
axis, column offset bucket on the x axis, zero offset in the centre.  euc, quant and cross:
a curve over the buckets per table.  Exit codes: 0 done, 1 error (a missing or unreadable
checkpoint, one without iRPE tables; one line names it), 2 bad command line.
"""

from __future__ import annotations

import argparse
import sys

from detr_irpe.files import writable_file
from detr_irpe.options import (
    INPUT_ERRORS,
    add_checkpoint_argument,
    add_trust_argument,
    input_error,
)
from detr_irpe.pictures.irpe_tables import plot_irpe_tables


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_argument(parser)
    parser.add_argument("--out", default="rpe.png", help="PNG to write (default rpe.png)")
    add_trust_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        writable_file(args.out, "--out")
        out = plot_irpe_tables(args.checkpoint, args.out, trust=args.trust_checkpoint)
    except INPUT_ERRORS as err:
        return input_error(err)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
