"""Continuing a run: what a checkpoint fixes about the run, and the training state that is
saved after every epoch (or at a stop) and restored on ``--resume``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from detr_irpe.checkpoint import Checkpoint
from detr_irpe.machine.distributed import DistInfo, all_gather_lists
from detr_irpe.models.dense_head import join_state, split_state
from detr_irpe.training.budget import Plan
from detr_irpe.training.ema import WeightEMA


def resolve_resume(resume: str | None, output_dir: str | None, start_epoch: int,
                   verbose: bool) -> str:
    """The checkpoint to resume from ('' for none); ``auto``: the run's own, if any."""
    if resume != "auto":
        return resume or ""
    latest = Path(output_dir) / "checkpoint.pth"
    if latest.is_file():
        return str(latest)
    if verbose:
        print(f"--resume auto: no {latest} yet; starting at epoch {start_epoch}")
    return ""


def rng_state() -> dict:
    """This process's random state: torch (CPU, CUDA), numpy and Python."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


def restore_rng(stored, info: DistInfo) -> None:
    """Give each process its own stored random state (checkpoints before per-process
    states hold one dict: it can only serve a single process exactly)."""
    states = stored if isinstance(stored, list) else [stored]
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])
    elif info.is_main:
        print(f"note: the checkpoint holds random states for {len(states)} process(es), this "
              f"run has {info.world_size}: random streams continue from --seed instead")


def keep_or_change_lr_drop(scheduler, lr_drop: int | None, verbose: bool) -> None:
    """A resumed run keeps the stored schedule, unless ``lr_drop`` (--lr_drop, a preset or
    --schedule; None when not given) asks for another drop epoch: then the learning rate is
    re-derived."""
    stored = scheduler.step_size
    if lr_drop is None or lr_drop == stored:
        return
    scheduler.step_size = lr_drop
    drops = scheduler.last_epoch // lr_drop
    for group in scheduler.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * scheduler.gamma**drops
    if verbose:
        print(f"lr schedule: --lr_drop {lr_drop} replaces the checkpoint's {stored} "
              f"(after {scheduler.last_epoch} epochs the lr is "
              f"{scheduler.optimizer.param_groups[0]['lr']:g})")


class TrainState:
    """What a training checkpoint holds besides the options: the model (its plain DETR
    part as ``model``, a training-only head apart), optimiser, schedule, scaler, moving
    average, progress and every process's random state."""

    def __init__(self, model, optimizer, scheduler, scaler, start_epoch: int):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.scaler = scaler
        self.ema: WeightEMA | None = None
        self.best_ap = -1.0
        self.next_epoch = start_epoch
        self.resume_step = 0  # batches of next_epoch already done (after an interruption)
        # The epochs and evaluations; a time-budgeted run's plan is saved and kept on resume.
        self.plan: Plan | None = None
        self.budgeted = False

    def restore(self, ckpt: Checkpoint, path: str, lr_drop: int | None, info: DistInfo) -> None:
        """Continue from ``ckpt``; a file with weights only starts at ``--start_epoch``.
        ``lr_drop``: a drop epoch given for this run (None: the checkpoint's schedule)."""
        raw = ckpt.raw
        self.model.load_state_dict(join_state(self.model, ckpt.model, raw.get("dense_head")),
                                   strict=True)
        if "optimizer" in raw and "lr_scheduler" in raw and "epoch" in raw:
            if bool(raw.get("dense_head")) != (self.model.dense_head is not None):
                with_head = "with" if raw.get("dense_head") else "without"
                raise ValueError(f"{path} was trained {with_head} --dense_aux_coef; resume with "
                                 f"the same setting, or start a new run from it with "
                                 f"--finetune_from")
            self.optimizer.load_state_dict(raw["optimizer"])
            self.scheduler.load_state_dict(raw["lr_scheduler"])
            keep_or_change_lr_drop(self.scheduler, lr_drop, info.is_main)
            self.next_epoch = raw["epoch"] + 1
            self.best_ap = raw.get("best_ap", -1.0)
            self.resume_step = raw.get("resume_step", 0)
            if raw.get("plan"):
                self.plan, self.budgeted = Plan(**raw["plan"]), True
            if "rng" in raw:
                restore_rng(raw["rng"], info)
            if self.scaler is not None and "scaler" in raw:
                self.scaler.load_state_dict(raw["scaler"])
        if info.is_main:
            at = f", step {self.resume_step}" if self.resume_step else ""
            print(f"resumed from {path}, {ckpt.progress()} (next epoch {self.next_epoch}{at})")

    def start_ema(self, decay: float | None, ckpt: Checkpoint | None, path: str,
                  verbose: bool) -> None:
        """With a ``decay``, keep a moving average of the weights as they are now, or
        continue the checkpoint's; say so when one of the two has no average."""
        raw = ckpt.raw if ckpt is not None else {}
        self.ema = WeightEMA(self.model, decay) if decay else None
        if ckpt is None:
            return
        if self.ema is not None and "ema" in raw:
            averaged = join_state(self.ema.module, raw["ema"], raw.get("ema_dense_head"))
            self.ema.load_state_dict({"ema": averaged, "ema_updates": raw["ema_updates"]})
        elif self.ema is not None and verbose:
            print(f"note: {path} has no EMA of the weights; --ema starts a new one")
        elif "ema" in raw and verbose:
            print(f"note: {path} has an EMA of the weights; without --ema training goes on "
                  f"from the trained weights and keeps no average")

    def checkpoint(self, epoch: int, step: int, run: dict, is_main: bool) -> dict | None:
        """The checkpoint after ``epoch`` (the last completed one) and ``step`` batches of
        the next; ``run`` adds the options and labels.  Collective: every process calls it
        (the random states are gathered); only the main process, which saves it, gets it."""
        rng = all_gather_lists([rng_state()])  # one entry per process, by rank
        if not is_main:
            return None
        inference, head = split_state(self.model.state_dict())
        state = {
            "model": inference,  # the plain DETR state dict the official code loads
            "dense_head": head,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "resume_step": step,
            "best_ap": self.best_ap,
            "rng": rng,
            **run,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.budgeted:
            state["plan"] = self.plan.to_dict()
        if self.ema is not None:  # the average, split the same way
            averaged, averaged_head = split_state(self.ema.module.state_dict())
            state.update(ema=averaged, ema_dense_head=averaged_head, ema_updates=self.ema.updates)
        return state
