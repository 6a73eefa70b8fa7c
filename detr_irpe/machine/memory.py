"""How the process takes memory from the operating system: the one place that sets it.

One setting, applied by :func:`configure_memory`, which ``main.py`` and the tools call
first thing in their ``main``, before torch is imported: freed memory is kept for reuse
(glibc's ``mallopt``: no separate mapping per large block, no trimming of the heap).
PyTorch's CPU allocator keeps no cache, so by default every large tensor of a step (an
activation, an L x L attention buffer) is a new mapping that the kernel faults in and
zeroes, step after step.  The price: the process holds on to its peak heap until it
exits, instead of giving freed memory back.

Transparent huge pages for PyTorch's allocator (``THP_MEM_ALLOC_ENABLE=1``) are left at
PyTorch's default, off: with freed memory kept they changed the DETR-R50 step by nothing
measurable, and they made the small CPU presets' steps about a quarter slower.

Figures: docs/benchmarks.md, "CPU settings applied by the project".  A value the user
already set in the environment wins (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``;
for instance ``MALLOC_MMAP_MAX_=65536`` restores glibc's default; ``THP_MEM_ALLOC_ENABLE=1``
is read by PyTorch itself).  Elsewhere than on Linux with glibc the setting does nothing.
This module does not import torch.
"""

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters and the environment variables that set them at start-up.
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
GLIBC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def configure_memory() -> dict[str, str]:
    """Apply the setting; returns what it is now ("user" where the environment set it)."""
    return {"keep_freed_memory": _keep_freed_memory()}


def _keep_freed_memory() -> str:
    if any(v in os.environ for v in GLIBC_VARIABLES):
        return "user"
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc
        mallopt = None
    if mallopt is None:
        return "unavailable"
    # -1: never trim (mallopt(3)).
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
    return "on" if ok else "refused"
