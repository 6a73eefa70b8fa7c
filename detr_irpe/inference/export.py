"""The whole detector as one ONNX graph: normalisation, DETR with iRPE, post-processing.

The graph's input ``images`` is float32 (B, 3, H, W), RGB in [0, 1], already resized to
the export size (H, W); its outputs, for every one of the Q queries:

- ``boxes``:  float32 (B, Q, 4), absolute (x0, y0, x1, y1) in pixels of that H x W image;
- ``scores``: float32 (B, Q), the highest probability over the real classes;
- ``labels``: int64 (B, Q), its model label (map to dataset ids with the checkpoint's
  ``label_to_category_id``, stored in the model's metadata).

The iRPE bucket map depends on the feature-map size (H / 32, W / 32), so it is a constant
of the graph: one ONNX file serves one image size, written into its metadata
(``image_size``).  ``dynamic_batch`` makes B free; H and W stay fixed.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from detr_irpe.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from detr_irpe.models.attention import IRPEMultiheadAttention
from detr_irpe.models.detr import DETR, PostProcess

OPSET = 18
# TorchScript-based exporter: it needs only ``onnx``.  The dynamo exporter (which also
# needs ``onnxscript``) fails to decompose this model with torch 2.14.
DYNAMO = False
# The attention backend the graph is written with: plain matmul / gather / softmax ops
# (the fused backend is a custom autograd function, sdpa asks data-dependent questions).
EXPORT_ATTENTION = "explicit"
OUTPUT_NAMES = ("boxes", "scores", "labels")


class ExportableDetector(nn.Module):
    """``forward(images (B, 3, H, W) in [0, 1]) -> (boxes, scores, labels)`` (see module doc).

    Sets every attention layer of ``model`` to the ``EXPORT_ATTENTION`` backend (the
    same function as the others, tested against one reference), drops the auxiliary
    outputs and puts it in eval mode (pass a copy to keep the original as it is).
    """

    def __init__(self, model: DETR):
        super().__init__()
        self.model = model.eval()
        self.model.aux_loss = False
        for module in self.model.modules():
            if isinstance(module, IRPEMultiheadAttention):
                module.backend = EXPORT_ATTENTION
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()  # the exporter restores the wrapper's mode afterwards: it must be eval

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.model((images - self.mean) / self.std)
        b, _, h, w = images.shape
        sizes = torch.tensor([h, w], dtype=images.dtype, device=images.device).expand(b, 2)
        scores, labels, boxes = PostProcess.batched(outputs, sizes)
        return boxes, scores, labels


def export_onnx(model: DETR, path: str | Path, size: tuple[int, int], dynamic_batch: bool = False,
                metadata: dict | None = None) -> Path:
    """Write ``model`` as ONNX (opset ``OPSET``) for ``size`` = (H, W) images; returns the
    path.  ``metadata`` (JSON-able) goes into the model's metadata_props with the size."""
    import onnx  # only needed here

    wrapper = ExportableDetector(copy.deepcopy(model))  # the caller's model stays unchanged
    example = torch.rand(1, 3, *size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that the image size becomes a constant: that is the design here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        batch_axis = {name: {0: "batch"} for name in ("images", *OUTPUT_NAMES)}
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["images"], output_names=list(OUTPUT_NAMES),
            opset_version=OPSET, dynamo=DYNAMO, dynamic_axes=batch_axis if dynamic_batch else None,
        )
    proto = onnx.load(str(path))
    info = {"image_size": f"{size[0]}x{size[1]}", "input": "images: float32 (B, 3, H, W), RGB in [0, 1]",
            "boxes": "absolute x0, y0, x1, y1 in pixels of the H x W input",
            **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    for key, value in info.items():
        proto.metadata_props.add(key=key, value=str(value))
    onnx.save(proto, str(path))
    return path
