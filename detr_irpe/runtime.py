"""CPU settings that matter for speed, applied by the project itself.

- threads: torch uses one intra-op thread per core this process may run on
  (``os.sched_getaffinity``; ``--threads`` overrides);
- memory (huge pages, freed memory kept for reuse): ``detr_irpe/process_memory.py``,
  applied before torch is imported; from your own Python code, call its
  ``configure_memory()`` before ``import torch``;
- channels-last for the backbone only where it helps: CPU inference (no autograd) feeds
  the ResNet a channels-last input; training is slower in channels-last and keeps the
  contiguous format.

The figures: docs/benchmarks.md, "CPU settings applied by the project".
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_cpu(threads: int | None = None) -> dict:
    """Apply the CPU settings above; returns what was set."""
    n = threads or available_cores()
    torch.set_num_threads(n)
    return {"threads": n}
