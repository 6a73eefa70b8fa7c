"""Count the ATen ops and host syncs of one DETR training step (forward, matching,
losses, backward, clipping, fused AdamW), on the CPU.

    python -m benchmarks.count_ops                 # DETR-R50 defaults, 2 images of 96 x 128
    python -m benchmarks.count_ops --enc_rpe2d rpe-2.0-product-ctx-1-k --size 64 96

The second step is counted (the first creates the optimiser state).  A host sync is a
read of a device value by the host (see ``benchmarks.dispatch``); each one is
listed with the line that caused it.  Counts, not times: they do not depend on the load
of the machine.
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.dispatch import count_dispatch
from benchmarks.workload import build_model, train_step_fn


def count_step(enc: str = "", size: tuple[int, int] = (96, 128)):
    """The :class:`~benchmarks.dispatch.DispatchCounts` of the second training
    step of DETR-R50 (random init, ``enc_rpe2d=enc``) on two images of ``size``."""
    device = torch.device("cpu")
    model, criterion, _ = build_model(enc, device)
    step = train_step_fn(model, criterion, device, sizes=[size, size])
    step()
    return count_dispatch(step)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--enc_rpe2d", default="", help="iRPE of the encoder (default: none)")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--top", type=int, default=15, help="the most frequent ops to list")
    args = parser.parse_args(argv)
    counts = count_step(args.enc_rpe2d, tuple(args.size))
    print(f"ops {counts.ops}  host syncs {counts.syncs}")
    for name, n in counts.by_op.most_common(args.top):
        print(f"  {n:6d}  {name}")
    for site, n in sorted(counts.sync_sites.items()):
        print(f"  sync x{n}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
