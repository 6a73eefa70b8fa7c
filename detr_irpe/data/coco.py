"""COCO-format detection dataset and the builder for the COCO 2017 layout.

Box formats (the usual source of confusion):

- the JSON stores absolute ``[x, y, w, h]`` in original image pixels;
- inside the transforms, ``target["boxes"]`` is an absolute XYXY ``tv_tensors.BoundingBoxes``;
- what :class:`CocoDetection` returns is normalised ``(cx, cy, w, h)`` in [0, 1], relative to
  the *transformed* image (``target["size"]``), the format DETR predicts.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as F
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from detr_irpe.config import EVAL_MAX_SIZE
from detr_irpe.data.annotation_file import read_annotation_file
from detr_irpe.data.batch_scale import using_scale
from detr_irpe.data.box_clipping import clip_boxes
from detr_irpe.data.checker.checks import check_dataset
from detr_irpe.data.checker.report import DatasetError, DatasetReport
from detr_irpe.data.image_source import make_image_source
from detr_irpe.data.mosaic import mosaic, random_corner
from detr_irpe.data.transforms import make_transforms, to_model_format


def load_coco_api(ann_file: str | os.PathLike, quiet: bool = True) -> COCO:
    """``pycocotools.coco.COCO`` for ``ann_file``; its progress prints are hidden if ``quiet``."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        return COCO(str(ann_file))


