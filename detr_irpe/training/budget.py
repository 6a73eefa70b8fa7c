"""The epochs and evaluations of a run: fixed by ``--epochs`` and ``--eval_every``, or
planned to fit ``--time_budget`` minutes on the machine the run is on.

With a budget the plan is made in the first epoch, once :data:`CALIBRATION_STEPS`
optimiser steps after :data:`SETTLE_STEPS` have been timed: the time left until the
deadline (counted from the start of the process), less what the evaluations and the
end-of-run pictures need and a safety margin, divided by the time of a step.  The plan is
made in steps: the last epoch is cut short to the steps that fit (when at least
:data:`SHORTEST_LAST_EPOCH` of an epoch fits; fewer are left out).  The plan is printed,
and after every epoch it is made again from the epochs measured so far, so a machine that
slows down still ends in time (a plan with another number of epochs is printed).  The
learning-rate schedule follows the planned number of steps
(:class:`~detr_irpe.training.optimizer.LrFactor`).
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
FIT_SECONDS = 5.0  # the box-quality head's passes over its boxes, after their inference
MARGIN = 0.03  # of the budget, kept free against the machine's ups and downs
SHORTEST_LAST_EPOCH = 0.25  # the shortest last epoch, as a share of a whole one


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
    epochs, or, in a time-budgeted run, after each of ``eval_epochs``; always after the last.
    ``last_steps``: the optimiser steps of the last epoch when a time budget cuts it short
    (None: a whole epoch)."""

    epochs: int
    eval_every: int
    eval_epochs: list[int] | None = None
    last_steps: int | None = None

    def cut_at(self, epoch: int) -> int | None:
        """The optimiser steps of ``epoch`` when the plan cuts it short, else None."""
        return self.last_steps if epoch == self.epochs - 1 else None

    def steps_in(self, epoch: int, steps_per_epoch: int) -> int:
        """The optimiser steps the plan gives ``epoch``."""
        cut = self.cut_at(epoch)
        return steps_per_epoch if cut is None else cut

    def evaluates(self, epoch: int) -> bool:
        if epoch + 1 == self.epochs:
            return True
        if self.eval_epochs is not None:
            return epoch in self.eval_epochs
        return (epoch + 1) % self.eval_every == 0

    def to_dict(self) -> dict:
        extra = {} if self.eval_epochs is None else {"eval_epochs": list(self.eval_epochs)}
        if self.last_steps is not None:
            extra["last_steps"] = self.last_steps
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
    evaluated when the run has just been given another; one that changes only the last
    epoch's steps moves no evaluation.  ``eval_images``: validation images, for the first
    estimate of an evaluation's time (``inference_share`` of a training step's time per
    image, measured later).  ``fit_images``: the images a box-quality head is fitted on
    after the last epoch (0: none), whose time is kept free the same way.
    """

    def __init__(self, minutes: float, start: float, steps_per_epoch: int, batch_size: int,
                 eval_images: int, factor, verbose: bool, agree=lambda epochs: epochs,
                 clock=time.time, fit_images: int = 0):
        self.deadline = start + 60 * minutes
        self.minutes, self.start = minutes, start
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.eval_images, self.factor, self.verbose = eval_images, factor, verbose
        self.fit_images = fit_images
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
        self.train_steps: list[int] = []  # the optimiser steps of each finished epoch

    def step_done(self) -> None:
        self.steps += 1
        if self.steps == SETTLE_STEPS:
            self.timer_start = self.clock()
        elif self.steps == SETTLE_STEPS + CALIBRATION_STEPS and self.step_seconds is None:
            now = self.clock()
            self.step_seconds = (now - self.timer_start) / CALIBRATION_STEPS
            # the epoch in progress runs to its end: its loader is already made
            self._replan(self.steps, self.steps_per_epoch, now, first=True)

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds = seconds
        self.evaluations += 1
        self.epoch_started += seconds  # the epoch's training time leaves evaluations out

    def epoch_done(self, epoch: int) -> None:
        now = self.clock()
        self.train_seconds.append(now - self.epoch_started)
        self.train_steps.append(self.plan.steps_in(epoch, self.steps_per_epoch))
        self.epoch_started = now
        first = self.step_seconds is None  # an epoch shorter than the calibration
        self.step_seconds = sum(self.train_seconds[-3:]) / sum(self.train_steps[-3:])
        done = epoch * self.steps_per_epoch + self.train_steps[-1]
        self._replan(done, done, now, first)

    def _eval_estimate(self) -> float:
        if self.eval_seconds is not None:
            return self.eval_seconds
        return 2.0 + self._inference_seconds(self.eval_images)  # 2 s: COCOeval's fixed part

    def _inference_seconds(self, images: int) -> float:
        # an image's inference costs about a third of its training step
        return images * self.step_seconds / self.batch_size / 3

    def _fit_estimate(self) -> float:
        """The box-quality head's fit at the end: inference on its images, then
        ``FIT_SECONDS`` for the head's own passes."""
        return FIT_SECONDS + self._inference_seconds(self.fit_images) if self.fit_images else 0.0

    def _replan(self, steps_done: int, at_least: int, now: float, first: bool) -> None:
        """``steps_done``: optimiser steps trained; ``at_least``: the steps the plan must
        keep (those of the epochs finished or under way)."""
        spe = self.steps_per_epoch
        evals_left = max(1, EVALUATIONS - self.evaluations)
        left = (self.deadline - now - MARGIN * 60 * self.minutes - REPORT_SECONDS
                - evals_left * self._eval_estimate() - self._fit_estimate())
        fits = steps_done + max(left, 0) / self.step_seconds
        total = math.floor(fits)
        if total % spe < SHORTEST_LAST_EPOCH * spe:  # too short a last epoch: left out
            total -= total % spe
        total = max(total, at_least)
        if at_least % spe and total <= at_least - at_least % spe + spe:
            total = at_least  # a shortened last epoch is over: it cannot grow afterwards
        total = self.agree(total)
        epochs, last = -(-total // spe), total % spe or None
        if self.verbose and fits < total:
            print(f"note: --time_budget {self.minutes:g} leaves too little time for epoch "
                  f"{epochs - 1} at this speed; the run ends after it, about "
                  f"{(total - fits) * self.step_seconds:.0f} s late", flush=True)
        self.factor.total = total
        old = self.plan.epochs
        self.plan.last_steps = last
        if not first and epochs == old:
            return  # the same epochs: the evaluations stay where they are
        current = -(-steps_done // spe) - 1  # the epoch just trained or under way
        self._place_evaluations(epochs, current=current, count=evals_left)
        if self.verbose:
            self._print(first, current + 1, now)

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
        shortened = "" if p.last_steps is None else f" (the last one {p.last_steps} steps)"
        if first:
            print(f"time budget {self.minutes:g} min (until {end}): {now - self.start:.0f} s "
                  f"spent starting; {1 / self.step_seconds:.2f} steps/s measured -> "
                  f"{p.epochs} epochs of {self.steps_per_epoch} steps{shortened}: "
                  f"{self.factor.total} steps, about "
                  f"{self.factor.total * self.step_seconds / 60:.1f} min; "
                  f"evaluations after epochs {_listing(evals)} (counted from 0)", flush=True)
        else:
            print(f"time budget: re-planned after epoch {epochs_done - 1} at "
                  f"{1 / self.step_seconds:.2f} steps/s: {p.epochs} epochs in all{shortened}, "
                  f"evaluations after epochs {_listing(evals)}", flush=True)


def _listing(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs))
