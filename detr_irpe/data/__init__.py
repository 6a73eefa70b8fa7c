"""Datasets, augmentation and batching (see :class:`CocoDetection` for the target format)."""

from detr_irpe.data.checker.checks import check_dataset
from detr_irpe.data.checker.report import DatasetError, DatasetReport
from detr_irpe.data.coco import CocoDetection, build_coco, load_coco_api, prepare_target
from detr_irpe.data.collate import collate_fn
from detr_irpe.data.image_source import FolderImageSource, ZipImageSource, make_image_source
from detr_irpe.data.shapes import build_shapes, generate_shapes_dataset
from detr_irpe.data.transforms import make_transforms, resize_size, to_model_format

__all__ = [
    "CocoDetection",
    "DatasetError",
    "DatasetReport",
    "FolderImageSource",
    "ZipImageSource",
    "build_coco",
    "build_shapes",
    "check_dataset",
    "collate_fn",
    "generate_shapes_dataset",
    "load_coco_api",
    "make_image_source",
    "make_transforms",
    "prepare_target",
    "resize_size",
    "to_model_format",
]
