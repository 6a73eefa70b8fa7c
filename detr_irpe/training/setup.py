"""A run's options, resolved once: the command line (with its preset and schedule, already
merged by :func:`detr_irpe.options.parse_args`), then the checkpoint being resumed or
evaluated, the checkpoint being fine-tuned from, and the data, in that order, into one
:class:`~detr_irpe.config.Settings`.  Nothing after this changes an option: the recipe
passes the configs, and ``args.json`` and the checkpoint's ``args`` are written from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from detr_irpe.checkpoint import Checkpoint, load_checkpoint
from detr_irpe.config import DataConfig, OptimConfig, RunConfig, Settings
from detr_irpe.data import CocoDetection
from detr_irpe.data.sizing import sizes_from_data
from detr_irpe.models.config import ARCHITECTURE, LAST_STAGE, DETRConfig
from detr_irpe.training.loaders import read_datasets, set_transforms
from detr_irpe.training.resume import resolve_resume


@dataclass
class RunSetup:
    """What the recipe starts from.  ``given`` maps each option set on purpose to where
    (command line, preset, schedule); ``resume`` is the checkpoint resumed or evaluated
    ('' for none), ``ckpt`` its contents, ``source`` the ``--finetune_from`` checkpoint."""

    settings: Settings
    given: dict
    resume: str
    ckpt: Checkpoint | None
    source: Checkpoint | None
    train_set: CocoDetection | None
    val: CocoDetection

    def options(self) -> dict:
        """The run's flat options (``args.json``, the checkpoint's ``args``), with where
        each option set on purpose came from."""
        return {**self.settings.to_options(), "given": self.given}


def resolve_run(args, run: RunConfig, verbose: bool) -> RunSetup:
    """The one place where options are derived: each step below returns the options it
    changes, and the settings are built once from the result.  ``run`` (what the run does
    and where it writes) is the command line's alone: no checkpoint or data changes it."""
    options, given = dict(vars(args)), dict(args.given)
    options.pop("given")
    resume = resolve_resume(options["resume"], options["output_dir"], options["start_epoch"],
                            verbose)
    ckpt = load_checkpoint(resume, trust=options["trust_checkpoint"]) if resume else None
    if ckpt is not None:
        options.update(checkpoint_options(options, given, ckpt, resume, verbose))
    source = None
    if options["finetune_from"] and ckpt is None:
        source = load_checkpoint(options["finetune_from"], trust=options["trust_checkpoint"])
        options.update(finetune_options(options, given, source, verbose))
    train_set, val = read_datasets(DataConfig.from_options(options), options["eval"])
    if train_set is not None and options["dataset_file"] == "custom" and not (ckpt or source):
        options.update(sizes_from_training_set(given, train_set, options["image_zoom"],
                                               options["size_multiple"], verbose))
    options.update(num_classes_from_data(options, given, val, resume))
    settings = Settings(DETRConfig.from_options(options), OptimConfig.from_options(options),
                        DataConfig.from_options(options), run)
    set_transforms(train_set, val, settings.data)
    return RunSetup(settings, given, resume, ckpt, source, train_set, val)


def checkpoint_options(options: dict, given: dict, ckpt: Checkpoint, path: str,
                       verbose: bool) -> dict:
    """The options that make the run describe the model in ``ckpt``: every architecture
    option it records (``ARCHITECTURE``) and, unless given, its ``val_size`` / ``max_size`` /
    ``size_multiple`` / ``amp`` / ``pretrained_backbone`` and its scoring
    (``quality_weight``, ``clip_boxes``).  An option set on purpose that contradicts the
    checkpoint is an error naming both values."""
    adopted = {}
    for key in ARCHITECTURE:
        if key not in ckpt.options:
            continue
        stored, ours = ckpt.options[key], options[key]
        if key in given and stored != ours:
            raise ValueError(
                f"--{key} {ours!r} (from {given[key]}) contradicts {path}, which was trained "
                f"with {key} {stored!r}; leave --{key} out (the checkpoint's value is used)")
        if stored != ours:
            adopted[key] = stored
    # The evaluation resize and precision it ran with, so that --eval reproduces its AP, and
    # how its backbone began (its weights are in the checkpoint; a narrow trunk from random
    # init is valid only with pretrained_backbone "none").
    stored = ckpt.eval_sizes()
    for key in ("amp", "pretrained_backbone"):
        if ckpt.args.get(key):
            stored[key] = ckpt.args[key]
    stored.update(_scoring_options(options, given, ckpt, path))
    adopted.update({k: v for k, v in stored.items() if k not in given and options[k] != v})
    if verbose and adopted:
        shown = ", ".join(f"{k}={v!r}" for k, v in adopted.items())
        print(f"note: using the settings of {path}: {shown}")
    return adopted


