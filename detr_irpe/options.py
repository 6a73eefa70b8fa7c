"""The command line of ``main.py``: the official DETR / DETR-with-iRPE flags plus ours.

The flags are generated from the configuration fields (defaults, help, choices) and the
values are checked by the configurations themselves; what is left here concerns the
command line as a whole (presets, schedules, data paths, which options go together).

Precedence: built-in defaults < ``--config`` preset (TOML) < ``--schedule`` < explicit
flags.  A bad value fails at start with one line that names the flag.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tomllib
from dataclasses import Field, fields

from detr_irpe.config import CONFIGS, Settings
from detr_irpe.models.irpe_config import canonical_irpe
from detr_irpe.urls import is_url

SCHEDULES = {"150e": (150, 100), "300e": (300, 200), "500e": (500, 400)}
# Official flags we accept for compatibility but whose feature is not part of this project.
UNSUPPORTED = {"masks": False, "frozen_weights": None, "coco_panoptic_path": None,
               "remove_difficult": False}
# Official flags accepted and ignored: DETR's mask losses, and the process count torchrun sets.
COMPATIBLE = {"mask_loss_coef": 1.0, "dice_loss_coef": 1.0, "world_size": 1}
# Exit codes of main.py (also printed by --help).
EXIT_ERROR = 1  # a problem with the data, a file or the machine: the message says which
EXIT_USAGE = 2  # a bad command line or preset (argparse's code)
EXIT_INTERRUPTED = 75  # stopped by SIGTERM/SIGINT, checkpoint saved (EX_TEMPFAIL)
# What a problem with the inputs raises, answered by one line and EXIT_ERROR instead of a
# traceback: files that are missing, unreadable or not writable (OSError), bad values
# (ValueError), a checkpoint that does not fit (RuntimeError) or holds disallowed pickled
# types, a run whose losses stay non-finite (FloatingPointError).
INPUT_ERRORS = (OSError, ValueError, RuntimeError, pickle.UnpicklingError, FloatingPointError)
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
    """The flags: one per field of the configurations (``detr_irpe/config.py``,
    ``detr_irpe/models/config.py``), plus the preset, the schedule and the official flags
    kept for compatibility."""
    p = _Parser("main.py", description="Train and evaluate DETR with iRPE (see README.md).",
                formatter_class=_HelpFormatter, epilog=EPILOG)
    p.add_argument("--config", default=None,
                   help="TOML preset (configs/*.toml); explicit flags override it (default: none)")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                   help="sets --epochs/--lr_drop: 150e = 150/100, 300e = 300/200, 500e = 500/400 "
                        "(default: none, --epochs and --lr_drop as given)")
    for title, config in CONFIGS.items():
        group = p.add_argument_group(title)
        for f in fields(config):
            _add_field(group, f)
    for name, default in COMPATIBLE.items():
        p.add_argument(f"--{name}", type=type(default), default=default,
                       help="official flag, accepted for compatibility; unused")
    for name, default in UNSUPPORTED.items():
        if isinstance(default, bool):
            p.add_argument(f"--{name}", action="store_true", help=argparse.SUPPRESS)
        else:
            p.add_argument(f"--{name}", default=default, help=argparse.SUPPRESS)
    return p


def _add_field(group, f: Field) -> None:
    """One flag for a configuration field: its name, default, help and choices."""
    cli = dict(f.metadata)
    flag = cli.pop("flag", f"--{f.name}")
    if isinstance(f.default, bool):  # a switch; one that defaults to on is turned off
        action = "store_false" if f.default else "store_true"
        group.add_argument(flag, dest=f.name, action=action, help=cli.pop("help"))
        return
    cli.setdefault("type", type(f.default) if f.default is not None else str)
    group.add_argument(flag, dest=f.name, default=f.default, **cli)


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
    """One clear line per impossible or inconsistent value.  The value checks belong to the
    configurations; here are those that concern the command line as a whole."""
    err = parser.error
    for name in UNSUPPORTED:
        if getattr(args, name) != UNSUPPORTED[name]:
            err(f"--{name} belongs to DETR's segmentation/other datasets, not supported here")
    try:
        args.enc_rpe2d = canonical_irpe(args.enc_rpe2d)
        Settings.from_options(vars(args))
    except ValueError as e:
        err(str(e))
    if args.time_budget is not None:
        fixed = [f"--{k}" for k in ("epochs", "lr_drop", "eval_every")
                 if args.given.get(k) in ("the command line", f"--schedule {args.schedule}")]
        if fixed:
            err(f"--time_budget plans the epochs, the learning-rate drop and the evaluations "
                f"itself; leave out {', '.join(fixed)}")
    elif args.lr_schedule == "step" and args.lr_drop > args.epochs:  # cosine has no drop
        if "lr_drop" in args.given:
            err(f"--lr_drop {args.lr_drop} > --epochs {args.epochs}: the learning rate would "
                f"never drop; use an lr_drop <= epochs (the schedules use 2/3 of the epochs)")
        print(f"note: the default --lr_drop {args.lr_drop} > --epochs {args.epochs}: the "
              f"learning rate never drops (set --lr_drop or --schedule)", file=sys.stderr)
    if args.finetune_from and not is_url(args.finetune_from) and not os.path.isfile(
        args.finetune_from
    ):
        err(f"--finetune_from {args.finetune_from}: no such file")
    if args.finetune_from and args.eval:
        err("--finetune_from starts a training run; to evaluate a checkpoint use --eval --resume")
    _check_data_paths(err, args)
    if args.eval and not args.resume:
        err("--eval needs --resume <checkpoint> (the model to evaluate)")
    if args.resume == "auto" and not args.output_dir:
        err("--resume auto needs --output_dir DIR: it continues from DIR/checkpoint.pth "
            "(or name a checkpoint: --resume FILE)")
    if not args.eval and not args.output_dir:
        err("training needs --output_dir DIR: checkpoint.pth, log.txt and eval/ are written "
            "there (e.g. --output_dir output/run)")


def _check_data_paths(err, args: argparse.Namespace) -> None:
    """Custom data needs its files; COCO needs its annotation files; one of them is needed."""
    custom = {"--train_json": args.train_json, "--train_images": args.train_images,
              "--val_json": args.val_json, "--val_images": args.val_images}
    if any(custom.values()):
        if not (args.val_json and args.val_images):
            err("custom data needs --val_json and --val_images (and, to train, --train_json "
                "and --train_images)")
        if not args.eval and not (args.train_json and args.train_images):
            err("training on custom data needs --train_json and --train_images")
        for flag, path in custom.items():
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


# What the tools' command lines (tools/*.py) share: the checkpoint flags, and the one-line
# error with EXIT_ERROR for a problem with the inputs (EXIT_USAGE stays argparse's).
def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (ours or official)")


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="allow arbitrary pickles in --checkpoint (only for trusted files)")


def input_error(err: Exception) -> int:
    """Print ``error: <err>`` as one line on stderr; the exit code of an input error."""
    print(f"error: {err}", file=sys.stderr, flush=True)
    return EXIT_ERROR
