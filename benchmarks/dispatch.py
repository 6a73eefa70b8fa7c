"""Counting what a piece of code asks of the device: dispatched ATen ops and host syncs.

Counted on the CPU, for what the same code would do on a GPU.  A *host sync* is a point
where the host must wait for the device's queue to drain because it reads a value
computed there:

- ``aten._local_scalar_dense`` (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``);
- ops whose output size depends on the values (``nonzero``, ``masked_select``,
  ``unique``, ...): the host needs the size before it can allocate;
- ``Tensor.tolist()`` and ``Tensor.numpy()``: on a CPU tensor they dispatch nothing (and
  ``.cpu()`` is a no-op), but on a GPU they come right after a device-to-host copy, so
  each one is counted as that copy.  Reading one host copy many times (slicing the numpy
  array) is one sync, as on a GPU.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ATen ops (overload packets) that make the host wait for the device.
SYNC_OPS = frozenset({
    "_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
    "unique_consecutive", "equal", "is_nonzero",
})
# Tensor methods that read a device tensor's values on the host.
HOST_READS = frozenset({"tolist", "numpy"})


@dataclass
class DispatchCounts:
    """What one run dispatched: ``ops`` (every ATen op, forward and backward), ``syncs``
    (host syncs, see the module docstring), each by name, and ``sync_sites``: for each
    sync, the innermost line of this package that caused it (``file:line``)."""

    ops: int = 0
    syncs: int = 0
    by_op: Counter = field(default_factory=Counter)
    syncs_by_op: Counter = field(default_factory=Counter)
    sync_sites: Counter = field(default_factory=Counter)

    def add_sync(self, name: str) -> None:
        self.syncs += 1
        self.syncs_by_op[name] += 1
        self.sync_sites[_package_site()] += 1


def _package_site() -> str:
    """``file:line`` of the innermost stack frame inside ``detr_irpe`` (else the caller's)."""
    frames = traceback.extract_stack()[:-3]
    ours = [f for f in frames if "detr_irpe" in f.filename and "benchmark/dispatch" not in f.filename]
    frame = (ours or frames)[-1]
    return f"{frame.filename.rsplit('detr_irpe/', 1)[-1]}:{frame.lineno}"


class _OpCounter(TorchDispatchMode):
    def __init__(self, counts: DispatchCounts):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts.ops += 1
        self.counts.by_op[name] += 1
        if name in SYNC_OPS:
            self.counts.add_sync(name)
        return func(*args, **(kwargs or {}))


class _HostReadCounter(TorchFunctionMode):
    def __init__(self, counts: DispatchCounts):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.counts.add_sync(name)
        return func(*args, **(kwargs or {}))


def count_dispatch(fn, *args, **kwargs) -> tuple[object, DispatchCounts]:
    """``(fn(*args, **kwargs), what it dispatched)``.  The backward pass is counted too
    when ``fn`` calls it (on the CPU it runs in the calling thread)."""
    counts = DispatchCounts()
    with _HostReadCounter(counts), _OpCounter(counts):
        result = fn(*args, **kwargs)
    return result, counts

