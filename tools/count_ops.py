"""``python tools/count_ops.py ...`` runs ``python -m detr_irpe.tools.count_ops ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.count_ops import main

if __name__ == "__main__":
    sys.exit(main())
