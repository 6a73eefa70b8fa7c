"""Timing side by side: every variant once per round, in a rotating order, and ratios
taken within a round, so that background load affects the variants alike."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, reps: int, device) -> dict[str, list[float]]:
    """Run every fn once to warm up, then ``reps`` rounds of all of them in turn.  The
    order rotates from round to round so that no variant always runs after the same one."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    items = list(fns.items())
    for r in range(reps):
        k = r % len(items)
        for name, fn in items[k:] + items[:k]:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], base: str = "plain") -> dict:
    """Median time of every variant and its ratio to ``base``: the median over rounds of
    the ratio within the round (variants of one round run back to back, so slow drifts of
    the machine cancel)."""
    out = {}
    for name, t in times.items():
        paired = [a / b for a, b in zip(t, times[base])]
        out[name] = {"median_s": statistics.median(t), "ratio": statistics.median(paired),
                     "all_s": t}
    return out


def matmul_peak(device) -> float:
    """Best FLOP/s of a large float32 matrix product on this device."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = 0.0
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best