def _coco_from_dict(data: dict) -> COCO:
    """``pycocotools.coco.COCO`` for already parsed annotations (no second read of the file)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def prepare_target(
    annotations: list[dict],
    image_id: int,
    image_hw: tuple[int, int],
    category_to_label: dict[int, int],
    drop_crowd: bool,
) -> dict:
    """Turn one image's COCO annotations into a target for the transforms.

    Crowd objects are dropped when ``drop_crowd``; boxes go from xywh to xyxy, are clipped to
    the image and those with no width or height (at most a hundredth of a pixel) are removed
    (:func:`~detr_irpe.data.box_clipping.clip_boxes`, the repair that
    :func:`~detr_irpe.data.checker.checks.check_dataset` counts).

    Returns a dict with ``boxes`` (``tv_tensors.BoundingBoxes``, absolute XYXY, (n, 4)),
    ``labels`` int64 (n,), ``area`` float (n,), ``iscrowd`` int64 (n,), ``image_id`` int and
    ``orig_size`` int64 tensor([h, w]).
    """
    h, w = image_hw
    if drop_crowd:
        annotations = [ann for ann in annotations if not ann.get("iscrowd", 0)]
    xywh = torch.tensor([ann["bbox"] for ann in annotations], dtype=torch.float32).reshape(-1, 4)
    xyxy, keep = clip_boxes(xywh, (h, w))

    labels = torch.tensor(
        [category_to_label[ann["category_id"]] for ann in annotations], dtype=torch.int64
    )
    area = torch.tensor(
        [ann.get("area", ann["bbox"][2] * ann["bbox"][3]) for ann in annotations],
        dtype=torch.float32,
    )
    iscrowd = torch.tensor([ann.get("iscrowd", 0) for ann in annotations], dtype=torch.int64)
    return {
        "boxes": tv_tensors.BoundingBoxes(xyxy[keep], format="XYXY", canvas_size=(h, w)),
        "labels": labels[keep],
        "area": area[keep],
        "iscrowd": iscrowd[keep],
        "image_id": int(image_id),
        "orig_size": torch.tensor([h, w]),
    }


class CocoDetection(Dataset):
    """A COCO-format detection dataset.

    Args:
        images: folder of images, or a ``.zip`` holding them (at its root or under one top
            folder). Each process opens its own zip handle, so it is safe with DataLoader
            workers.
        ann_file: COCO instances JSON.
        transforms: ``(image, target) -> (image, target)`` on a uint8 ``tv_tensors.Image`` and
            absolute XYXY boxes (see :mod:`detr_irpe.data.transforms`); None for no
            augmentation. Normalisation to the model format always follows.
        train: training split; crowd objects are then dropped from the targets.
        contiguous_labels: map the JSON's category ids (sorted) to labels 0..K-1. If False
            (the COCO/DETR convention) the label is the category id itself, and
            ``num_classes`` is ``max id + 1`` (91 for COCO).
        drop_crowd: override whether ``iscrowd=1`` objects are dropped (default: ``train``).
            When kept they are flagged by ``target["iscrowd"]``.
        check: check the dataset at construction (:func:`~detr_irpe.data.checker.checks.check_dataset`
            with ``quick=True``: the whole JSON, that every image file exists, the headers of
            up to 5000 images). Errors raise :class:`~detr_irpe.data.checker.report.DatasetError`
            whose message lists them; repairs made at load time (boxes clipped or dropped,
            images converted to RGB) and skipped images are printed in one line.
        skip_unreadable: leave out images whose file is missing, unreadable or not an image
            (with their annotations) instead of raising; they are reported in that line.
        max_size: the longer-side cap of the resize; the check refuses images it would
            squeeze to 0 pixels.

    Bad data: boxes are clipped to the image and empty ones dropped; images are converted to
    8-bit RGB; EXIF orientation tags are ignored (pixels are used as stored, as pycocotools
    and the official DETR code do). ``file_name`` values leaving the image folder are refused.
    Run ``python tools/check_dataset.py`` for a full check that also decodes every image.

    Attributes:
        coco: the ``pycocotools`` COCO object (ground truth for :class:`CocoEvaluator`).
        ids: image ids, sorted; index ``i`` is image ``ids[i]``. Images without annotations
            are included; skipped images (``skip_unreadable``) are not.
        report: the :class:`~detr_irpe.data.checker.report.DatasetReport` (None when ``check=False``).
        num_classes: the value to give the model (classes, without "no object").
        label_to_category_id: label -> original category id.
        category_names: original category id -> name.

    ``dataset[i]`` is ``(image, target)``: ``image`` a float (3, H, W) tensor normalised with
    ImageNet mean/std, and ``target`` a dict with

        boxes      float (n, 4)  normalised (cx, cy, w, h) relative to (H, W)
        labels     int64 (n,)    class labels (see ``contiguous_labels``)
        area       float (n,)    annotation area, rescaled with the image (clipped box area
                                 after a crop)
        iscrowd    int64 (n,)
        image_id   int
        orig_size  int64 tensor([h, w])  the original image size (to rescale predictions)
        size       int64 tensor([H, W])  the size after the transforms
    """

    def __init__(
        self,
        images: str | os.PathLike,
        ann_file: str | os.PathLike,
        transforms: Callable | None = None,
        train: bool = False,
        contiguous_labels: bool = False,
        drop_crowd: bool | None = None,
        check: bool = True,
        skip_unreadable: bool = False,
        max_size: int | None = EVAL_MAX_SIZE,
    ):
        self.source = make_image_source(images)
        self.transforms = transforms
        self.mosaic_probability = 0.0  # training augmentation (:mod:`~detr_irpe.data.mosaic`)
        self.train = train
        self.drop_crowd = train if drop_crowd is None else drop_crowd
        self.report: DatasetReport | None = None
        if check:
            data = read_annotation_file(ann_file)
            self.report = check_dataset(
                ann_file,
                self.source,
                quick=True,
                skip_unreadable=skip_unreadable,
                drop_crowd=self.drop_crowd,
                annotations=data,
                max_size=max_size,
            )
            self.report.raise_if_errors()
            if self.report.repair_line():
                print(self.report.repair_line(), flush=True)
            self.coco = _coco_from_dict(data)
        else:
            self.coco = load_coco_api(ann_file)
        skipped = set(self.report.skipped_image_ids) if self.report else set()
        self.ids = sorted(set(self.coco.imgs) - skipped)
        if not self.ids and skipped:
            raise DatasetError(self.report, f"{ann_file}: every image was skipped as unreadable")

        categories = sorted(self.coco.cats.values(), key=lambda cat: cat["id"])
        self.category_names = {cat["id"]: cat["name"] for cat in categories}
        if contiguous_labels:
            self.label_to_category_id = {i: cat["id"] for i, cat in enumerate(categories)}
            self.num_classes = len(categories)
        else:
            self.label_to_category_id = {cat["id"]: cat["id"] for cat in categories}
            self.num_classes = max(self.category_names, default=-1) + 1
        self.category_to_label = {c: label for label, c in self.label_to_category_id.items()}

        unknown = {
            ann["category_id"] for ann in self.coco.anns.values()
        } - self.category_names.keys()
        if unknown:
            raise ValueError(
                f"{ann_file}: annotations use undeclared category ids {sorted(unknown)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, dict]:
        """Item ``index``; an ``(index, scale)`` pair (``--scale_per_batch``) resizes it to
        the batch's scale (:mod:`detr_irpe.data.batch_scale`).  With
        ``mosaic_probability`` above 0 (training), an item is a mosaic with that probability
        (:mod:`detr_irpe.data.mosaic`)."""
        index, scale = index if isinstance(index, tuple) else (index, None)
        if self.mosaic_probability > 0 and float(torch.rand(())) < self.mosaic_probability:
            tiles = [self.load(i) for i in [index, *torch.randint(len(self), (3,)).tolist()]]
            image, target = mosaic(tiles, random_corner(*tiles[0][0].shape[-2:]))
        else:
            image, target = self.load(index)
        if self.transforms is not None:
            with using_scale(scale):
                image, target = self.transforms(image, target)
        return to_model_format(image, target)

    def load(self, index: int) -> tuple[tv_tensors.Image, dict]:
        """Item ``index`` before the transforms: the uint8 (3, h, w) image and its target
        with absolute XYXY boxes (:func:`prepare_target`)."""
        image_id = self.ids[index]
        pil_image = self.source.open(self.coco.imgs[image_id]["file_name"])
        annotations = self.coco.imgToAnns.get(image_id, [])
        target = prepare_target(
            annotations,
            image_id,
            (pil_image.height, pil_image.width),
            self.category_to_label,
            self.drop_crowd,
        )
        return F.to_image(pil_image), target

    def __repr__(self) -> str:
        return (
            f"CocoDetection({len(self)} images, {len(self.category_names)} categories, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )


def build_coco(
    coco_path: str | os.PathLike,
    split: str,
    transforms: Callable | None = None,
    contiguous_labels: bool = False,
    skip_unreadable: bool = False,
    max_size: int | None = EVAL_MAX_SIZE,
) -> CocoDetection:
    """COCO 2017 ``split`` ("train" or "val") from the standard layout under ``coco_path``:

        <coco_path>/annotations/instances_{split}2017.json
        <coco_path>/{split}2017/   or   <coco_path>/{split}2017.zip

    ``transforms`` defaults to :func:`make_transforms` for the split (DETR's recipe).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root = Path(coco_path)
    layout = (
        f"expected COCO layout: {root}/annotations/instances_{split}2017.json and images in "
        f"{root}/{split}2017/ or {root}/{split}2017.zip"
    )
    ann_file = root / "annotations" / f"instances_{split}2017.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"missing annotation file {ann_file}; {layout}")
    folder, archive = root / f"{split}2017", root / f"{split}2017.zip"
    if folder.is_dir():
        images = folder
    elif archive.is_file():
        images = archive
    else:
        raise FileNotFoundError(f"missing image folder {folder} (or zip {archive}); {layout}")
    if transforms is None:
        transforms = make_transforms(split)
    return CocoDetection(
        images, ann_file, transforms, train=split == "train", contiguous_labels=contiguous_labels,
        skip_unreadable=skip_unreadable, max_size=max_size,
    )
