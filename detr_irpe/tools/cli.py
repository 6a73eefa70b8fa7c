"""What the tools' command lines share: the checkpoint flags, and the one-line error with
exit code 1 for a problem with the inputs (2 stays argparse's, for a bad command line;
``detr_irpe.options`` names the codes)."""

from __future__ import annotations

import argparse
import sys

from detr_irpe.options import EXIT_ERROR


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (ours or official)")


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="allow arbitrary pickles in --checkpoint (only for trusted files)")


def input_error(err: Exception) -> int:
    """Print ``error: <err>`` as one line on stderr; the exit code of an input error."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    return EXIT_ERROR
