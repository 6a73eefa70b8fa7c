"""Transparent huge pages for PyTorch's CPU allocator, the one place that turns them on.

PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once, at its first CPU allocation, so a program
must call :func:`enable_huge_pages` before it imports torch: ``main.py`` and the tools in
``detr_irpe.tools`` do so first thing in their ``main`` (``detr_irpe/runtime.py`` says what
it buys).  A value already in the environment wins.  This module does not import torch.
"""

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> None:
    os.environ.setdefault(VARIABLE, "1")
