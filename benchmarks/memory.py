"""Peak memory (bytes) of one training step, measured in a fresh process.

    python -m benchmarks.memory ENC DEVICE   # prints the bytes; ENC "" is plain

On CPU: the process's high-water resident set (``VmHWM``).  Not ``ru_maxrss``: Linux
carries that over from the parent across fork + exec, so a child started by the (large)
benchmark process would report the parent's size.  On GPU:
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.workload import build_model, train_step_fn
from detr_irpe.machine.cpu import configure_cpu
from detr_irpe.machine.memory import configure_memory

# The repository root: this module runs itself as ``python -m benchmarks.memory`` from there.
ROOT = Path(__file__).resolve().parents[1]


def memory_of_step(enc: str, device: str) -> float:
    """Run this module in a fresh Python process; its figure for ``enc`` on ``device``."""
    cmd = [sys.executable, "-m", "benchmarks.memory", enc, device]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return float(res.stdout.strip().splitlines()[-1])


def _high_water_rss() -> int:
    with open("/proc/self/status") as status:
        return [int(x.split()[1]) * 1024 for x in status if x.startswith("VmHWM")][0]


def main(argv=None) -> int:
    enc, device = sys.argv[1:] if argv is None else argv
    configure_memory()  # what main.py applies
    configure_cpu()
    dev = torch.device(device)
    model, criterion, _ = build_model(enc, dev)
    step = train_step_fn(model, criterion, dev)
    step()
    step()
    print(torch.cuda.max_memory_allocated() if dev.type == "cuda" else _high_water_rss())
    return 0


if __name__ == "__main__":
    sys.exit(main())
