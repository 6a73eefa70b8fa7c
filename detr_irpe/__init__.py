"""DETR with image relative position encoding (iRPE) in the encoder.

Public API::

    model, criterion, postprocessors = detr_irpe.build_detr(num_classes=91)
    ckpt = detr_irpe.load_checkpoint("rpe-2.0-product-ctx-1-k.pth")
    model, _, _ = detr_irpe.build_detr(ckpt.config())
    model.load_state_dict(ckpt.model)

The names below are imported on first use, so that ``import detr_irpe.options`` (the
command line) stays free of torch and ``main.py --help`` answers at once.
"""

import importlib

_PUBLIC = {
    "Checkpoint": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "DETRConfig": ".models.config",
    "ImageBatch": ".models.backbone",
    "DETR": ".models.detr",
    "PostProcess": ".models.detr",
    "build_detr": ".models.detr",
    "IRPEConfig": ".models.irpe_config",
    "parse_irpe": ".models.irpe_config",
    "Detector": ".inference.detector",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'detr_irpe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
