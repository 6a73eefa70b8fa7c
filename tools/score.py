"""``python tools/score.py ...`` runs ``python -m detr_irpe.tools.score ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.score import main

if __name__ == "__main__":
    sys.exit(main())
