"""The main job: build data and model from parsed options, train, evaluate, checkpoint.

Files written to ``--output_dir`` (main process only):

- ``checkpoint.pth``: latest state (model, optimizer, lr_scheduler, epoch, RNG states,
  options, label mapping), rewritten atomically after every epoch;
- ``checkpoint_best.pth``: the same at the best box AP so far;
- ``log.txt``: one JSON line per epoch with the official keys (``train_*``, ``test_*``,
  ``test_coco_eval_bbox``, ``epoch``, ``n_parameters``);
- ``eval/<epoch>.json`` (the epoch counted from 0, four digits: ``eval/0003.json``): all
  AP numbers of that evaluation, ``"epoch"`` the epoch as a number (``eval/eval.json``
  for ``--eval``, with the checkpoint's epoch), per-category AP, AP50 and AR100 and the
  confusion counts; ``eval/detections_<epoch>.json``, ``eval/pr_<epoch>.png``,
  ``eval/confusion_<epoch>.png`` (see ``detr_irpe/evaluation/report.py``);
- ``args.json``: the resolved options of the run (with ``--resume``/``--eval``: the
  checkpoint's model options), written once the run has started;
- TensorBoard event files in ``tensorboard/`` when ``tensorboard`` is installed;
- at the end of training, ``curves.png`` and ``predictions/*.png`` (:mod:`.run_report`).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, SequentialSampler

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import ARCHITECTURE, DETRConfig
from .data import CocoDetection, build_coco, collate_fn, make_transforms
from .distributed import DistInfo, all_gather_lists, barrier, cleanup, init_distributed
from .ema import WeightEMA
from .engine import TrainingInterrupted, evaluate, train_one_epoch
from .evaluation import CocoEvaluator, format_stats
from .evaluation.per_category import format_metrics_table
from .evaluation.report import write_evaluation
from .files import write_json
from .models.dense_head import join_state, split_state
from .models.detr import build_detr
from .models.irpe import parse_irpe
from .run_report import finish_report
from .runtime import available_cores, configure_cpu
from .signals import DataLoader, StopRequest


def build_datasets(args) -> tuple[CocoDetection | None, CocoDetection]:
    train_tf = make_transforms("train", scales=args.train_scales, max_size=args.max_size)
    val_tf = make_transforms("val", max_size=args.max_size, val_size=args.val_size)
    if args.dataset_file == "custom":
        train = None
        if args.train_json:
            train = CocoDetection(args.train_images, args.train_json, train_tf, train=True,
                                  contiguous_labels=True, skip_unreadable=args.skip_unreadable)
        val = CocoDetection(args.val_images, args.val_json, val_tf, train=False,
                            contiguous_labels=True, drop_crowd=False,
                            skip_unreadable=args.skip_unreadable)
        if train is not None and train.label_to_category_id != val.label_to_category_id:
            raise ValueError(
                f"{args.train_json} and {args.val_json} declare different categories; both "
                f"files must list the same category ids"
            )
        return train, val
    skip = args.skip_unreadable
    train = None if args.eval else build_coco(args.coco_path, "train", train_tf, skip_unreadable=skip)
    return train, build_coco(args.coco_path, "val", val_tf, skip_unreadable=skip)


def model_options(args, val: CocoDetection) -> dict:
    names = {f for f in DETRConfig.__dataclass_fields__}
    opts = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.num_classes is None:
        opts["num_classes"] = val.num_classes
    elif args.dataset_file == "custom" and args.num_classes != val.num_classes:
        raise ValueError(
            f"--num_classes {args.num_classes} does not fit {args.val_json}: its "
            f"{val.num_classes} categories give num_classes {val.num_classes}; leave "
            f"--num_classes out for custom data, it is derived from the JSON"
        )
    return opts


def checkpoint_options(args, ckpt: Checkpoint, path: str, verbose: bool) -> dict:
    """Make ``args`` describe the model in ``ckpt``: every architecture option it records
    (``ARCHITECTURE``) and, unless given, its ``val_size`` / ``max_size`` / ``amp``.  An option set
    on purpose that contradicts the checkpoint is an error naming both values.  Returns
    the model options to build with (``num_classes`` included)."""
    adopted = {}
    for key in ARCHITECTURE:
        if key not in ckpt.options:
            continue
        stored, ours = ckpt.options[key], getattr(args, key)
        same = (parse_irpe(stored) == parse_irpe(ours)) if key == "enc_rpe2d" else stored == ours
        if key in args.given and not same:
            raise ValueError(
                f"--{key} {ours!r} (from {args.given[key]}) contradicts {path}, which was trained "
                f"with {key} {stored!r}; leave --{key} out (the checkpoint's value is used)")
        if not same:
            adopted[key] = stored
    # The evaluation resize and precision it ran with, so that --eval reproduces its AP.
    stored = ckpt.eval_sizes()
    if ckpt.args.get("amp"):
        stored["amp"] = ckpt.args["amp"]
    sizes = {k: v for k, v in stored.items() if k not in args.given}
    changed = {**adopted, **{k: v for k, v in sizes.items() if getattr(args, k) != v}}
    for key, value in {**adopted, **sizes}.items():
        if key != "num_classes":  # num_classes stays as given: the data is checked against it
            setattr(args, key, value)
    if verbose and changed:
        shown = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        print(f"note: using the settings of {path}: {shown}")
    return {"num_classes": ckpt.options["num_classes"]} if "num_classes" in ckpt.options else {}


def finetune_state(model: torch.nn.Module, source: dict, reset_queries: bool) -> dict:
    """Copy from ``source`` every tensor whose name and shape fit ``model``, except the
    class head (always re-initialised: the classes differ) and, optionally, the query
    embeddings.  Returns a report: kept / reinitialised / mismatched / unused names."""
    target = model.state_dict()
    fresh = ("class_embed.",) + (("query_embed.",) if reset_queries else ())
    kept, mismatched = [], []
    for name, tensor in source.items():
        if name not in target or name.startswith(fresh):
            continue
        if target[name].shape == tensor.shape:
            target[name] = tensor
            kept.append(name)
        else:
            mismatched.append(f"{name} {tuple(tensor.shape)} -> {tuple(target[name].shape)}")
    model.load_state_dict(target, strict=True)
    reinit = sorted(set(target) - set(kept))
    unused = sorted(set(source) - set(target))
    return {"kept": kept, "reinitialised": reinit, "mismatched": mismatched, "unused": unused}


def _print_finetune(report: dict, path: str) -> None:
    print(f"fine-tuning from {path}: kept {len(report['kept'])} tensors, re-initialised "
          f"{len(report['reinitialised'])}: {', '.join(report['reinitialised'])}")
    if report["mismatched"]:
        print(f"  shape mismatch (re-initialised): {'; '.join(report['mismatched'])}")
    if report["unused"]:
        print(f"  not in the new model (ignored): {', '.join(report['unused'])}")


class SkipBatches:
    """A batch sampler that leaves out the first ``skip`` batches (resuming mid-epoch)."""

    def __init__(self, batch_sampler, skip: int = 0):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self):
        for n, batch in enumerate(self.batch_sampler):
            if n >= self.skip:
                yield batch

    def __len__(self):
        return len(self.batch_sampler) - self.skip


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


def _restore_rng(stored, info: DistInfo) -> None:
    """Give each process its own stored random state (checkpoints before per-process
    states hold one dict: it can only serve a single process exactly)."""
    states = stored if isinstance(stored, list) else [stored]
    if len(states) == info.world_size:
        _set_rng_state(states[info.rank])
    elif info.is_main:
        print(f"note: the checkpoint holds random states for {len(states)} process(es), this "
              f"run has {info.world_size}: random streams continue from --seed instead")


def _keep_or_change_lr_drop(scheduler, args, verbose: bool) -> None:
    """A resumed run keeps the stored schedule, unless --lr_drop (or a preset or
    --schedule) asks for another drop epoch: then the learning rate is re-derived."""
    stored = scheduler.step_size
    if "lr_drop" not in args.given or args.lr_drop == stored:
        return
    scheduler.step_size = args.lr_drop
    drops = scheduler.last_epoch // args.lr_drop
    for group in scheduler.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * scheduler.gamma**drops
    if verbose:
        print(f"lr schedule: --lr_drop {args.lr_drop} replaces the checkpoint's {stored} "
              f"(after {scheduler.last_epoch} epochs the lr is "
              f"{scheduler.optimizer.param_groups[0]['lr']:g})")


def _resolve_resume(args, verbose: bool) -> str:
    if args.resume != "auto":
        return args.resume or ""
    latest = Path(args.output_dir) / "checkpoint.pth"
    if latest.is_file():
        return str(latest)
    if verbose:
        print(f"--resume auto: no {latest} yet; starting at epoch {args.start_epoch}")
    return ""


def _local_processes(info: DistInfo) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.enabled else 1))


def _device_name(args) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _device(args, info: DistInfo) -> torch.device:
    name = _device_name(args)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name == "cuda" and info.enabled:
        name = f"cuda:{info.local_rank}"
    return torch.device(name)


def _tensorboard(output_dir: Path | None):
    if output_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: optional
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))


def run_evaluation(model, criterion, post, loader, val, device, args, info, tag, epoch,
                   output_dir):
    """Evaluate; print the 12 numbers and the per-category table; write ``eval/<tag>.json``
    (``epoch``: the number of the epoch evaluated, counted from 0), the detections and the
    PNGs when there is an ``output_dir`` (``evaluation/report.py``)."""
    evaluator = CocoEvaluator(val.coco, val.label_to_category_id, backend=args.eval_backend)
    test_stats = evaluate(model, criterion, post, loader, evaluator, device, amp=args.amp,
                          print_freq=args.print_freq, verbose=info.is_main,
                          per_image=args.eval_protocol == "per_image")
    evaluator.synchronize_between_processes()
    summary = evaluator.summarize() if info.is_main else None
    if info.is_main:
        print(format_stats(summary.stats))
        print(format_metrics_table(evaluator.per_category(), val.category_names))
        if output_dir is not None:
            write_evaluation(output_dir / "eval", tag, epoch, evaluator, summary,
                             val.category_names, test_stats)
    return test_stats, summary


def run(args) -> dict:
    """Train (or, with ``--eval``, evaluate) as the options say.  Returns the last
    evaluation's 12 box-AP numbers and the best AP."""
    info = init_distributed(_device_name(args), args.dist_url)
    try:
        return _run(args, info)
    finally:
        cleanup()


