"""The ``reruns`` section of ``python -m benchmarks.gpu_check``: the options whose
tests have only run on the CPU, run again on the checked device, each with a check that
fails if it is broken there:

- ``dense_aux``: ``--dense_aux_coef 1``: the dense head's losses are finite and its
  weights move;
- ``stride16``: ``--backbone_stride 16``: the feature map is H/16 x W/16 and the step is
  finite;
- ``ema``: ``--ema`` (decay 0.5 here): after a step the average is the mean of the
  weights before and after it;
- ``export``: the TorchScript trace of the exportable detector on the device, and the ONNX
  graph in onnxruntime, give the eager detector's boxes;
- ``faster_coco_eval``: the same AP as pycocotools on a generated set.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import torch

from benchmarks.coco_eval import time_backends
from benchmarks.workload import (
    IMAGE_SIZES,
    IRPE_K,
    TINY_IMAGE_SIZES,
    TINY_MODEL,
    build_model,
    make_batch,
    train_step_fn,
)
from detr_irpe.inference.export import ExportableDetector, export_onnx
from detr_irpe.models.backbone import ImageBatch
from detr_irpe.training.ema import WeightEMA

BOX_ATOL = 1e-2  # pixels: the exported graphs against the eager detector


def _setup(device, tiny: bool, **options):
    model_options, sizes = (TINY_MODEL, TINY_IMAGE_SIZES) if tiny else ({}, IMAGE_SIZES)
    model, criterion, _ = build_model(IRPE_K, device, **model_options, **options)
    return model, criterion, sizes


def dense_aux(device, tiny: bool) -> dict:
    model, criterion, sizes = _setup(device, tiny, dense_aux_coef=1.0)
    before = [p.detach().clone() for p in model.dense_head.parameters()]
    step = train_step_fn(model, criterion, device, sizes=sizes)
    step()  # leaves the model in training mode, where the dense head runs
    images, targets = make_batch(device, sizes)
    losses = criterion(model(images), targets)
    dense = {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss_dense")}
    moved = any(not torch.equal(a, p) for a, p in zip(before, model.dense_head.parameters()))
    ok = len(dense) == 3 and all(map(math.isfinite, dense.values())) and moved
    return {"passed": ok, "detail": f"dense losses {dense}, head weights moved: {moved}"}


def stride16(device, tiny: bool) -> dict:
    model, criterion, sizes = _setup(device, tiny, backbone_stride=16)
    images = make_batch(device, sizes)[0]
    feats, _, _ = model.backbone(ImageBatch.from_images(images))
    want = (-(-max(h for h, _ in sizes) // 16), -(-max(w for _, w in sizes) // 16))
    loss = float(train_step_fn(model, criterion, device, sizes=sizes)())
    ok = tuple(feats.shape[-2:]) == want and math.isfinite(loss)
    return {"passed": ok, "detail": f"feature map {tuple(feats.shape[-2:])} (want {want}), "
                                    f"loss {loss:.4f}"}


def ema(device, tiny: bool) -> dict:
    model, criterion, sizes = _setup(device, tiny)
    average = WeightEMA(model, 0.5)
    average.update(model)  # the first update copies the weights
    name, start = next((n, p.detach().clone()) for n, p in model.named_parameters()
                       if n.startswith("class_embed"))
    train_step_fn(model, criterion, device, sizes=sizes)()
    average.update(model)
    new = dict(model.named_parameters())[name].detach()
    avg = dict(average.module.named_parameters())[name]
    ok = torch.allclose(avg, 0.5 * start + 0.5 * new, atol=1e-6) and not torch.equal(start, new)
    return {"passed": bool(ok), "detail": f"average of {name} = mean of start and new: {ok}, "
                                          f"on {avg.device}"}


def export(device, tiny: bool) -> dict:
    import onnxruntime

    model, _, sizes = _setup(device, tiny)
    size = sizes[0]
    wrapper = ExportableDetector(copy.deepcopy(model))
    images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        boxes = wrapper(images)[0]
        traced = torch.jit.trace(wrapper, (images,), check_trace=False)
        script_diff = float((traced(images)[0] - boxes).abs().max())
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model.cpu(), Path(tmp) / "m.onnx", size)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_boxes = session.run(["boxes"], {"images": images.cpu().numpy()})[0]
    onnx_diff = float((torch.from_numpy(onnx_boxes) - boxes.cpu()).abs().max())
    ok = script_diff <= BOX_ATOL and onnx_diff <= BOX_ATOL
    return {"passed": ok, "detail": f"largest box difference to eager: TorchScript on "
                                    f"{device.type} {script_diff:.2e} px, ONNX {onnx_diff:.2e} px"}


def faster_coco_eval(device, tiny: bool) -> dict:
    rep = time_backends(20 if tiny else 500, 20)["backends"]
    ap = {name: r["AP"] for name, r in rep.items()}
    ok = abs(ap["faster_coco_eval"] - ap["pycocotools"]) <= 1e-6
    return {"passed": ok, "detail": f"AP {ap}"}


RERUNS = {"dense_aux": dense_aux, "stride16": stride16, "ema": ema, "export": export,
          "faster_coco_eval": faster_coco_eval}


def reruns_section(device, tiny: bool = False) -> dict:
    """Every rerun; one that raises is reported as failed with its error."""
    out = {}
    for name, fn in RERUNS.items():
        try:
            out[name] = fn(device, tiny)
        except Exception as err:  # reported, and the next rerun runs
            out[name] = {"passed": False, "detail": f"{type(err).__name__}: {err}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def report_reruns(res: dict) -> list[dict]:
    from benchmarks.gpu import verdict

    return [verdict(f"rerun {name}", r["passed"], r["detail"]) for name, r in res.items()]
