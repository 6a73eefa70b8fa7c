"""``python tools/plot_logs.py ...`` runs ``python -m detr_irpe.tools.plot_logs ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.plot_logs import main

if __name__ == "__main__":
    sys.exit(main())
