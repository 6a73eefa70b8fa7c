"""Datasets, augmentation and batching (see :class:`CocoDetection` for the target format)."""

from .checks import check_dataset
from .coco import CocoDetection, build_coco, load_coco_api, prepare_target
from .collate import collate_fn
from .image_source import FolderImageSource, ZipImageSource, make_image_source
from .report import DatasetError, DatasetReport
from .shapes import build_shapes, generate_shapes_dataset
from .transforms import make_transforms, resize_size, to_model_format

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
