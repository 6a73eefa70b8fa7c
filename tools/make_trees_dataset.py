"""``python tools/make_trees_dataset.py ...`` runs ``python -m detr_irpe.tools.make_trees_dataset ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.make_trees_dataset import main

if __name__ == "__main__":
    sys.exit(main())
