"""The epochs and evaluations of a run: fixed by ``--epochs`` and ``--eval_every``, or
planned to fit ``--time_budget`` minutes on the machine the run is on.

With a budget the plan is made in the first epoch, once :data:`CALIBRATION_STEPS`
optimiser steps after :data:`SETTLE_STEPS` have been timed: the time left until the
deadline (counted from the start of the process), less what the last evaluation and the
end-of-run pictures need and a safety margin, divided by the time of an epoch.  The plan
is printed, and after every epoch it is made again from the epochs measured so far, so a
machine that slows down still ends in time (a changed plan is printed).  The learning-rate
schedule follows the planned number of steps (:class:`~detr_irpe.training.optimizer.LrFactor`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

SETTLE_STEPS = 5  # first steps left out of the measurement (allocations, worker start-up)
CALIBRATION_STEPS = 20  # steps timed before the first plan
EVALUATIONS = 4  # evaluations in a planned run, the last one after the last epoch
REPORT_SECONDS = 15.0  # the end: best checkpoint reloaded, curves and prediction pictures
MARGIN = 0.03  # of the budget, kept free against the machine's ups and downs
RAISE_SLACK = 0.25  # a re-plan adds an epoch only with this much of one to spare


def process_start() -> float:
    """The ``time.time()`` at which this process started (Linux: from /proc; elsewhere the
    first call)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _FIRST_CALL


_FIRST_CALL = time.time()


@dataclass
class Plan:
    """How many epochs the run trains and after which it evaluates: every ``eval_every``
    epochs, or, in a time-budgeted run, after each of ``eval_epochs``; always after the last."""

    epochs: int
    eval_every: int
    eval_epochs: list[int] | None = None

    def evaluates(self, epoch: int) -> bool:
        if epoch + 1 == self.epochs:
            return True
        if self.eval_epochs is not None:
            return epoch in self.eval_epochs
        return (epoch + 1) % self.eval_every == 0

    def to_dict(self) -> dict:
        extra = {} if self.eval_epochs is None else {"eval_epochs": list(self.eval_epochs)}
        return {"epochs": self.epochs, "eval_every": self.eval_every, **extra}


def spread_evaluations(past: list[int], current: int, epochs: int, count: int) -> list[int]:
    """``past`` (epochs already evaluated, all before ``current``) and ``count`` more,
    evenly spaced over epochs ``current`` .. ``epochs - 1``, the last on the last epoch."""
    span = epochs - current
    ahead = {current - 1 + math.ceil(i * span / count) for i in range(1, count + 1)}
    return sorted(set(past) | ahead)


