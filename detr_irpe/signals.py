"""Stopping a run on SIGTERM/SIGINT without losing it.

``timeout``, ``kill -- -PGID``, SLURM preemption and Ctrl-C signal the whole process
group, data-loader workers included.  The main process turns the first signal into a
request that training honours at the next step (checkpoint, exit code 75); a second
signal stops at once.  Data-loader workers ignore both: the main process shuts them down
as usual, so they neither die under the current step nor print anything.
"""

from __future__ import annotations

import contextlib
import signal

import torch

from .distributed import any_process

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Turns SIGTERM/SIGINT into a request honoured at the next step boundary; all
    processes agree (:func:`~detr_irpe.distributed.any_process`), so that they stop at the
    same step.  Only a ``verbose`` process prints (one line, at the first signal)."""

    def __init__(self, device: torch.device, verbose: bool = True):
        self.requested = False
        self.device = device  # where the all-reduce runs (NCCL needs a CUDA tensor)
        self.verbose = verbose
        self._previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:  # a second signal: stop now
            raise KeyboardInterrupt
        self.requested = True
        if self.verbose:
            print(f"received {signal.Signals(signum).name}: saving a checkpoint at the next "
                  f"step, then exiting with code 75 (a second signal stops at once)", flush=True)

    def __call__(self) -> bool:
        return any_process(self.requested, self.device)


@contextlib.contextmanager
def _stop_signals_blocked():
    """Hold SIGTERM/SIGINT back (they arrive when the block ends) where POSIX allows it."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def leave_signals_to_main(worker_id: int) -> None:
    """``worker_init_fn``: a worker ignores SIGTERM/SIGINT (they are for the main process)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class DataLoader(torch.utils.data.DataLoader):
    """``torch.utils.data.DataLoader`` whose workers leave SIGTERM/SIGINT to the main
    process.  Workers start with both signals blocked and ignore them before unblocking,
    so a signal that arrives while they start reaches the main process alone."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=leave_signals_to_main, **kwargs)

    def __iter__(self):
        with _stop_signals_blocked():
            return super().__iter__()
