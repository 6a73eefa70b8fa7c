"""The command line of ``main.py``: the official DETR / DETR-with-iRPE flags plus ours.

Precedence: built-in defaults < ``--config`` preset (TOML) < ``--schedule`` < explicit
flags.  Every value is validated here, so a bad one fails at start with one line that
names the flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib

from .config import (
    BACKBONE_NORMS,
    BACKBONE_STRIDES,
    EVAL_BACKENDS,
    EVAL_MAX_SIZE,
    EVAL_SIZE,
    PAPER_IRPE,
    RESNETS,
)
from .models.irpe_config import IRPE_INITS, parse_irpe
from .urls import is_url

SCHEDULES = {"150e": (150, 100), "300e": (300, 200), "500e": (500, 400)}
# Official flags we accept for compatibility but whose feature is not part of this project.
UNSUPPORTED = {"masks": False, "frozen_weights": None, "coco_panoptic_path": None,
               "remove_difficult": False}
# Exit codes of main.py (also printed by --help).
EXIT_ERROR = 1  # a problem with the data, a file or the machine: the message says which
EXIT_USAGE = 2  # a bad command line or preset (argparse's code)
EXIT_INTERRUPTED = 75  # stopped by SIGTERM/SIGINT, checkpoint saved (EX_TEMPFAIL)
EPILOG = (f"exit codes: 0 done; {EXIT_ERROR} error (one line says what and what to do); "
          f"{EXIT_USAGE} bad command line; {EXIT_INTERRUPTED} stopped by SIGTERM/SIGINT with the "
          f"checkpoint saved (run the same command with --resume auto)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line naming the flag and what to do (no usage dump), exit code 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Every help line ends with the flag's default, unless the text states it already
    (defaults that depend on other options are written out in words); switches have none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser("main.py", description="Train and evaluate DETR with iRPE (see README.md).",
                formatter_class=_HelpFormatter, epilog=EPILOG)
    a = p.add_argument
    a("--config", default=None,
      help="TOML preset (configs/*.toml); explicit flags override it (default: none)")
    a("--schedule", choices=sorted(SCHEDULES), default=None,
      help="sets --epochs/--lr_drop: 150e = 150/100, 300e = 300/200, 500e = 500/400 "
           "(default: none, --epochs and --lr_drop as given)")
    # Optimisation (official names and defaults).
    a("--lr", type=float, default=1e-4, help="learning rate of the transformer and heads")
    a("--lr_backbone", type=float, default=1e-5, help="learning rate of the backbone")
    a("--batch_size", type=int, default=2, help="images per process per step")
    a("--weight_decay", type=float, default=1e-4, help="AdamW weight decay")
    a("--epochs", type=int, default=300, help="epochs to train (printed from 0)")
    a("--lr_drop", type=int, default=200, help="divide the learning rates by 10 after this many epochs")
    a("--clip_max_norm", type=float, default=0.1, help="gradient clipping max norm (0 = off)")
    a("--accum_steps", type=int, default=1,
      help="gradient accumulation: total batch = batch_size x processes x accum_steps")
    a("--amp", choices=["off", "bf16", "fp16"], default="off",
      help="mixed precision: GPU, or bf16 on CPUs with bf16 instructions (e.g. avx512_bf16)")
    # Model.  With --resume or --eval these come from the checkpoint.
    a("--backbone", default="resnet50", choices=RESNETS, help="ResNet depth")
    a("--dilation", action="store_true", help="DC5: dilate layer4 instead of striding")
    a("--position_embedding", default="sine", choices=("sine", "learned"),
      help="position encoding added to the image features")
    a("--pretrained_backbone", default="imagenet",
      help="'imagenet' (torchvision IMAGENET1K_V1), 'none' (random init) or a file path")
    a("--backbone_norm", default="frozen", choices=BACKBONE_NORMS,
      help="'frozen' batch norm (DETR, for a pretrained backbone) or trainable 'batch' norm "
           "(for training from random init)")
    a("--trainable_backbone_layers", type=int, default=3, choices=range(6), metavar="{0..5}",
      help="ResNet stages that train, from the top: 3 = layer2-4 (DETR), 5 = all")
    a("--backbone_stride", type=int, default=BACKBONE_STRIDES[0], choices=BACKBONE_STRIDES,
      help="32: ResNet layer4 features (DETR); 16: layer3 features, layer4 left out (C4: "
           "4x the feature cells, for small images; official checkpoints need 32)")
    a("--enc_layers", type=int, default=6, help="transformer encoder layers")
    a("--dec_layers", type=int, default=6, help="transformer decoder layers")
    a("--dim_feedforward", type=int, default=2048, help="hidden size of the feed-forward blocks")
    a("--hidden_dim", type=int, default=256, help="width of the transformer")
    a("--dropout", type=float, default=0.1, help="dropout in the transformer")
    a("--nheads", type=int, default=8, help="attention heads")
    a("--num_queries", type=int, default=100, help="object queries: most objects per image")
    a("--pre_norm", action="store_true", help="layer norm before (not after) each block")
    a("--enc_rpe2d", default=None,
      help="iRPE of the encoder: rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}; '' = off "
           f"(default: {PAPER_IRPE}, or the --finetune_from checkpoint's)")
    a("--irpe_init", default=IRPE_INITS[0], choices=IRPE_INITS,
      help="how the iRPE tables start: xavier (the official run) or zero (a fresh model "
           "computes plain DETR; e.g. to fine-tune a plain DETR checkpoint)")
    a("--num_classes", type=int, default=None,
      help="largest label + 1 (default: 91 for COCO, derived from the data for custom sets)")
    # Loss.
    a("--no_aux_loss", dest="aux_loss", action="store_false",
      help="no losses on the outputs of the intermediate decoder layers")
    a("--set_cost_class", type=float, default=1.0, help="matching cost weight: class")
    a("--set_cost_bbox", type=float, default=5.0, help="matching cost weight: L1 box")
    a("--set_cost_giou", type=float, default=2.0, help="matching cost weight: GIoU")
    a("--bbox_loss_coef", type=float, default=5.0, help="loss weight: L1 box")
    a("--giou_loss_coef", type=float, default=2.0, help="loss weight: GIoU")
    a("--dense_aux_coef", type=float, default=0.0,
      help="training only: weight of a dense auxiliary head on the encoder output (each token "
           "near an object's centre predicts its class and box; speeds up training from "
           "scratch); 0 = off.  Saved checkpoints are plain DETR (README, 'Training aids')")
    a("--eos_coef", type=float, default=0.1, help="class-loss weight of the 'no object' class")
    a("--mask_loss_coef", type=float, default=1.0, help="accepted for compatibility; unused")
    a("--dice_loss_coef", type=float, default=1.0, help="accepted for compatibility; unused")
    # Data.
    a("--dataset_file", default="coco",
      help="coco, or custom (set by --train_json/--val_json)")
    a("--coco_path", default=None,
      help="COCO 2017 root (annotations/, train2017[.zip], ...) (default: none)")
    a("--train_json", default=None, help="custom data: COCO-format training annotations (default: none)")
    a("--train_images", default=None, help="custom data: training image folder or zip (default: none)")
    a("--val_json", default=None, help="custom data: COCO-format validation annotations (default: none)")
    a("--val_images", default=None, help="custom data: validation image folder or zip (default: none)")
    a("--skip_unreadable", action="store_true",
      help="leave out (and report) images whose file is missing or unreadable instead of "
           "stopping; other dataset errors still stop")
    a("--train_scales", type=int, nargs="+", default=None,
      help="shorter-side sizes of the training resize (default: DETR's 480, 512, ..., 800)")
    a("--max_size", type=int, default=EVAL_MAX_SIZE,
      help="longest side after resizing (default: the checkpoint's with --resume/--eval, "
           f"else {EVAL_MAX_SIZE})")
    a("--val_size", type=int, default=EVAL_SIZE,
      help="shorter side for evaluation (default: the checkpoint's with --resume/--eval, "
           f"else {EVAL_SIZE})")
    # Run.
    a("--output_dir", default=None,
      help="where checkpoint.pth, log.txt and eval/ go; needed to train (default: none: "
           "--eval then only prints)")
    a("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when available)")
    a("--seed", type=int, default=42, help="random seed (each process adds its rank)")
    a("--resume", default=None,
      help="checkpoint to continue or evaluate, or 'auto' (--output_dir/checkpoint.pth if "
           "present) (default: none)")
    a("--start_epoch", type=int, default=0, help="first epoch when not resuming")
    a("--eval", action="store_true", help="only evaluate the --resume checkpoint")
    a("--eval_protocol", default="per_image", choices=("per_image", "official"),
      help="per_image: the backbone sees each image alone (AP independent of the batch size); "
           "official: images padded together in batches of --batch_size, in the sampler's "
           "order, as the published AP figures were measured (use --batch_size 2)")
    a("--eval_backend", default="auto", choices=EVAL_BACKENDS,
      help="COCOeval implementation: faster_coco_eval (same numbers, several times faster), "
           "pycocotools (the reference), or auto (faster_coco_eval when installed)")
    a("--num_workers", type=int, default=2, help="data-loading processes")
    a("--world_size", type=int, default=1, help="set by torchrun/SLURM; accepted for compatibility")
    a("--dist_url", default="env://", help="rendezvous of the processes (torchrun sets it)")
    a("--print_freq", type=int, default=50, help="progress line every N iterations")
    a("--eval_every", type=int, default=1, help="evaluate every N epochs (and after the last)")
    a("--ema", type=float, default=None, metavar="DECAY",
      help="keep an exponential moving average of the weights with this decay (e.g. 0.9998), "
           "evaluate it and save it in the checkpoint; --eval and prediction use it "
           "(default: off)")
    a("--max_bad_steps", type=int, default=10,
      help="stop after this many consecutive non-finite steps")
    a("--finetune_from", default=None,
      help="start from this checkpoint (official DETR, DETR-with-iRPE or ours): every tensor "
           "whose name and shape fit is loaded, the class head is re-initialised (default: none)")
    a("--finetune_reset_queries", action="store_true",
      help="with --finetune_from, also re-initialise the query embeddings")
    a("--trust_checkpoint", action="store_true",
      help="allow arbitrary pickled objects in --resume files (only for files you trust)")
    a("--threads", type=int, default=None,
      help="CPU threads for torch (default: this machine's cores, split between processes)")
    for name, default in UNSUPPORTED.items():
        if isinstance(default, bool):
            a(f"--{name}", action="store_true", help=argparse.SUPPRESS)
        else:
            a(f"--{name}", default=default, help=argparse.SUPPRESS)
    return p


def _load_preset(parser: argparse.ArgumentParser, path: str) -> dict:
    if not os.path.isfile(path):
        parser.error(f"--config {path}: no such file (presets live in configs/)")
    try:
        with open(path, "rb") as f:
            preset = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        parser.error(f"--config {path}: not valid TOML: {err}")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(preset) - known)
    if unknown:
        parser.error(f"--config {path}: unknown option(s) {unknown}; use the flag names of "
                     f"`python main.py --help` without the leading --")
    return preset


def _on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The options the command line itself sets (argparse fills in a default only for
    names the namespace does not hold yet)."""
    unset = object()
    probe = argparse.Namespace(**{a.dest: unset for a in parser._actions})
    parser.parse_known_args(argv, namespace=probe)
    return {name for name, value in vars(probe).items() if value is not unset}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate.  ``args.given`` maps every option that was set on purpose
    (command line, preset or schedule) to where it was set."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    first, _ = parser.parse_known_args(argv)
    given = {}
    if first.config:
        preset = _load_preset(parser, first.config)
        parser.set_defaults(**preset)
        given.update(dict.fromkeys(preset, f"--config {first.config}"))
        first, _ = parser.parse_known_args(argv)
    if first.schedule:
        epochs, lr_drop = SCHEDULES[first.schedule]
        # The schedule wins over the preset, explicit --epochs/--lr_drop win over both.
        parser.set_defaults(epochs=epochs, lr_drop=lr_drop)
        given.update(dict.fromkeys(("epochs", "lr_drop"), f"--schedule {first.schedule}"))
    args = parser.parse_args(argv)
    given.update(dict.fromkeys(_on_command_line(parser, argv), "the command line"))
    args.given = given
    validate(parser, args)
    return args


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One clear line per impossible or inconsistent value."""
    err = parser.error
    for name in UNSUPPORTED:
        if getattr(args, name) != UNSUPPORTED[name]:
            err(f"--{name} belongs to DETR's segmentation/other datasets, not supported here")
    if args.dataset_file not in ("coco", "custom"):
        err(f"--dataset_file {args.dataset_file!r}: use coco (with --coco_path) or custom "
            f"(with --train_json/--val_json)")
    if args.epochs < 1:
        err(f"--epochs {args.epochs}: must be >= 1")
    if args.lr_drop < 1:
        err(f"--lr_drop {args.lr_drop}: must be >= 1")
    if args.lr_drop > args.epochs:
        if "lr_drop" in getattr(args, "given", {}):
            err(f"--lr_drop {args.lr_drop} > --epochs {args.epochs}: the learning rate would "
                f"never drop; use an lr_drop <= epochs (the schedules use 2/3 of the epochs)")
        print(f"note: the default --lr_drop {args.lr_drop} > --epochs {args.epochs}: the "
              f"learning rate never drops (set --lr_drop or --schedule)", file=sys.stderr)
    for name in ("batch_size", "accum_steps", "num_queries", "hidden_dim", "nheads",
                 "enc_layers", "dec_layers", "dim_feedforward", "print_freq", "eval_every",
                 "max_bad_steps", "max_size", "val_size"):
        if getattr(args, name) < 1:
            err(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.num_workers < 0:
        err(f"--num_workers {args.num_workers}: must be >= 0")
    if args.lr <= 0 or args.lr_backbone < 0 or args.weight_decay < 0:
        err("--lr must be > 0, --lr_backbone and --weight_decay >= 0")
    if args.ema is not None and not 0 < args.ema < 1:
        err(f"--ema {args.ema}: the decay must be in (0, 1), e.g. 0.9998")
    if not 0 <= args.dropout < 1:
        err(f"--dropout {args.dropout}: must be in [0, 1)")
    if args.hidden_dim % args.nheads:
        err(f"--hidden_dim {args.hidden_dim} is not divisible by --nheads {args.nheads}")
    if args.num_classes is not None and args.num_classes < 1:
        err(f"--num_classes {args.num_classes}: must be >= 1 (largest label + 1)")
    if args.dense_aux_coef < 0:
        err(f"--dense_aux_coef {args.dense_aux_coef}: must be >= 0 (0 = off)")
    if args.dilation and args.backbone_stride != 32:
        err("--dilation dilates layer4, which --backbone_stride 16 leaves out; use one of them")
    if args.dilation and args.backbone in ("resnet18", "resnet34"):
        err(f"--dilation needs --backbone resnet50 or resnet101, not {args.backbone}")
    if args.enc_rpe2d is None:
        args.enc_rpe2d = PAPER_IRPE
    try:
        parse_irpe(args.enc_rpe2d)
    except ValueError as e:
        err(str(e))
    if args.finetune_from and not is_url(args.finetune_from) and not os.path.isfile(
        args.finetune_from
    ):
        err(f"--finetune_from {args.finetune_from}: no such file")
    if args.finetune_from and args.eval:
        err("--finetune_from starts a training run; to evaluate a checkpoint use --eval --resume")
    custom = [args.train_json, args.train_images, args.val_json, args.val_images]
    if any(custom):
        if not (args.val_json and args.val_images):
            err("custom data needs --val_json and --val_images (and, to train, --train_json "
                "and --train_images)")
        if not args.eval and not (args.train_json and args.train_images):
            err("training on custom data needs --train_json and --train_images")
        for flag, path in (("--train_json", args.train_json), ("--val_json", args.val_json),
                           ("--train_images", args.train_images),
                           ("--val_images", args.val_images)):
            if path and not os.path.exists(path):
                err(f"{flag} {path}: no such file or folder")
        args.dataset_file = "custom"
    elif args.coco_path:
        if not os.path.isdir(args.coco_path):
            err(f"--coco_path {args.coco_path}: no such folder")
        ann = os.path.join(args.coco_path, "annotations")
        needed = ["instances_val2017.json"] + ([] if args.eval else ["instances_train2017.json"])
        missing = [n for n in needed if not os.path.isfile(os.path.join(ann, n))]
        if missing:
            err(f"--coco_path {args.coco_path}: missing annotations/{missing[0]}; expected "
                f"annotations/instances_{{train,val}}2017.json and train2017/, val2017/ "
                f"(folders or .zip files)")
    else:
        err("no dataset: give --coco_path (COCO 2017) or --train_json/--train_images/"
            "--val_json/--val_images (custom data); `make run` generates and uses a demo set")
    if args.eval and not args.resume:
        err("--eval needs --resume <checkpoint> (the model to evaluate)")
    if not args.eval and not args.output_dir:
        err("training needs --output_dir DIR: checkpoint.pth, log.txt and eval/ are written "
            "there (e.g. --output_dir output/run)")
