"""``python tools/check_dataset.py ...`` runs ``python -m detr_irpe.tools.check_dataset ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
