"""Stopping a run on SIGTERM/SIGINT without losing it.

``timeout``, ``kill -- -PGID``, SLURM preemption and Ctrl-C signal the whole process
group, data-loader workers included.  The main process turns the first signal into a
request that training honours at the next step (checkpoint, exit code 75); a second
signal stops at once.  Data-loader workers ignore both: the main process shuts them down
as usual, so they neither die under the current step nor print anything (the loader that
sets this up is ``detr_irpe.training.loaders.DataLoader``).

Because workers ignore SIGTERM, the way multiprocessing ends daemonic children at exit
(SIGTERM, then wait) would wait forever for a worker that was not shut down, e.g. after a
worker's error: such workers are killed at exit instead.  A worker's error reaches the main
process as one line (the worker's own message), not torch's copy of its traceback.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal

import torch

from detr_irpe.machine.distributed import any_process

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Turns SIGTERM/SIGINT into a request honoured at the next step boundary; all
    processes agree (:func:`~detr_irpe.machine.distributed.any_process`), so that they stop at the
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
def stop_signals_blocked():
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


def kill_workers_left() -> None:
    """Kill the daemonic child processes still running (data-loader workers, which ignore
    the SIGTERM that multiprocessing would send them at exit).  torch's SIGCHLD handler,
    which reports a worker's death as an error, is put aside first."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)
