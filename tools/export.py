"""``python tools/export.py ...`` runs ``python -m detr_irpe.tools.export ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
