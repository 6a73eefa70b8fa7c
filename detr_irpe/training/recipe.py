"""The main job: build data and model from parsed options, train, evaluate, checkpoint.

The files written to ``--output_dir`` (main process only) and what each holds are listed
once, in docs/training.md ("What ``--output_dir`` holds").
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from detr_irpe.checkpoint import save_checkpoint
from detr_irpe.config import RunConfig, Settings
from detr_irpe.data import CocoDetection
from detr_irpe.evaluation import CocoEvaluator, format_stats
from detr_irpe.evaluation.per_category import format_metrics_table
from detr_irpe.evaluation.report import write_evaluation
from detr_irpe.files import write_json
from detr_irpe.machine.device import device_name, output_folder, prepare_process, process_device
from detr_irpe.machine.distributed import DistInfo, barrier, cleanup, from_main, init_distributed
from detr_irpe.machine.signals import StopRequest
from detr_irpe.models.dense_head import join_state
from detr_irpe.models.detr import build_detr
from detr_irpe.training.budget import Plan, TimeBudget, process_start
from detr_irpe.training.compiled import compile_model
from detr_irpe.training.epoch_log import EpochLog
from detr_irpe.training.finetune import finetune_state, print_finetune
from detr_irpe.training.loaders import TrainLoader, val_loader
from detr_irpe.training.loop import LoopSettings, TrainingInterrupted, evaluate, train_one_epoch
from detr_irpe.training.optimizer import build_optimizer, per_step
from detr_irpe.training.quality_fit import fit_quality_head, fitting_set
from detr_irpe.training.report import finish_report
from detr_irpe.training.resume import TrainState
from detr_irpe.training.run_folder import claim_run_folder
from detr_irpe.training.setup import RunSetup, resolve_run


def run(args) -> dict:
    """Train (or, with ``--eval``, evaluate) as the options say.  Returns the last
    evaluation's 12 box-AP numbers and the best AP."""
    info = init_distributed(device_name(args.device), args.dist_url)
    try:
        with contextlib.ExitStack() as held:  # the output folder's lock, while the run lasts
            return _run(args, info, held)
    finally:
        cleanup()


