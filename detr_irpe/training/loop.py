"""One training epoch and one evaluation pass."""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from detr_irpe.config import OptimConfig, RunConfig
from detr_irpe.evaluation import CocoEvaluator
from detr_irpe.machine.cpu import amp_on
from detr_irpe.machine.distributed import (
    all_gather_lists,
    all_reduce_mean,
    all_reduce_min,
    all_reduce_sum,
    any_process,
    rank,
    world_size,
)
from detr_irpe.models.backbone import ImageBatch
from detr_irpe.progress import Progress


@dataclass(frozen=True)
class LoopSettings:
    """How :func:`train_one_epoch` and :func:`evaluate` run: the run's
    :class:`~detr_irpe.config.OptimConfig` and :class:`~detr_irpe.config.RunConfig`
    themselves, the device, and the precision that runs there (``--amp``, or float32 on a
    CPU without native bf16 arithmetic)."""

    optim: OptimConfig
    run: RunConfig
    device: torch.device
    amp: str  # "off", "bf16" or "fp16"
    verbose: bool  # print progress lines (the main process)

    @classmethod
    def of(cls, optim: OptimConfig, run: RunConfig, device: torch.device,
           verbose: bool = True) -> LoopSettings:
        return cls(optim, run, device, amp_on(device, optim.amp, verbose), verbose)


def _quiet_seconds() -> float:
    """On a terminal a progress line every --print_freq steps; in a log file (a cluster
    job) at most one per 30 s."""
    return 0.0 if sys.stdout.isatty() else 30.0


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


def _to_device(images, targets, device):
    """A list of images or an :class:`ImageBatch` (``--size_buckets``), and the targets."""
    if isinstance(images, ImageBatch):
        images = images.to(device, non_blocking=True)
    else:
        images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()}
               for t in targets]
    return images, targets


def autocast(device: torch.device, amp: str):
    """The autocast context of ``--amp`` (off, bf16 or fp16) on ``device``."""
    if amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class TrainingInterrupted(Exception):
    """Raised at a step boundary after a stop was requested (SIGTERM/SIGINT)."""

    def __init__(self, epoch: int, steps_done: int):
        super().__init__(f"interrupted in epoch {epoch} after {steps_done} steps")
        self.epoch = epoch
        self.steps_done = steps_done


def _optimizer_steps(loader, accum_steps: int, first_step: int):
    """Group the loader's batches by optimiser step: lists of (step, images, targets),
    ``accum_steps`` long except possibly the last of the epoch."""
    group = []
    for step, (images, targets) in enumerate(loader, start=first_step):
        group.append((step, images, targets))
        if (step + 1) % accum_steps == 0:
            yield group
            group = []
    if group:
        yield group


def _step_num_boxes(group, device) -> torch.Tensor:
    """DETR's loss normaliser for each micro-batch of an optimiser step: the target boxes
    of the whole step (every micro-batch on every process) divided by the number of
    micro-batch forward passes (micro-batches x processes), at least 1.  Gradients are
    averaged over both, so the step weighs every box as one large batch would.  A 0-dim
    float32 tensor on ``device``, never read by the host."""
    count = torch.tensor(float(sum(len(t["labels"]) for _, _, tg in group for t in tg)),
                         dtype=torch.float64, device=device)
    return (all_reduce_sum(count) / (world_size() * len(group))).clamp(min=1.0).float()


def _micro_batch_loss(model, criterion, images, targets, num_boxes, device, amp):
    """(weighted total loss, or None when the predictions are not finite; unweighted
    losses).  A non-finite total is returned as it is (checking it would wait for the
    device): :func:`_apply_gradients` checks it with the gradient."""
    with autocast(device, amp):
        outputs = model(images, targets)
    try:
        losses = criterion(outputs, targets, num_boxes=num_boxes)
    except FloatingPointError:  # non-finite predictions: nothing to match
        return None, {}
    weights = criterion.weight_dict
    total = sum(losses[k] * weights[k] for k in losses if k in weights)
    return total, losses


def _stats_row(total, losses, weights) -> dict[str, torch.Tensor]:
    """The logged figures of a micro-batch, as 0-dim tensors (read later, together)."""
    losses = {k: v.detach() for k, v in losses.items()}
    row = {"loss": total.detach()}
    row.update({k: v * weights[k] for k, v in losses.items() if k in weights})
    row.update({f"{k}_unscaled": v for k, v in losses.items()})
    row["class_error"] = losses["class_error"]
    return row


def _image_ids(targets) -> list[int]:
    return [int(t["image_id"]) for t in targets if "image_id" in t] or [-1]


