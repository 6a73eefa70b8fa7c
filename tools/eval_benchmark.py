"""``python tools/eval_benchmark.py ...`` runs ``python -m detr_irpe.tools.eval_benchmark ...``:
the tool is that module (its docstring and ``--help`` say what it does)."""

import sys

from detr_irpe.tools.eval_benchmark import main

if __name__ == "__main__":
    sys.exit(main())
