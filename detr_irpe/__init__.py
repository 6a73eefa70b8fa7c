"""DETR with image relative position encoding (iRPE) in the encoder.

Public API::

    model, criterion, postprocessors = detr_irpe.build_detr(num_classes=91)
    ckpt = detr_irpe.load_checkpoint("rpe-2.0-product-ctx-1-k.pth")
    model, _, _ = detr_irpe.build_detr(ckpt.config())
    model.load_state_dict(ckpt.model)
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import DETRConfig
from .models.backbone import ImageBatch
from .models.detr import DETR, PostProcess, build_detr
from .models.irpe import IRPEConfig, parse_irpe
from .predict import Detector

__all__ = [
    "DETR",
    "Checkpoint",
    "DETRConfig",
    "Detector",
    "IRPEConfig",
    "ImageBatch",
    "PostProcess",
    "build_detr",
    "load_checkpoint",
    "parse_irpe",
    "save_checkpoint",
]