def _accumulate(model, criterion, group, device, amp, scaler) -> tuple[list | None, list, list]:
    """Forward and backward every micro-batch of one optimiser step.

    Returns (per micro-batch: its image ids and whether its loss is finite, a 0-dim bool
    tensor not yet read; stats rows; image ids of micro-batches whose predictions were not
    finite on this process).  The first is None when the gradients are incomplete: some
    process met non-finite predictions (nothing to match, no loss).  Before the last
    micro-batch's backward (the one DDP synchronises) all processes agree on that with one
    all-reduce, and either all run it or all skip it.
    """
    num_boxes = _step_num_boxes(group, device)
    checks, rows, bad_ids = [], [], []
    for n, (_, images, targets) in enumerate(group):
        images, targets = _to_device(images, targets, device)
        last = n == len(group) - 1
        sync = model.no_sync() if not last and hasattr(model, "no_sync") else nullcontext()
        with sync:
            total, losses = _micro_batch_loss(model, criterion, images, targets, num_boxes,
                                              device, amp)
            if total is None:
                bad_ids += _image_ids(targets)
            if last and any_process(bool(bad_ids), device):
                return None, rows, bad_ids
            if bad_ids:  # this step is lost already: save the backward
                continue
            scaled = total / len(group)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            checks.append((_image_ids(targets), torch.isfinite(total.detach())))
            rows.append(_stats_row(total, losses, criterion.weight_dict))
    return checks, rows, bad_ids


def _finite_everywhere(flags: torch.Tensor) -> tuple[list[bool], list[bool]]:
    """(this process's flags, their AND over all processes) of a bool vector, read by the
    host in one transfer: the only wait for the device in a training step besides the
    matching."""
    local = flags.float()
    both = torch.cat([local, all_reduce_min(local.clone())]).tolist()
    return [v > 0 for v in both[: len(flags)]], [v > 0 for v in both[len(flags):]]


def _apply_gradients(model, optimizer, scaler, clip_max_norm, checks) -> list[int] | None:
    """Clip and step, unless a micro-batch loss (``checks`` of :func:`_accumulate`) or the
    gradient is not finite on some process: then no update, and the image ids to report
    (this process's non-finite micro-batches; all of its images when the gradient alone
    is bad).  None when the step was applied.  All processes decide alike.

    With fp16's gradient scaler an overflow of the scaled gradient is routine, not a bad
    step: the scaler skips that update and lowers its scale.  Only an overflow at a scale
    of 1 or less (the unscaled gradient itself) counts as bad."""
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), clip_max_norm if clip_max_norm > 0 else float("inf")
    )
    flags = torch.stack([finite for _, finite in checks] + [torch.isfinite(grad_norm)])
    local, everywhere = _finite_everywhere(flags)
    losses_finite, grad_finite = all(everywhere[:-1]), everywhere[-1]
    if scaler is not None:
        if losses_finite:
            scaler.step(optimizer)  # no update when the gradient overflowed
        scaler.update()  # ... and then a lower scale
        grad_finite = grad_finite or scale > 1.0
    elif losses_finite and grad_finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if losses_finite and grad_finite:
        return None
    if not losses_finite:
        return [i for (ids, _), ok in zip(checks, local) if not ok for i in ids if i >= 0]
    return [i for ids, _ in checks for i in ids if i >= 0]


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    settings: LoopSettings,
    scaler: torch.amp.GradScaler | None = None,
    ema=None,
    first_step: int = 0,
    should_stop=None,
    after_step=None,
) -> dict[str, float]:
    """Train for one pass over ``loader``.  Returns the epoch's mean of ``loss`` (the
    weighted total), every weighted loss term, the unweighted ones (``*_unscaled``),
    ``class_error`` and ``lr``.

    An optimiser step gathers ``settings.optim.accum_steps`` batches; the box losses of all of them are
    normalised by the box count of the whole step on all processes (see
    :func:`_step_num_boxes`), so accumulation equals running on more processes.  A step
    in which any micro-batch on any process has a non-finite loss, or whose gradient is
    not finite, is skipped by every process (no update) and reported once with its image
    ids; ``settings.optim.max_bad_steps`` of them in a row stop training.

    ``first_step``: batches of this epoch already done (``loader`` yields the rest), after
    an interruption.  ``should_stop()`` is asked after every optimizer step; when it says
    yes, :class:`TrainingInterrupted` is raised with the number of batches done.
    ``ema`` (a :class:`detr_irpe.training.ema.WeightEMA`) folds in the weights after each applied step;
    ``after_step()`` is called then too (a per-step learning-rate schedule, a time budget).
    """
    model.train()
    criterion.train()
    s = settings
    stats = Averages()
    progress = Progress(f"Epoch {epoch}", first_step + len(loader), s.run.print_freq, _quiet_seconds(),
                        enabled=s.verbose)
    bad_in_a_row = 0
    optimizer.zero_grad(set_to_none=True)
    for group in _optimizer_steps(loader, s.optim.accum_steps, first_step):
        step = group[-1][0]
        checks, rows, bad_ids = _accumulate(model, criterion, group, s.device, s.amp, scaler)
        if checks is None:
            optimizer.zero_grad(set_to_none=True)
        else:
            bad_ids = _apply_gradients(model, optimizer, scaler, s.optim.clip_max_norm, checks)
        applied = checks is not None and bad_ids is None
        if applied:
            bad_in_a_row = 0
            if ema is not None:
                ema.update(getattr(model, "module", model))  # the model inside DDP
            for row in rows:
                stats.add({**row, "lr": optimizer.param_groups[0]["lr"]})
            if after_step is not None:
                after_step()
        if should_stop is not None and should_stop():
            raise TrainingInterrupted(epoch, step + 1)
        if not applied:
            bad_in_a_row += 1
            _report_bad_step(epoch, step, bad_ids, bad_in_a_row, s.optim.max_bad_steps)
            continue
        progress.update(step + 1, lambda: {k: stats.means()[k] for k in ("loss", "class_error")})
    return all_reduce_mean(stats.means(), s.device)


