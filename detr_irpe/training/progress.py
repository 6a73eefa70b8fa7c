"""What a training or evaluation loop reports as it runs: periodic progress lines
(:class:`Progress`) and the running means of its logged figures (:class:`Averages`)."""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch


class Progress:
    """Periodic progress lines: iterations, rate, ETA and running averages.

    On a terminal a line is printed every ``every`` iterations; when the output is not a
    terminal (a log file, a cluster job) at most one line per ``min_seconds``.
    """

    def __init__(self, header: str, total: int, every: int = 10, min_seconds: float = 30.0,
                 enabled: bool = True):
        self.header, self.total, self.every = header, total, max(1, every)
        self.min_seconds = 0.0 if sys.stdout.isatty() else min_seconds
        self.enabled = enabled
        self.start = self.last = time.time()

    def update(self, step: int, values) -> None:
        """``values()``: the named figures to show; called only when a line is printed
        (reading them may wait for the device)."""
        now = time.time()
        done = step + 1
        due = done % self.every == 0 and now - self.last >= self.min_seconds
        if not self.enabled or not (due or done == self.total):
            return
        self.last = now
        values = values()
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate
        shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        print(f"{self.header} [{done}/{self.total}] {rate:.2f} it/s  eta {eta:.0f}s  {shown}",
              flush=True)


class Averages:
    """Running means of named scalars: floats, or 0-dim tensors, which are summed where they
    are (in float64) and read by :meth:`means` in one transfer, not one per value."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.tensor_sums: dict[tuple[str, ...], torch.Tensor] = {}

    def add(self, values: dict) -> None:
        tensors = {k: v.detach() for k, v in values.items() if torch.is_tensor(v)}
        for k, v in values.items():
            self.counts[k] += 1
            if k not in tensors:
                self.sums[k] += float(v)
        if tensors:
            names = tuple(tensors)
            row = torch.stack([v.float() for v in tensors.values()]).double()
            before = self.tensor_sums.get(names)
            self.tensor_sums[names] = row if before is None else before + row

    def means(self) -> dict[str, float]:
        sums = dict(self.sums)
        for names, row in self.tensor_sums.items():
            for k, v in zip(names, row.tolist()):
                sums[k] = sums.get(k, 0.0) + v
        return {k: sums[k] / self.counts[k] for k in sums}