def _scoring_options(options: dict, given: dict, ckpt: Checkpoint, path: str) -> dict:
    """How ``ckpt`` scores and clips its boxes (``quality_weight``, ``clip_boxes``), where it
    records them.  A given weight re-blends the checkpoint's own box-quality head; a weight
    that would build a head the checkpoint lacks, or drop the one it holds, is an error."""
    stored = {k: ckpt.options[k] for k in ("quality_weight", "clip_boxes") if k in ckpt.options}
    has_head = any(k.startswith("quality_embed.") for k in ckpt.model)
    if "quality_weight" in given and (options["quality_weight"] > 0) != has_head:
        holds = "holds a box-quality head" if has_head else "has no box-quality head"
        raise ValueError(
            f"--quality_weight {options['quality_weight']} (from {given['quality_weight']}) "
            f"does not fit {path}, which {holds}; leave --quality_weight out or give the "
            f"checkpoint's {stored.get('quality_weight', 0.0)}")
    return stored


def finetune_options(options: dict, given: dict, source: Checkpoint, verbose: bool) -> dict:
    """``enc_rpe2d``, ``query_anchors``, ``anchor_content`` and ``point_positions`` from the
    ``--finetune_from`` checkpoint unless given; an error for what cannot carry over."""
    path, theirs = options["finetune_from"], source.options.get("enc_rpe2d", "")
    adopted = {}
    for name in ("query_anchors", "anchor_content", "point_positions"):  # its queries' design
        if name not in given:
            adopted[name] = source.options.get(name, False)
    if "enc_rpe2d" not in given:
        adopted["enc_rpe2d"] = theirs
    elif theirs == "" and verbose:  # plain DETR into iRPE: only the tables are new
        start = "at zero" if options["irpe_init"] == "zero" else "Xavier-uniform"
        print(f"note: {path} is plain DETR; the {options['enc_rpe2d']} tables are new and "
              f"start {start} (--irpe_init zero starts from the checkpoint's function)")
    elif theirs not in ("", options["enc_rpe2d"]):
        raise ValueError(f"--finetune_from {path} was trained with --enc_rpe2d {theirs!r} but "
                         f"this run asks for {options['enc_rpe2d']!r}; leave --enc_rpe2d out "
                         f"to use the checkpoint's, or pass the same value")
    theirs_stride = source.options.get("backbone_stride", 32)
    if options["backbone_stride"] < theirs_stride:
        raise ValueError(f"--finetune_from {path} has the ResNet up to "
                         f"{LAST_STAGE[theirs_stride]} (stride {theirs_stride}); "
                         f"--backbone_stride {options['backbone_stride']} leaves stages of it "
                         f"out: give --backbone_stride {theirs_stride}")
    return adopted


def sizes_from_training_set(given: dict, train_set: CocoDetection, zoom: float, multiple: int,
                            verbose: bool) -> dict:
    """Custom data trained from scratch: the image sizes and queries that were not given
    follow the training set, the sizes times ``zoom``, multiples of ``--size_multiple`` too
    (:mod:`detr_irpe.data.sizing`)."""
    derived, reason = sizes_from_data(list(train_set.coco.imgs.values()),
                                      list(train_set.coco.anns.values()), zoom, multiple)
    derived = {k: v for k, v in derived.items() if k not in given}
    if verbose and derived:
        shown = " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in derived.items())
        print(f"from the data ({reason}): {shown}")
    return derived


def num_classes_from_data(options: dict, given: dict, val: CocoDetection, resume: str) -> dict:
    """``num_classes`` is derived from the data unless given or taken from a checkpoint;
    custom data must agree with it."""
    num_classes = options["num_classes"]
    if "num_classes" not in given and not resume:
        num_classes = val.num_classes
    if options["dataset_file"] == "custom" and num_classes != val.num_classes:
        where = resume or "--num_classes"
        raise ValueError(
            f"{where} gives num_classes {num_classes} but {options['val_json']} has "
            f"{val.num_classes} (largest label + 1); leave --num_classes out for custom data "
            f"(it is derived from the JSON), or use the data the checkpoint was trained on")
    return {"num_classes": num_classes}