def _report_bad_step(epoch, step, local_ids, bad_in_a_row, max_bad_steps) -> None:
    """Print a skipped step once (main process) with the image ids of every process, and
    stop after ``max_bad_steps`` in a row (every process at the same step)."""
    ids = sorted(i for i in all_gather_lists(local_ids) if i >= 0)
    if rank() == 0:
        print(f"Epoch {epoch} step {step}: non-finite loss or gradient, step skipped on every "
              f"process (image ids {ids})", flush=True)
    if bad_in_a_row >= max_bad_steps:
        raise FloatingPointError(
            f"{bad_in_a_row} consecutive non-finite steps (last image ids {ids}); "
            f"training stopped. Lower --lr, check those images, or raise "
            f"--max_bad_steps. The last checkpoint in --output_dir is intact."
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    postprocess: nn.Module,
    loader,
    evaluator: CocoEvaluator,
    settings: LoopSettings,
    per_image: bool,
) -> dict[str, float]:
    """Run the model over ``loader`` and feed the detections (rescaled to the original
    image sizes) to ``evaluator``.  Returns mean test losses; call
    ``evaluator.synchronize_between_processes()`` and ``summarize()`` afterwards.

    ``per_image`` (``--eval_protocol per_image``): each image's backbone runs on that
    image alone (see ``DETR.per_image_backbone``), so the detections, and the AP, do not
    depend on the evaluation batch size.  ``per_image=False`` is the official protocol: the images of
    each batch are padded together, which changes the padding mask, the sine positions
    and the convolutions near the border (how the published AP figures were measured).
    """
    model.eval()
    criterion.eval()
    core = model.module if hasattr(model, "module") else model
    weights = criterion.weight_dict
    stats = Averages()
    progress = Progress("Test", len(loader), settings.run.print_freq, _quiet_seconds(),
                        enabled=settings.verbose)
    device = settings.device
    with backbone_per_image(core, per_image):
        for step, (images, targets) in enumerate(loader):
            images, targets = _to_device(images, targets, device)
            outputs = eval_outputs(core, images, device, settings.amp)
            # Test losses follow DETR: crowd objects are not targets.
            loss_targets = [_without_crowd(t) for t in targets]
            num_boxes = _step_num_boxes([(step, images, loss_targets)], device)
            losses = criterion(outputs, loss_targets, num_boxes=num_boxes)
            total = sum(losses[k] * weights[k] for k in losses if k in weights)
            row = {"loss": float(total), "class_error": float(losses["class_error"])}
            row.update({k: float(v) * weights[k] for k, v in losses.items() if k in weights})
            row.update({f"{k}_unscaled": float(v) for k, v in losses.items()})
            if math.isfinite(row["loss"]):
                stats.add(row)
            sizes = torch.stack([t["orig_size"] for t in targets])
            results = postprocess(outputs, sizes)
            evaluator.update({int(t["image_id"]): r for t, r in zip(targets, results)})
            progress.update(step + 1, lambda: {"loss": stats.means().get("loss", float("nan"))})
    return all_reduce_mean(stats.means(), device)


@contextmanager
def backbone_per_image(core: nn.Module, on: bool):
    """``core.per_image_backbone`` set to ``on`` for the block, restored after."""
    before, core.per_image_backbone = core.per_image_backbone, on
    try:
        yield
    finally:
        core.per_image_backbone = before


def eval_outputs(core: nn.Module, images, device: torch.device, amp: str) -> dict:
    """``core``'s outputs for ``images`` in float32.  A --compile'd model runs eagerly here:
    evaluation images come in many sizes, each of which would be compiled anew."""
    with autocast(device, amp), torch.compiler.set_stance("force_eager"):
        return _float_outputs(core(images))


def _float_outputs(outputs: dict) -> dict:
    out = {k: v.float() for k, v in outputs.items() if torch.is_tensor(v)}
    out.update({k: v for k, v in outputs.items() if isinstance(v, float)})
    if "aux_outputs" in outputs:
        out["aux_outputs"] = [{k: v.float() for k, v in a.items()} for a in outputs["aux_outputs"]]
    return out


def _without_crowd(target: dict) -> dict:
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = crowd == 0
    return {**target, "boxes": target["boxes"][keep], "labels": target["labels"][keep]}
