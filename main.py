"""Train and evaluate DETR with iRPE.  See README.md, or `python main.py --help`.

    torchrun --nproc_per_node=8 main.py --lr_drop 100 --epochs 150 --coco_path ./coco_data \
        --enc_rpe2d rpe-2.0-product-ctx-1-k --output_dir ./output
    python main.py --eval --resume checkpoint.pth --coco_path ./coco_data

Exit codes: 0 done, 1 error, 2 bad command line, 75 stopped by SIGTERM/SIGINT with the
checkpoint saved (``detr_irpe.options``).  The command line is parsed before torch is
imported, so ``--help`` and argument errors answer at once.
"""

import os
import sys

from detr_irpe.machine.memory import configure_memory
from detr_irpe.options import EXIT_ERROR, EXIT_INTERRUPTED, INPUT_ERRORS, parse_args


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_memory()  # before torch is imported
    from detr_irpe.training.loop import TrainingInterrupted
    from detr_irpe.training.recipe import run

    try:
        run(args)
    except TrainingInterrupted:
        return EXIT_INTERRUPTED  # checkpoint saved: run again with --resume auto
    return 0


def cli() -> int:
    """``main`` for the shell: a problem with the inputs is one message, not a traceback
    (set DETR_IRPE_TRACEBACK=1 to see the traceback)."""
    try:
        return main()
    except INPUT_ERRORS as err:
        if os.environ.get("DETR_IRPE_TRACEBACK"):
            raise
        print(f"main.py: error: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(cli())
