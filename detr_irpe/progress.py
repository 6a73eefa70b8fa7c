"""Progress lines of a long loop (a training epoch, an evaluation pass, prediction over a
folder): items done, rate, time left and the figures of the moment."""

from __future__ import annotations

import time
from collections.abc import Callable


def _print(line: str) -> None:
    print(line, flush=True)


class Progress:
    """``header [done/total] rate unit/s  eta Ns  figures``: a line every ``every`` items, at
    most one per ``min_seconds``, and always after the last item (with ``first``, after the
    first update too)."""

    def __init__(self, header: str, total: int, every: int = 1, min_seconds: float = 0.0,
                 unit: str = "it", enabled: bool = True, first: bool = False,
                 log: Callable[[str], None] = _print):
        self.header, self.total, self.every = header, total, max(1, every)
        self.min_seconds, self.unit, self.enabled, self.log = min_seconds, unit, enabled, log
        self.first = first
        self.start = self.last = time.perf_counter()

    def update(self, done: int, values: Callable[[], dict] | None = None) -> None:
        """``done`` items so far; ``values()``: the named figures to show, called only when
        a line is printed (reading them may wait for the device)."""
        now = time.perf_counter()
        due = done % self.every == 0 and now - self.last >= self.min_seconds
        if not self.enabled or not (due or done == self.total or self.first):
            return
        self.last, self.first = now, False
        rate = done / max(now - self.start, 1e-9)
        line = (f"{self.header} [{done}/{self.total}] {rate:.2f} {self.unit}/s  "
                f"eta {(self.total - done) / rate:.0f}s")
        shown = "  ".join(f"{k} {v:.4f}" for k, v in (values() if values else {}).items())
        self.log(f"{line}  {shown}" if shown else line)

    @property
    def seconds(self) -> float:
        """Seconds since the loop started."""
        return time.perf_counter() - self.start