def _run(args, info: DistInfo) -> dict:
    device = _device(args, info)
    if device.type == "cpu":
        # Processes sharing one machine split its cores.
        per_process = max(1, available_cores() // max(1, _local_processes(info)))
        configure_cpu(args.threads or per_process)
    seed = args.seed + info.rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    output_dir = Path(args.output_dir) if args.output_dir else None
    if output_dir is not None and info.is_main:
        probe = output_dir / ".write_test"
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"\0" * 2**20)  # room for at least a little
            probe.unlink()
        except OSError as err:
            raise OSError(f"--output_dir {output_dir} is not writable ({err.strerror}); choose "
                          f"another folder or free some space") from None

    resume = _resolve_resume(args, info.is_main)
    ckpt = load_checkpoint(resume, trust=args.trust_checkpoint) if resume else None
    from_ckpt = checkpoint_options(args, ckpt, resume, info.is_main) if ckpt else {}
    train_set, val = build_datasets(args)
    opts = {**model_options(args, val), **from_ckpt}
    if args.dataset_file == "custom" and opts["num_classes"] != val.num_classes:
        raise ValueError(f"{resume} has num_classes {opts['num_classes']} but {args.val_json} "
                         f"gives {val.num_classes}; use the data the checkpoint was trained on")
    if ckpt is not None:
        opts["pretrained_backbone"] = "none"  # the checkpoint carries the backbone
    source = None
    if args.finetune_from and ckpt is None:
        source = load_checkpoint(args.finetune_from, trust=args.trust_checkpoint)
        theirs = source.options.get("enc_rpe2d", "")
        if "enc_rpe2d" not in args.given:
            opts["enc_rpe2d"] = theirs
        elif theirs == "" and info.is_main:  # plain DETR into iRPE: only the tables are new
            start = "at zero" if args.irpe_init == "zero" else "Xavier-uniform"
            print(f"note: {args.finetune_from} is plain DETR; the {args.enc_rpe2d} tables are new "
                  f"and start {start} (--irpe_init zero starts from the checkpoint's function)")
        elif theirs != "" and parse_irpe(theirs) != parse_irpe(args.enc_rpe2d):
            raise ValueError(
                f"--finetune_from {args.finetune_from} was trained with --enc_rpe2d "
                f"{theirs!r} but this run asks for {args.enc_rpe2d!r}; leave --enc_rpe2d out "
                f"to use the checkpoint's, or pass the same value"
            )
        opts["pretrained_backbone"] = "none"  # the checkpoint carries the backbone
        if opts.get("backbone_stride") == 16 and source.options.get("backbone_stride") == 32:
            raise ValueError(f"--finetune_from {args.finetune_from} has a layer4 (stride 32); "
                             f"--backbone_stride 16 leaves it out: drop --backbone_stride 16")
    config = DETRConfig.from_options(opts, strict=False)
    model, criterion, post = build_detr(config)
    if source is not None:
        report = finetune_state(model, source.model, args.finetune_reset_queries)
        if info.is_main:
            _print_finetune(report, args.finetune_from)
    model.to(device)
    criterion.to(device)
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if info.is_main:
        print(f"model: DETR {config.backbone} + iRPE {config.enc_rpe2d or 'off'}, "
              f"num_classes {config.num_classes}, {n_parameters:,} trainable parameters, "
              f"device {device}, {info.world_size} process(es)")
    core = model
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    param_groups = [
        {"params": [p for n, p in core.named_parameters()
                    if not n.startswith("backbone.") and p.requires_grad]},
        {"params": [p for n, p in core.named_parameters()
                    if n.startswith("backbone.") and p.requires_grad], "lr": args.lr_backbone},
    ]
    # The fused AdamW kernel (one pass over each parameter instead of a dozen foreach
    # passes): same update, 0.40 vs 0.47 s per step of the CPU demo.
    optimizer = torch.optim.AdamW(param_groups, lr=args.lr, weight_decay=args.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_drop)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None

    val_sampler = (DistributedSampler(val, shuffle=False) if info.enabled
                   else SequentialSampler(val))
    pin = device.type == "cuda"  # page-locked batches: asynchronous copies to the GPU
    val_loader = DataLoader(val, args.batch_size, sampler=val_sampler, drop_last=False,
                            collate_fn=collate_fn, num_workers=args.num_workers, pin_memory=pin)

    start_epoch, best_ap, resume_step = args.start_epoch, -1.0, 0
    if ckpt is not None:
        raw = ckpt.raw
        weights = ckpt.inference_model if args.eval else ckpt.model
        core.load_state_dict(join_state(core, weights, raw.get("dense_head")), strict=True)
        if not args.eval and "optimizer" in raw and "lr_scheduler" in raw and "epoch" in raw:
            if bool(raw.get("dense_head")) != (core.dense_head is not None):
                raise ValueError(f"{resume} was trained {'with' if raw.get('dense_head') else 'without'}"
                                 f" --dense_aux_coef; resume with the same setting, or start a new "
                                 f"run from it with --finetune_from")
            optimizer.load_state_dict(raw["optimizer"])
            scheduler.load_state_dict(raw["lr_scheduler"])
            _keep_or_change_lr_drop(scheduler, args, info.is_main)
            start_epoch = raw["epoch"] + 1
            best_ap = raw.get("best_ap", -1.0)
            resume_step = raw.get("resume_step", 0)
            if "rng" in raw:
                _restore_rng(raw["rng"], info)
            if scaler is not None and "scaler" in raw:
                scaler.load_state_dict(raw["scaler"])
        if info.is_main and not args.eval:
            at = f", step {resume_step}" if resume_step else ""
            print(f"resumed from {resume}, {ckpt.progress()} (next epoch {start_epoch}{at})")
        if not args.eval and start_epoch >= args.epochs:
            if info.is_main:
                print(f"{resume}: {ckpt.progress()} of --epochs {args.epochs} (counted from "
                      f"0): nothing left to train; raise --epochs to train longer, or "
                      f"evaluate it with --eval --resume {resume}")
            return {"stats": None, "best_ap": best_ap}

    if args.eval:
        if info.is_main:
            print(f"evaluating {resume}: {ckpt.progress()}")
            if output_dir is not None:
                write_json(output_dir / "args.json", vars(args))
        _, summary = run_evaluation(model, criterion, post["bbox"], val_loader, val, device,
                                    args, info, "eval", ckpt.epoch, output_dir)
        if info.is_main:
            _print_where(output_dir, ["eval/eval.json", "eval/detections_eval.json",
                                      "eval/pr_eval.png", "eval/confusion_eval.png"])
        return {"stats": summary.stats if summary else None, "best_ap": None}

    ema = WeightEMA(core, args.ema) if args.ema else None  # a copy of the weights as loaded
    if ckpt is not None:
        _resume_ema(ema, ckpt.raw, resume, info.is_main)
    train_sampler = (DistributedSampler(train_set, shuffle=True, seed=args.seed) if info.enabled
                     else RandomSampler(train_set, generator=torch.Generator().manual_seed(args.seed)))
    batch_sampler = SkipBatches(BatchSampler(train_sampler, args.batch_size, drop_last=True))
    if len(batch_sampler) == 0:
        raise ValueError(f"the training set has {len(train_set)} images, fewer than one batch "
                         f"of --batch_size {args.batch_size} per process")
    train_loader = DataLoader(train_set, batch_sampler=batch_sampler, collate_fn=collate_fn,
                              num_workers=args.num_workers, pin_memory=pin)
    if info.is_main:  # written once the run has started for good
        write_json(output_dir / "args.json", vars(args))
    writer = _tensorboard(output_dir) if info.is_main else None
    last_stats = None
    start = time.time()

    def checkpoint_state(epoch: int, rng: list, step: int = 0) -> dict:
        # "model" is the plain DETR the official code loads; a training-only head apart.
        inference, head = split_state(core.state_dict())
        state = {
            "model": inference,
            "dense_head": head,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": epoch,  # the last completed epoch
            "resume_step": step,  # steps already done in epoch + 1 (after an interruption)
            "best_ap": best_ap,
            "args": {k: v for k, v in vars(args).items()},
            "config": config.to_dict(),
            "label_to_category_id": val.label_to_category_id,
            "category_names": val.category_names,
            "rng": rng,  # one entry per process, by rank
            "finetuned_from": args.finetune_from,
        }
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if ema is not None:  # the average, split the same way
            averaged, averaged_head = split_state(ema.module.state_dict())
            state.update(ema=averaged, ema_dense_head=averaged_head, ema_updates=ema.updates)
        return state

    stop = StopRequest(device, verbose=info.is_main)
    with stop:
        for epoch in range(start_epoch, args.epochs):
            if info.enabled:
                train_sampler.set_epoch(epoch)
            else:  # reproducible order per epoch, also after a resume
                train_sampler.generator.manual_seed(args.seed * 100003 + epoch)
            first_step = resume_step if epoch == start_epoch else 0
            batch_sampler.skip = first_step
            try:
                train_stats = train_one_epoch(
                    model, criterion, train_loader, optimizer, device, epoch,
                    args.clip_max_norm, args.accum_steps, args.amp, scaler, args.max_bad_steps,
                    args.print_freq, verbose=info.is_main, first_step=first_step,
                    should_stop=stop, ema=ema,
                )
            except TrainingInterrupted as stopped:
                rng = all_gather_lists([_rng_state()])
                if info.is_main and output_dir is not None:
                    save_checkpoint(checkpoint_state(epoch - 1, rng, stopped.steps_done),
                                    str(output_dir / "checkpoint.pth"))
                    print(f"stopped in epoch {epoch} after {stopped.steps_done} steps; "
                          f"checkpoint saved: {output_dir / 'checkpoint.pth'} (exit code 75); "
                          f"continue with the same command and --resume auto", flush=True)
                barrier()
                raise
            scheduler.step()
            log = {**{f"train_{k}": v for k, v in train_stats.items()}}
            is_last = epoch + 1 == args.epochs
            summary = None
            if (epoch + 1) % args.eval_every == 0 or is_last:
                test_stats, summary = run_evaluation(
                    model if ema is None else ema.module, criterion, post["bbox"], val_loader,
                    val, device, args, info, f"{epoch:04d}", epoch, output_dir)
                log.update({f"test_{k}": v for k, v in test_stats.items()})
                if summary is not None:
                    log["test_coco_eval_bbox"] = summary.stats
                    last_stats = summary.stats
            log.update(epoch=epoch, n_parameters=n_parameters)
            rng = all_gather_lists([_rng_state()])
            if info.is_main:
                ap = summary.stats[0] if summary is not None else None
                improved = ap is not None and ap > best_ap
                if improved:
                    best_ap = ap
                if output_dir is not None:
                    state = checkpoint_state(epoch, rng)
                    save_checkpoint(state, str(output_dir / "checkpoint.pth"))
                    if improved:
                        save_checkpoint(state, str(output_dir / "checkpoint_best.pth"))
                    with open(output_dir / "log.txt", "a") as f:
                        f.write(json.dumps(log) + "\n")
                if writer is not None:
                    for k, v in log.items():
                        if isinstance(v, (int, float)):
                            writer.add_scalar(k, v, epoch)
                    if ap is not None:
                        writer.add_scalar("test_AP", ap, epoch)
                elapsed = time.time() - start
                shown = f", AP {ap:.4f} (best {best_ap:.4f})" if ap is not None else ""
                left = elapsed / (epoch + 1 - start_epoch) * (args.epochs - epoch - 1)
                print(f"epoch {epoch} done in {elapsed:.0f}s total{shown}; about {left:.0f}s "
                      f"({args.epochs - epoch - 1} epochs) left", flush=True)
            barrier()
    if writer is not None:
        writer.close()
    if info.is_main:
        _print_where(output_dir, ["checkpoint.pth", "checkpoint_best.pth", "log.txt", "eval/"])
        print(finish_report(output_dir, val, time.time() - start,
                            last_stats[0] if last_stats is not None else None, best_ap))
    return {"stats": last_stats, "best_ap": best_ap}


def _resume_ema(ema: WeightEMA | None, raw: dict, path: str, verbose: bool) -> None:
    """Continue the checkpoint's average, or say why the average starts afresh."""
    if ema is None:
        if "ema" in raw and verbose:
            print(f"note: {path} has an EMA of the weights; without --ema training goes on "
                  f"from the trained weights and keeps no average")
        return
    if "ema" in raw:
        ema.load_state_dict({"ema": join_state(ema.module, raw["ema"], raw.get("ema_dense_head")),
                             "ema_updates": raw["ema_updates"]})
    elif verbose:
        print(f"note: {path} has no EMA of the weights; --ema starts a new one")


def _print_where(output_dir: Path | None, names: list[str]) -> None:
    """The last lines of a run: where its files are and how to look at them."""
    if output_dir is None:
        print("results were printed only (no --output_dir)")
        return
    found = [str(output_dir / n) for n in names if (output_dir / n).exists()]
    print(f"written: {', '.join(found)}")
