"""``python tools/visualize_rpe.py ...`` runs ``python -m detr_irpe.tools.visualize_rpe ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.visualize_rpe import main

if __name__ == "__main__":
    sys.exit(main())