def _run(args, info: DistInfo, held: contextlib.ExitStack) -> dict:
    """The recipe, in the order of official DETR's ``main()``.  The options are resolved
    once (:func:`~detr_irpe.training.setup.resolve_run`); from there on only the configs
    travel."""
    run = RunConfig.from_options(vars(args))  # fixed by the command line alone
    device = process_device(run.device, info)
    prepare_process(device, run.threads, run.seed, info)
    output_dir = output_folder(run.output_dir, info.is_main)
    if output_dir is not None and info.is_main:  # claimed before the data is read
        held.enter_context(claim_run_folder(output_dir, fresh=not (run.resume or run.eval),
                                            overwrite=run.overwrite))
    setup = resolve_run(args, run, info.is_main)
    cfg, ckpt, source, val = setup.settings, setup.ckpt, setup.source, setup.val
    # A checkpoint carries the backbone: nothing to download.
    config = cfg.model.replace(pretrained_backbone="none") if ckpt or source else cfg.model
    model, criterion, post = build_detr(config)
    if source is not None:
        report = finetune_state(model, source.model, cfg.run.finetune_reset_queries)
        if info.is_main:
            print_finetune(report, cfg.run.finetune_from)
    model.to(device)
    criterion.to(device)
    core = model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    loop = LoopSettings.of(cfg.optim, cfg.run, device, verbose=info.is_main)
    validation = Validation(criterion, post["bbox"], val, loop, output_dir,
                            val_loader(val, cfg.optim.batch_size, cfg.data, info.enabled, device))
    n_parameters = sum(p.numel() for p in core.parameters() if p.requires_grad)
    if info.is_main:
        _describe(config, n_parameters, device, info)
    if cfg.run.eval:
        return _evaluate_checkpoint(core, setup, validation, output_dir)

    loader = TrainLoader(setup.train_set, cfg.optim.batch_size, cfg.data, cfg.run.seed,
                         info.enabled, device)
    steps_per_epoch = -(-len(loader.batches) // cfg.optim.accum_steps)
    optimizer, scheduler, scaler = build_optimizer(core, cfg.optim, config.lr_backbone, device,
                                                   steps_per_epoch)
    state = TrainState(core, optimizer, scheduler, scaler, cfg.run.start_epoch)
    if ckpt is not None:
        lr_drop = cfg.optim.lr_drop if "lr_drop" in setup.given else None
        state.restore(ckpt, setup.resume, lr_drop, info)
    fit, fit_images = None, 0
    if config.quality_weight > 0:
        fit_set = fitting_set(setup.train_set, cfg.data, cfg.run.seed)
        fit = functools.partial(fit_quality_head, dataset=fit_set,
                                batch_size=cfg.optim.batch_size, device=device, amp=loop.amp,
                                seed=cfg.run.seed, verbose=info.is_main)
        fit_images = len(fit_set)
    budget = _plan(state, cfg, steps_per_epoch, len(val), fit_images, info)
    if ckpt is not None and state.next_epoch >= state.plan.epochs:
        if info.is_main:
            print(f"{setup.resume}: {ckpt.progress()} of {state.plan.epochs} epochs (counted "
                  f"from 0): nothing left to train; raise --epochs to train longer, or "
                  f"evaluate it with --eval --resume {setup.resume}")
        return {"stats": None, "best_ap": state.best_ap}
    state.start_ema(cfg.optim.ema, ckpt, setup.resume, info.is_main)
    if cfg.run.compile:  # after the EMA's copy, which stays uncompiled
        compile_model(core, static_shapes=cfg.data.size_buckets > 0)
    record = {"args": setup.options(), "config": config.to_dict(),
              "label_to_category_id": val.label_to_category_id,
              "category_names": val.category_names, "finetuned_from": cfg.run.finetune_from}
    if info.is_main:  # written once the run has started for good
        write_json(output_dir / "args.json", record["args"])
    return _train(model, criterion, state, loader, validation, budget, record, n_parameters,
                  info, fit)


def _plan(state: TrainState, cfg: Settings, steps_per_epoch: int, val_images: int,
          fit_images: int, info: DistInfo) -> TimeBudget | None:
    """Fix ``state.plan``: the checkpoint's (a resumed budgeted run keeps its plan), the
    epochs and evaluations of the options, or a :class:`TimeBudget`'s (returned: it plans
    as the run goes; ``fit_images``: the images the box-quality head is fitted on at the
    end)."""
    if state.plan is not None:
        return None
    minutes = cfg.optim.time_budget
    if minutes is None:
        state.plan = Plan(cfg.optim.epochs, cfg.run.eval_every)
        return None
    budget = TimeBudget(minutes, process_start(), steps_per_epoch, cfg.optim.batch_size,
                        val_images, state.scheduler.lr_lambdas[0], info.is_main, from_main,
                        fit_images=fit_images)
    state.plan, state.budgeted = budget.plan, True
    return budget


def _describe(config, n_parameters: int, device: torch.device, info: DistInfo) -> None:
    width = "" if config.backbone_width == 64 else f" (width {config.backbone_width})"
    print(f"model: DETR {config.backbone}{width} + iRPE {config.enc_rpe2d or 'off'}, num_classes "
          f"{config.num_classes}, {n_parameters:,} trainable parameters, device {device}, "
          f"{info.world_size} process(es)")


@dataclass
class Validation:
    """One evaluation on the validation set: prints the 12 numbers and the per-category
    table and, with an output folder, writes ``eval/<tag>.json``, the detections and the
    PNGs (``evaluation/report.py``; ``epoch``: the epoch evaluated, counted from 0)."""

    criterion: torch.nn.Module
    postprocess: torch.nn.Module
    val: CocoDetection
    loop: LoopSettings
    output_dir: Path | None
    loader: torch.utils.data.DataLoader

    def __call__(self, model, tag: str, epoch: int | None):
        evaluator = CocoEvaluator(self.val.coco, self.val.label_to_category_id,
                                  backend=self.loop.run.eval_backend)
        test_stats = evaluate(model, self.criterion, self.postprocess, self.loader, evaluator,
                              self.loop, per_image=self.loop.run.eval_protocol == "per_image")
        evaluator.synchronize_between_processes()
        if not self.loop.verbose:  # only the main process summarises
            return test_stats, None
        summary = evaluator.summarize()
        print(format_stats(summary.stats))
        print(format_metrics_table(evaluator.per_category(), self.val.category_names))
        if self.output_dir is not None:
            write_evaluation(self.output_dir / "eval", tag, epoch, evaluator, summary,
                             self.val.category_names, test_stats)
        return test_stats, summary


def _label_names(label_to_category_id: dict, names: dict) -> dict:
    """{label: category name (or id when unnamed)}, keys and ids as ints."""
    names = {int(c): n for c, n in (names or {}).items()}
    return {int(label): names.get(int(c), int(c)) for label, c in label_to_category_id.items()}


def _check_categories(raw: dict, path: str, val: CocoDetection) -> None:
    """``--eval``: a checkpoint that stored its categories (ours do; official ones do not)
    must mean by each label what the validation set's categories mean, or the AP would be
    printed under the wrong names."""
    stored = raw.get("label_to_category_id")
    if not stored:
        return
    theirs = _label_names(stored, raw.get("category_names"))
    ours = _label_names(val.label_to_category_id, val.category_names)
    if theirs != ours:
        differ = sorted(set(theirs.items()) ^ set(ours.items()), key=str)[:6]
        raise ValueError(
            f"{path} was trained on other categories than the validation set's: label -> "
            f"category {theirs} in the checkpoint, {ours} in the validation set (differing: "
            f"{differ}); evaluate it on data with the checkpoint's categories")


def _evaluate_checkpoint(model, setup: RunSetup, validation: Validation,
                         output_dir: Path | None) -> dict:
    """``--eval``: the checkpoint's inference weights (its moving average, if any)."""
    ckpt, path = setup.ckpt, setup.resume
    _check_categories(ckpt.raw, path, validation.val)
    model.load_state_dict(join_state(model, ckpt.inference_model, ckpt.raw.get("dense_head")),
                          strict=True)
    main = validation.loop.verbose
    if main:
        print(f"evaluating {path}: {ckpt.progress()}")
        if output_dir is not None:
            write_json(output_dir / "args.json", setup.options())
    _, summary = validation(model, "eval", ckpt.epoch)
    if main:
        _print_where(output_dir, ["eval/eval.json", "eval/detections_eval.json",
                                  "eval/pr_eval.png", "eval/confusion_eval.png"])
    return {"stats": summary.stats if summary else None, "best_ap": None}


def _train(model, criterion, state: TrainState, loader: TrainLoader, validation: Validation,
           budget: TimeBudget | None, record: dict, n_parameters: int, info: DistInfo,
           fit=None) -> dict:
    """The epoch loop: train, step the schedule, evaluate when due, save, log.  The number
    of epochs is ``state.plan``'s, which a time budget updates as the run goes.  ``fit``
    (with a box-quality head) fits that head of the evaluated model after the last epoch,
    before its evaluation and checkpoint."""
    output_dir, epoch, plan = validation.output_dir, state.next_epoch, state.plan
    log = EpochLog(output_dir, epoch, plan) if info.is_main else None
    last_stats = None

    def after_step():
        if per_step(state.scheduler):
            state.scheduler.step()
        if budget is not None:
            budget.step_done()

    with StopRequest(validation.loop.device, verbose=info.is_main) as stop:
        while epoch < plan.epochs:
            skip = state.resume_step if epoch == state.next_epoch else 0
            cut = plan.cut_at(epoch)  # optimiser steps -> batches
            stop_batch = None if cut is None else cut * validation.loop.optim.accum_steps
            batches = loader.epoch(epoch, skip, stop_batch, plan.epochs)
            try:
                train_stats = train_one_epoch(model, criterion, batches,
                                              state.optimizer, epoch, validation.loop,
                                              state.scaler, state.ema, skip, stop, after_step)
            except TrainingInterrupted as stopped:
                _save_at_stop(state, epoch, stopped.steps_done, record, output_dir, info)
                raise
            if not per_step(state.scheduler):
                state.scheduler.step()
            entry = {f"train_{k}": v for k, v in train_stats.items()}
            summary = None
            if budget is not None:  # re-planned before the evaluation: it may move
                budget.epoch_done(epoch)
            if fit is not None and epoch == plan.epochs - 1:
                fit(state.model if state.ema is None else state.ema.module)
            if plan.evaluates(epoch):
                started = time.time()
                test_stats, summary = validation(model if state.ema is None else state.ema.module,
                                                 f"{epoch:04d}", epoch)
                if budget is not None:
                    budget.evaluated(time.time() - started)
                entry.update({f"test_{k}": v for k, v in test_stats.items()})
                if summary is not None:
                    entry["test_coco_eval_bbox"] = last_stats = summary.stats
            entry.update(epoch=epoch, n_parameters=n_parameters)
            _end_epoch(state, epoch, entry, summary, record, log, output_dir)
            barrier()
            epoch += 1
    if log is not None:
        log.close()
        _print_where(output_dir, ["checkpoint.pth", "checkpoint_best.pth", "log.txt", "eval/"])
        print(finish_report(output_dir, validation.val, log.seconds,
                            last_stats[0] if last_stats is not None else None, state.best_ap))
    return {"stats": last_stats, "best_ap": state.best_ap}


def _end_epoch(state: TrainState, epoch: int, entry: dict, summary, record: dict,
               log: EpochLog | None, output_dir: Path | None) -> None:
    """Save ``checkpoint.pth`` (and ``checkpoint_best.pth`` when the AP improved) and log the
    epoch.  Every process takes part (the random states are gathered); one writes."""
    ap = summary.stats[0] if summary is not None else None
    improved = ap is not None and ap > state.best_ap
    if improved:
        state.best_ap = ap
    checkpoint = state.checkpoint(epoch, 0, record, is_main=log is not None)
    if log is None:
        return
    # checkpoint.pth last: a crash before it resumes this epoch again, and the epoch's
    # log line (if written) is dropped on resume (EpochLog); best and log are then redone.
    if output_dir is not None and improved:
        save_checkpoint(checkpoint, str(output_dir / "checkpoint_best.pth"))
    log.write(epoch, entry, ap, state.best_ap)
    if output_dir is not None:
        save_checkpoint(checkpoint, str(output_dir / "checkpoint.pth"))


def _save_at_stop(state: TrainState, epoch: int, steps_done: int, record: dict,
                  output_dir: Path | None, info: DistInfo) -> None:
    """After SIGTERM/SIGINT: a checkpoint that continues with the next batch of ``epoch``."""
    checkpoint = state.checkpoint(epoch - 1, steps_done, record, info.is_main)
    if info.is_main and output_dir is not None:
        save_checkpoint(checkpoint, str(output_dir / "checkpoint.pth"))
        print(f"stopped in epoch {epoch} after {steps_done} steps; checkpoint saved: "
              f"{output_dir / 'checkpoint.pth'} (exit code 75); continue with the same command "
              f"and --resume auto", flush=True)
    barrier()


def _print_where(output_dir: Path | None, names: list[str]) -> None:
    """The last lines of a run: where its files are and how to look at them."""
    if output_dir is None:
        print("results were printed only (no --output_dir)")
        return
    found = [str(output_dir / n) for n in names if (output_dir / n).exists()]
    print(f"written: {', '.join(found)}")
