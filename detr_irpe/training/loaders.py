"""The datasets and data loaders of a run: samplers per process, reproducible order, and
skipping the batches already done when a run resumes mid-epoch, and the DataLoader whose
workers leave SIGTERM/SIGINT to the main process (``detr_irpe.machine.signals``)."""

from __future__ import annotations

import atexit
import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, SequentialSampler

from detr_irpe.config import DataConfig
from detr_irpe.data import CocoDetection, build_coco, collate_fn, make_transforms
from detr_irpe.data.batch_scale import ScalePerBatch
from detr_irpe.data.buckets import BucketCollate, size_buckets
from detr_irpe.data.mosaic import mosaic_epochs
from detr_irpe.data.transforms import training_scales
from detr_irpe.machine.signals import kill_workers_left, leave_signals_to_main, stop_signals_blocked


def set_transforms(train: CocoDetection | None, val: CocoDetection, data: DataConfig) -> None:
    """Give both sets the resizes (and the training augmentation) of ``data``."""
    if train is not None:
        train.transforms = make_transforms("train", scales=data.train_scales,
                                           max_size=data.max_size,
                                           size_multiple=data.size_multiple)
        train.mosaic_probability = data.mosaic
    val.transforms = evaluation_transform(data)


def evaluation_transform(data: DataConfig):
    """The evaluation resize of ``data``."""
    return make_transforms("val", max_size=data.max_size, val_size=data.val_size,
                           size_multiple=data.size_multiple)


def read_datasets(data: DataConfig, evaluate_only: bool) -> tuple[CocoDetection | None,
                                                                  CocoDetection]:
    """``(train or None, val)``, their annotation files read and checked (custom data
    declares its categories in both files alike); :func:`set_transforms` gives them their
    resizes once the sizes are settled."""
    skip = data.skip_unreadable
    if data.dataset_file != "custom":
        train = None if evaluate_only else build_coco(data.coco_path, "train",
                                                      skip_unreadable=skip, max_size=data.max_size)
        return train, build_coco(data.coco_path, "val", skip_unreadable=skip,
                                 max_size=data.max_size)
    train = None
    if data.train_json:
        train = CocoDetection(data.train_images, data.train_json, None, train=True,
                              contiguous_labels=True, skip_unreadable=skip,
                              max_size=data.max_size)
    val = CocoDetection(data.val_images, data.val_json, None, train=False,
                        contiguous_labels=True, drop_crowd=False, skip_unreadable=skip,
                        max_size=data.max_size)
    if train is not None and train.label_to_category_id != val.label_to_category_id:
        raise ValueError(f"{data.train_json} and {data.val_json} declare different categories; "
                         f"both files must list the same category ids")
    return train, val


class SkipBatches:
    """A batch sampler that leaves out the first ``skip`` batches (resuming mid-epoch) and,
    with a ``stop``, the batches from that one on (a time budget's shortened last epoch)."""

    def __init__(self, batch_sampler, skip: int = 0):
        self.batch_sampler, self.skip, self.stop = batch_sampler, skip, None

    def __iter__(self):
        return itertools.islice(self.batch_sampler, self.skip, self.stop)

    def __len__(self):
        return len(range(len(self.batch_sampler))[self.skip:self.stop])  # as __iter__'s slice


def val_loader(val: CocoDetection, batch_size: int, data: DataConfig, distributed: bool,
               device: torch.device) -> DataLoader:
    sampler = DistributedSampler(val, shuffle=False) if distributed else SequentialSampler(val)
    return DataLoader(val, batch_size, sampler=sampler, drop_last=False, collate_fn=collate_fn,
                      num_workers=data.num_workers, pin_memory=device.type == "cuda")


def train_collate(data: DataConfig):
    """The training batches' collate: a list of images (the model pads them to the batch's
    largest), or an ImageBatch padded to its bucket (``--size_buckets N``) or to multiples
    of 32 (``--round_batches``: no buckets, so every batch takes the rounding rule)."""
    if data.round_batches:
        return BucketCollate(())
    if data.size_buckets == 0:
        return collate_fn
    return BucketCollate(size_buckets(data.size_buckets, data.max_size, data.train_scales))


