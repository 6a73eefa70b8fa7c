"""ONNX export: onnxruntime gives PyTorch's boxes, scores and labels (tiny model with
iRPE-K, and the R50 configuration), and tools/export.py writes a usable file."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import tiny_config

import detr_irpe
from detr_irpe.inference.detector import Detector
from detr_irpe.inference.export import OPSET, ExportableDetector, export_onnx
from tools import export as export_tool

TINY = tiny_config(num_queries=7, num_classes=5, enc_rpe2d="rpe-2.0-product-ctx-1-k")


def _model(seed=0, **options):
    torch.manual_seed(seed)
    model, _, _ = detr_irpe.build_detr(**options)
    with torch.no_grad():  # non-trivial iRPE tables and class head
        for name, p in model.named_parameters():
            if "lookup_table" in name or name.startswith("class_embed"):
                p.normal_(0, 0.5)
    return model.eval()


def _run(path, images: torch.Tensor):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["boxes", "scores", "labels"], {"images": images.numpy()})


def _pytorch_detections(model, images):
    """PyTorch's own path, independent of the export wrapper: normalise, DETR, PostProcess."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model((images - mean) / std)
        sizes = torch.tensor([list(images.shape[-2:])] * len(images))
        dets = detr_irpe.PostProcess()(out, sizes)
    return [torch.stack([d[k] for d in dets]).numpy() for k in ("boxes", "scores", "labels")]


def _assert_same(expected, got):
    boxes, scores, labels = expected
    np.testing.assert_allclose(got[0], boxes, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[1], scores, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got[2], labels)


ANCHORS = {"off": {}, "cells": {"query_anchors": True},
           "content": {"query_anchors": True, "anchor_content": True},
           "points": {"query_anchors": True, "anchor_content": True, "point_positions": True}}


@pytest.mark.parametrize("anchors", ANCHORS)
def test_tiny_irpe_model_matches_pytorch_with_any_batch_size(tmp_path, anchors):
    model = _model(**TINY, **ANCHORS[anchors])
    path = export_onnx(model, tmp_path / "tiny.onnx", (96, 128), dynamic_batch=True)
    assert onnx.load(str(path)).opset_import[0].version == OPSET
    torch.manual_seed(1)
    images = torch.rand(3, 3, 96, 128)
    # a fresh copy: export changed nothing
    expected = _pytorch_detections(_model(**TINY, **ANCHORS[anchors]), images)
    assert expected[0].max() > 10  # absolute pixels, not normalised
    _assert_same(expected, _run(path, images))
    _assert_same([e[:1] for e in expected], _run(path, images[:1]))


def test_fixed_size_model_rejects_another_size(tmp_path):
    path = export_onnx(_model(**TINY), tmp_path / "fixed.onnx", (64, 96))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["image_size"] == "64x96"
    with pytest.raises(Exception, match="[Dd]imension|[Ss]hape"):
        _run(path, torch.rand(1, 3, 96, 64))


def test_r50_configuration_matches_pytorch(tmp_path):
    """DETR-R50, 6 + 6 layers, 100 queries, iRPE-K (random init): one 64 x 96 image."""
    model = _model(num_classes=91, pretrained_backbone="none")
    assert model.transformer.encoder.layers[0].self_attn.irpe is not None
    images = torch.rand(1, 3, 64, 96)
    expected = _pytorch_detections(model, images)
    path = export_onnx(model, tmp_path / "r50.onnx", (64, 96))
    _assert_same(expected, _run(path, images))
    assert not model.training and model.aux_loss  # the caller's model is left as it was
    _assert_same(expected, _pytorch_detections(model, images))


def test_export_tool_writes_metadata_and_uses_the_checkpoint(tmp_path, capsys):
    model = _model(**TINY)
    ckpt = tmp_path / "run" / "checkpoint.pth"
    ckpt.parent.mkdir()
    mapping = {0: 7, 1: 9, 2: 11, 3: 12, 4: 13}
    names = {7: "cat", 9: "dog", 11: "owl", 12: "fox", 13: "elk"}
    torch.save({"model": model.state_dict(), "config": {**TINY}, "label_to_category_id": mapping,
                "category_names": names}, ckpt)
    assert export_tool.main(["--checkpoint", str(ckpt), "--format", "onnx", "--size", "64", "96"]) == 0
    path = tmp_path / "run" / "checkpoint_64x96.onnx"
    assert "only this image size is supported" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["label_to_category_id"]) == {str(k): v for k, v in mapping.items()}
    assert meta["weights"] == '"model"'
    images = torch.rand(1, 3, 64, 96)
    got = _run(path, images)
    detector = Detector.from_checkpoint(ckpt)  # the checkpoint rebuilt independently
    _assert_same(_pytorch_detections(detector.model, images), got)


@pytest.mark.parametrize("argv, message", [
    (["--format", "onnx", "--size", "16", "96"], "--size 16 96: both sides must be >= 32"),
    (["--format", "tflite"], "invalid choice: 'tflite'"),
])
def test_export_tool_bad_flags(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit):
        export_tool.main(["--checkpoint", str(tmp_path / "c.pth"), *argv])
    assert message in capsys.readouterr().err


def test_export_tool_missing_checkpoint_is_one_line(tmp_path, capsys):
    code = export_tool.main(["--checkpoint", str(tmp_path / "nope.pth"), "--format", "onnx"])
    err = capsys.readouterr().err
    assert code == 1 and "nope.pth" in err and len(err.strip().splitlines()) == 1


def test_wrapper_puts_attention_on_the_exportable_backend():
    wrapper = ExportableDetector(_model(**TINY))
    assert {m.backend for m in wrapper.modules() if hasattr(m, "backend")} == {"explicit"}