class TimeBudget:
    """Plans a run to end by ``start + minutes``; see the module docstring.

    ``step_done()`` after every optimiser step, ``epoch_done(epoch)`` after every epoch's
    training (before the plan is asked whether to evaluate it) and ``evaluated(seconds)``
    after every evaluation update :attr:`plan` in place (and the learning-rate ``factor``'s
    total steps).  A re-plan that changes the number of epochs keeps the evaluations made
    and spreads the rest over the epochs left, so that an epoch planned as the last is not
    evaluated when the run has just been given another.  ``eval_images``: validation
    images, for the first estimate of an evaluation's time (``inference_share`` of a
    training step's time per image, measured later).
    """

    def __init__(self, minutes: float, start: float, steps_per_epoch: int, batch_size: int,
                 eval_images: int, factor, verbose: bool, agree=lambda epochs: epochs,
                 clock=time.time):
        self.deadline = start + 60 * minutes
        self.minutes, self.start = minutes, start
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.eval_images, self.factor, self.verbose = eval_images, factor, verbose
        self.agree = agree  # several processes: the main process's plan for all
        self.clock = clock
        self.plan = Plan(epochs=1, eval_every=1, eval_epochs=[0])
        self.steps = 0
        self.timer_start: float | None = None
        self.step_seconds: float | None = None
        self.eval_seconds: float | None = None
        self.evaluations = 0
        self.epoch_started = clock()
        self.train_seconds: list[float] = []  # per finished epoch, evaluations excluded

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == SETTLE_STEPS:
            self.timer_start = self.clock()
        elif self.steps == SETTLE_STEPS + CALIBRATION_STEPS and self.step_seconds is None:
            now = self.clock()
            self.step_seconds = (now - self.timer_start) / CALIBRATION_STEPS
            self._replan(self.steps / self.steps_per_epoch, now, first=True)

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds = seconds
        self.evaluations += 1
        self.epoch_started += seconds  # the epoch's training time leaves evaluations out

    def epoch_done(self, epoch: int) -> None:
        now = self.clock()
        self.train_seconds.append(now - self.epoch_started)
        self.epoch_started = now
        first = self.step_seconds is None  # an epoch shorter than the calibration
        recent = self.train_seconds[-3:]
        self.step_seconds = sum(recent) / len(recent) / self.steps_per_epoch
        self._replan(epoch + 1, now, first)

    def _eval_estimate(self) -> float:
        if self.eval_seconds is not None:
            return self.eval_seconds
        # an image's inference costs about a third of its training step, plus COCOeval
        return 2.0 + self.eval_images * self.step_seconds / self.batch_size / 3

    def _replan(self, epochs_done: float, now: float, first: bool) -> None:
        """``epochs_done``: finished epochs, with the part of the current one when the plan
        is made within an epoch."""
        evals_left = max(1, EVALUATIONS - self.evaluations)
        left = (self.deadline - now - MARGIN * 60 * self.minutes - REPORT_SECONDS
                - evals_left * self._eval_estimate())
        fits = epochs_done + max(left, 0) / (self.step_seconds * self.steps_per_epoch)
        old = self.plan.epochs
        if not first and old < fits < old + 1 + RAISE_SLACK:
            fits = old  # room for the plan, not for one more epoch: keep the plan steady
        epochs = self.agree(max(math.floor(fits), math.ceil(epochs_done), 1))
        if self.verbose and fits < epochs:
            print(f"note: --time_budget {self.minutes:g} leaves too little time for epoch "
                  f"{epochs - 1} at this speed; the run ends after it, about "
                  f"{(epochs - fits) * self.step_seconds * self.steps_per_epoch:.0f} s late",
                  flush=True)
        self.factor.total = epochs * self.steps_per_epoch
        if not first and epochs == old:
            return  # the same plan: its evaluations stay where they are
        self._place_evaluations(epochs, current=math.ceil(epochs_done) - 1, count=evals_left)
        if self.verbose:
            self._print(first, math.ceil(epochs_done), now)

    def _place_evaluations(self, epochs: int, current: int, count: int) -> None:
        """The evaluations already made stay; ``count`` more are spread over the epochs from
        ``current`` (the one just trained or in progress, not yet evaluated) to the end."""
        p = self.plan
        past = [e for e in p.eval_epochs if e < current]
        p.epochs, p.eval_every = epochs, max(1, math.ceil(epochs / EVALUATIONS))
        p.eval_epochs = spread_evaluations(past, current, epochs, count)

    def _print(self, first: bool, epochs_done: int, now: float) -> None:
        p = self.plan
        evals = [e for e in range(p.epochs) if p.evaluates(e)]
        end = time.strftime("%H:%M:%S", time.localtime(self.deadline))
        if first:
            print(f"time budget {self.minutes:g} min (until {end}): {now - self.start:.0f} s "
                  f"spent starting; {1 / self.step_seconds:.2f} steps/s measured -> "
                  f"{p.epochs} epochs of {self.steps_per_epoch} steps "
                  f"({p.epochs * self.steps_per_epoch} steps, about "
                  f"{p.epochs * self.steps_per_epoch * self.step_seconds / 60:.1f} min), "
                  f"evaluations after epochs {_listing(evals)} (counted from 0)", flush=True)
        else:
            print(f"time budget: re-planned after epoch {epochs_done - 1} at "
                  f"{1 / self.step_seconds:.2f} steps/s: {p.epochs} epochs in all, evaluations "
                  f"after epochs {_listing(evals)}", flush=True)


def _listing(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs))
