"""``python tools/compare_official.py ...`` runs ``python -m detr_irpe.tools.compare_official
...``: the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.compare_official import main

if __name__ == "__main__":
    sys.exit(main())