class TrainLoader:
    """The training loader and its samplers: :meth:`epoch` sets the order of an epoch
    (reproducible from the seed, also after a resume), the batches to skip and whether the
    epoch uses the mosaic."""

    def __init__(self, train: CocoDetection, batch_size: int, data: DataConfig, seed: int,
                 distributed: bool, device: torch.device):
        self.seed, self.distributed = seed, distributed
        self.train, self.mosaic, self.mosaic_until = train, data.mosaic, data.mosaic_until
        self.sampler = (DistributedSampler(train, shuffle=True, seed=seed) if distributed
                        else RandomSampler(train, generator=torch.Generator().manual_seed(seed)))
        batches = BatchSampler(self.sampler, batch_size, drop_last=True)
        self.scales = (ScalePerBatch(batches, len(training_scales(data.train_scales)))
                       if data.scale_per_batch else None)
        self.batches = SkipBatches(self.scales or batches)
        if len(self.batches) == 0:
            raise ValueError(f"the training set has {len(train)} images, fewer than one batch "
                             f"of --batch_size {batch_size} per process")
        # Page-locked batches on CUDA: asynchronous copies to the GPU.
        self.loader = DataLoader(train, batch_sampler=self.batches, collate_fn=train_collate(data),
                                 num_workers=data.num_workers, pin_memory=device.type == "cuda")

    def epoch(self, epoch: int, skip: int = 0, stop: int | None = None,
              epochs: int | None = None) -> DataLoader:
        """The loader of ``epoch``: its batches from ``skip`` up to ``stop`` (None: all);
        ``epochs``: the run's planned epochs, of which the first ``--mosaic_until`` share
        use the mosaic (None: every epoch does).  The workers start anew each epoch, so
        they take the dataset's setting."""
        epoch_seed = self.seed * 100003 + epoch
        closed = epochs is not None and epoch >= mosaic_epochs(epochs, self.mosaic_until)
        self.train.mosaic_probability = 0.0 if closed else self.mosaic
        if self.distributed:
            self.sampler.set_epoch(epoch)
        else:
            self.sampler.generator.manual_seed(epoch_seed)
        if self.scales is not None:  # the same draws on every process, and after a resume
            self.scales.seed(epoch_seed)
        self.batches.skip, self.batches.stop = skip, stop
        return self.loader


def _worker_errors_in_one_line(batches: Iterator) -> Iterator:
    """``batches``, with an error raised in a worker re-raised as the worker's own message
    (torch re-raises it with "Caught X in DataLoader worker process N" and the worker's
    whole traceback in the message)."""
    try:
        yield from batches
    except Exception as err:
        head, _, traceback_text = str(err).partition("\n")
        if not (head.startswith("Caught ") and " in DataLoader worker process " in head):
            raise
        last = traceback_text.strip().splitlines()[-1] if traceback_text.strip() else head
        message = last.partition(": ")[2] or last
        try:
            one_line = type(err)(message)
        except TypeError:  # an exception type that takes other arguments
            one_line = RuntimeError(message)
        raise one_line from None


class DataLoader(torch.utils.data.DataLoader):
    """``torch.utils.data.DataLoader`` whose workers leave SIGTERM/SIGINT to the main
    process.  Workers start with both signals blocked and ignore them before unblocking,
    so a signal that arrives while they start reaches the main process alone.  Workers
    still running at exit are killed (:func:`kill_workers_left`), and a worker's error is
    one line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, worker_init_fn=leave_signals_to_main, **kwargs)
        # Registered last, so it runs before multiprocessing's own exit handler.
        atexit.unregister(kill_workers_left)
        atexit.register(kill_workers_left)

    def __iter__(self):
        with stop_signals_blocked():
            batches = super().__iter__()
        return _worker_errors_in_one_line(batches)
