"""``python tools/gpu_check.py ...`` runs ``python -m detr_irpe.tools.gpu_check ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
