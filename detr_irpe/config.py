"""The configuration of a run besides the model (:class:`~detr_irpe.models.config.DETRConfig`):
optimisation, data and the run itself, one typed value each, every default and every check
written once.  Field names are the official command-line names; ``main.py``'s flags are
generated from these fields (:mod:`detr_irpe.options`).

Plain Python (no torch): the command line validates against it before the heavy imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from detr_irpe.models.config import DETRConfig
from detr_irpe.models.fields import FromOptions, check_at_least, check_choice, check_within, option

# DETR's evaluation resize: shorter side 800, longer side at most 1333.
EVAL_SIZE, EVAL_MAX_SIZE = 800, 1333
# COCOeval implementations (detr_irpe.evaluation.backends); "auto": faster_coco_eval if installed.
EVAL_BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
EVAL_PROTOCOLS = ("per_image", "official")
AMP_MODES = ("off", "bf16", "fp16")
LR_SCHEDULES = ("step", "cosine")
DATASETS = ("coco", "custom")


@dataclass(frozen=True)
class OptimConfig(FromOptions):
    """How the weights are updated (official names and defaults; ``lr_backbone`` belongs to
    the model, which freezes its backbone when it is 0)."""

    lr: float = option(1e-4, "learning rate of the transformer and heads")
    batch_size: int = option(2, "images per process per step")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    epochs: int = option(300, "epochs to train (printed from 0)")
    lr_drop: int = option(200, "divide the learning rates by 10 after this many epochs")
    lr_schedule: str = option(
        LR_SCHEDULES[0], "step: DETR's drop by 10 after --lr_drop epochs; cosine: half a cosine "
        "from the learning rates down to a hundredth of them over the run, adjusted every step",
        choices=LR_SCHEDULES)
    warmup_steps: int = option(0, "raise the learning rates linearly over the first N optimiser "
                               "steps (0 = off, as in DETR)")
    time_budget: float | None = option(
        None, "plan the run to end within this many minutes of wall time on this machine, "
        "start-up, evaluations and the final pictures included: the epochs, the learning-rate "
        "decay and the evaluations are derived from the speed measured in the first steps "
        "and printed (replaces --epochs, --lr_drop and --eval_every; default: off)",
        type=float, metavar="MINUTES")
    clip_max_norm: float = option(0.1, "gradient clipping max norm (0 = off)")
    accum_steps: int = option(
        1, "gradient accumulation: total batch = batch_size x processes x accum_steps")
    amp: str = option("off", "mixed precision: GPU, or bf16 on CPUs whose oneDNN has bf16 "
                      "kernels (AVX-512); other CPUs run float32 instead, with a note", choices=AMP_MODES)
    max_bad_steps: int = option(10, "stop after this many consecutive non-finite steps")
    ema: float | None = option(
        None, "keep an exponential moving average of the weights with this decay (e.g. "
        "0.9998), evaluate it and save it in the checkpoint; --eval and prediction use it "
        "(default: off)", type=float, metavar="DECAY")

    def __post_init__(self):
        check_at_least(self, ("epochs", "lr_drop", "batch_size", "accum_steps", "max_bad_steps"), 1)
        check_choice("amp", self.amp, AMP_MODES)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_at_least(self, ("warmup_steps",), 0)
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"--time_budget {self.time_budget}: must be a positive number of "
                             f"minutes")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"--lr {self.lr}, --weight_decay {self.weight_decay}: --lr must be "
                             f"> 0, --weight_decay >= 0")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"--ema {self.ema}: the decay must be in (0, 1), e.g. 0.9998")


@dataclass(frozen=True)
class DataConfig(FromOptions):
    """Where the images and annotations are and how they are resized."""

    dataset_file: str = option("coco", "coco, or custom (set by --train_json/--val_json)")
    coco_path: str | None = option(
        None, "COCO 2017 root (annotations/, train2017[.zip], ...) (default: none)")
    train_json: str | None = option(
        None, "custom data: COCO-format training annotations (default: none)")
    train_images: str | None = option(
        None, "custom data: training image folder or zip (default: none)")
    val_json: str | None = option(
        None, "custom data: COCO-format validation annotations (default: none)")
    val_images: str | None = option(
        None, "custom data: validation image folder or zip (default: none)")
    skip_unreadable: bool = option(
        False, "leave out (and report) images whose file is missing or unreadable instead of "
        "stopping; other dataset errors still stop")
    train_scales: list[int] | None = option(
        None, "shorter-side sizes of the training resize (default: DETR's 480, 512, ..., 800)",
        type=int, nargs="+")
    max_size: int = option(
        EVAL_MAX_SIZE, "longest side after resizing (default: the checkpoint's with "
        f"--resume/--eval, else {EVAL_MAX_SIZE})")
    val_size: int = option(
        EVAL_SIZE, "shorter side for evaluation (default: the checkpoint's with --resume/--eval, "
        f"else {EVAL_SIZE})")
    size_multiple: int = option(
        1, "round each resized image's height and width to a multiple of N pixels, in "
        "training, evaluation and prediction (1 = off, as DETR; the CPU demo: 16, the "
        "backbone's stride, so that every feature cell lies inside its image: docs/training.md)")
    image_zoom: float = option(
        1.0, "custom data trained from scratch: the sizes that follow the data (--val_size, "
        "--train_scales, --max_size when not given) are this many times the images' own; "
        "above 1, small objects span more feature cells (docs/training.md)")
    num_workers: int = option(
        2, "data-loading processes (0: load in the training process, faster on a 2-core CPU, "
        "where a worker takes time from the compute threads)")
    scale_per_batch: bool = option(
        False, "draw the training resize's scale once per batch instead of once per image, so "
        "a batch's images share their shorter side and carry less padding (off: one per image, as DETR)")
    mosaic: float = option(
        0.0, "training augmentation: the probability that an image is a mosaic, a window of "
        "its own size onto it and three random training images meeting at a point; objects "
        "keep their scale (0 = off, as DETR; docs/training.md)")
    mosaic_until: float = option(
        1.0, "the share of the planned epochs, from the first, that use --mosaic; the rest "
        "train on plain images (YOLOv8's close_mosaic; 1 = every epoch)")
    size_buckets: int = option(
        0, "pad every training batch to the smallest of N fixed sizes (multiples of 32 "
        "derived from --max_size and --train_scales) that covers it, so the step has a few "
        "static shapes (for --compile); 0 = off: pad to the batch's largest image, as DETR")
    round_batches: bool = option(
        False, "pad every training batch up to a multiple of 32 pixels on each side: a few "
        "dozen shapes instead of a new one per batch, so oneDNN's kernels for them stay "
        "cached on a CPU (off: pad to the batch's largest image, as DETR)")

    def __post_init__(self):
        check_choice("dataset_file", self.dataset_file, DATASETS)
        check_at_least(self, ("max_size", "val_size", "size_multiple"), 1)
        if not 0.25 <= self.image_zoom <= 4:
            raise ValueError(f"--image_zoom {self.image_zoom}: must be in [0.25, 4] (1 = the "
                             "images' own sizes)")
        check_at_least(self, ("num_workers", "size_buckets"), 0)
        check_within(self, ("mosaic", "mosaic_until"), 0, 1)  # a probability, a share
        if self.round_batches and self.size_buckets:
            raise ValueError("--round_batches and --size_buckets both choose the padded size "
                             "of a batch; use one of them")
        if self.train_scales is not None and min(self.train_scales) < 1:
            raise ValueError(f"--train_scales {self.train_scales}: every size must be >= 1")


@dataclass(frozen=True)
class RunConfig(FromOptions):
    """What the run does, where it writes, and how its processes meet."""

    output_dir: str | None = option(
        None, "where checkpoint.pth, log.txt and eval/ go; needed to train (default: none: "
        "--eval then only prints)")
    device: str | None = option(None, "cuda, cuda:N or cpu (default: cuda when available)")
    seed: int = option(42, "random seed (each process adds its rank)")
    resume: str | None = option(
        None, "checkpoint to continue or evaluate, or 'auto' (--output_dir/checkpoint.pth if "
        "present) (default: none)")
    start_epoch: int = option(0, "first epoch when not resuming")
    overwrite: bool = option(
        False, "train in an --output_dir that holds another run's checkpoints and log: they "
        "are deleted first (without it such a run stops; --resume auto continues the old run)")
    eval: bool = option(False, "only evaluate the --resume checkpoint")
    eval_protocol: str = option(
        EVAL_PROTOCOLS[0], "per_image: the backbone sees each image alone (AP independent of the "
        "batch size); official: images padded together in batches of --batch_size, in the "
        "sampler's order, as the published AP figures were measured (use --batch_size 2)",
        choices=EVAL_PROTOCOLS)
    eval_backend: str = option(
        EVAL_BACKENDS[0], "COCOeval implementation: faster_coco_eval (same numbers, several "
        "times faster), pycocotools (the reference), or auto (faster_coco_eval when installed)",
        choices=EVAL_BACKENDS)
    eval_every: int = option(1, "evaluate every N epochs (and after the last)")
    print_freq: int = option(50, "progress line every N iterations")
    finetune_from: str | None = option(
        None, "start from this checkpoint (official DETR, DETR-with-iRPE or ours): every tensor "
        "whose name and shape fit is loaded, the class head is re-initialised (default: none)")
    finetune_reset_queries: bool = option(
        False, "with --finetune_from, also re-initialise the query embeddings")
    trust_checkpoint: bool = option(
        False, "allow arbitrary pickled objects in --resume files (only for files you trust)")
    threads: int | None = option(
        None, "CPU threads for torch (default: this machine's cores, split between processes)",
        type=int)
    dist_url: str = option("env://", "rendezvous of the processes (torchrun sets it)")
    compile: bool = option(
        False, "torch.compile the backbone and the transformer for training (the matching and "
        "the losses stay eager; evaluation runs eagerly); with --size_buckets the shapes are "
        "static (dynamic=False)")

    def __post_init__(self):
        check_at_least(self, ("start_epoch",), 0)
        check_at_least(self, ("eval_every", "print_freq"), 1)
        check_choice("eval_protocol", self.eval_protocol, EVAL_PROTOCOLS)
        check_choice("eval_backend", self.eval_backend, EVAL_BACKENDS)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads {self.threads}: must be >= 1")


@dataclass(frozen=True)
class Settings:
    """The four configurations of one run, built from its flat options (``vars(args)``,
    the form official checkpoints store)."""

    model: DETRConfig
    optim: OptimConfig
    data: DataConfig
    run: RunConfig

    @classmethod
    def from_options(cls, options: dict) -> Settings:
        return cls(DETRConfig.from_options(options), OptimConfig.from_options(options),
                   DataConfig.from_options(options), RunConfig.from_options(options))

    def to_options(self) -> dict:
        """The flat options again (every field of the four configurations)."""
        return {**self.model.to_dict(), **asdict(self.optim), **asdict(self.data),
                **asdict(self.run)}


# Every option of a run, by concern, in the order of ``main.py --help``.
CONFIGS = {"optimisation": OptimConfig, "model": DETRConfig, "data": DataConfig, "run": RunConfig}
