"""--compile: the compiled training step equals the eager one; checkpoints stay plain."""

import copy
import json

import pytest
import torch
from helpers import tiny_model

from benchmarks import speed as benchmark
from detr_irpe.checkpoint import load_checkpoint, save_checkpoint
from detr_irpe.config import RunConfig
from detr_irpe.models.backbone import ImageBatch
from detr_irpe.training.compiled import compile_model, plain_state_dict


def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 64, 96, generator=g), torch.randn(3, 50, 70, generator=g)]
    targets = [{"labels": torch.tensor([1, 2]),
                "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.4, 0.2]])},
               {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.4, 0.4, 0.5, 0.5]])}]
    return ImageBatch.from_images(images, size=(64, 96)), targets


def _step(model, criterion, batch, targets):
    """Outputs and gradients of one training forward and backward."""
    model.train()
    outputs = model(batch)
    losses = criterion(outputs, targets)
    sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return outputs, grads


@pytest.mark.inductor
def test_compiled_step_equals_eager_outputs_and_gradients():
    """Inductor on the CPU (a C++ compiler builds the kernels; a minute or more); dropout
    off, since compiled code draws other random numbers."""
    model, criterion, _ = tiny_model(dropout=0.0, enc_layers=1, dec_layers=1,
                                     enc_rpe2d="rpe-2.0-product-ctx-1-k")
    eager = copy.deepcopy(model)
    compile_model(model, static_shapes=True)
    batch, targets = _batch()
    out, grads = _step(model, criterion, batch, targets)
    ref, ref_grads = _step(eager, criterion, batch, targets)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 20
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_compiled_model_saves_plain_keys_that_load_into_an_uncompiled_model(tmp_path):
    model = tiny_model(seed=1)[0]
    compile_model(model, static_shapes=False, backend="eager")
    state = model.state_dict()
    assert not [k for k in state if "_orig_mod" in k]
    save_checkpoint({"model": state}, str(tmp_path / "c.pth"))
    fresh = tiny_model(seed=2)[0]
    fresh.load_state_dict(load_checkpoint(str(tmp_path / "c.pth")).model, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_a_torch_compile_wrapper_checkpoint_loads_without_its_prefix(tmp_path):
    model = tiny_model(seed=1)[0]
    wrapped = torch.compile(model, backend="eager")
    assert all(k.startswith("_orig_mod.") for k in wrapped.state_dict())
    save_checkpoint({"model": wrapped.state_dict()}, str(tmp_path / "w.pth"))
    loaded = load_checkpoint(str(tmp_path / "w.pth")).model
    assert loaded.keys() == model.state_dict().keys()
    assert plain_state_dict({"a._orig_mod.b": 1}) == {"a.b": 1}


def test_compile_is_off_by_default():
    assert RunConfig().compile is False


@pytest.mark.inductor
def test_benchmark_compile_section_runs_every_variant(tmp_path):
    """The tool's plumbing on a tiny model (backend eager: no code generation, but 15-20 s
    of graph capture on 2 cores, hence with the long checks), not a timing: every variant
    ran, and the bucketed one saw only bucket shapes."""
    out = tmp_path / "b.json"
    assert benchmark.main(["--compile", "--tiny", "--reps", "1", "--compile_backend", "eager",
                           "--json", str(out)]) == 0
    res = json.loads(out.read_text())["compile"]
    variants = res["variants"]
    assert set(variants) == {"eager", "compiled", "compiled + buckets", "eager (again)"}
    assert all(v["median_s"] > 0 and v["images_per_s"] > 0 for v in variants.values())
    buckets = {tuple(b) for b in res["buckets"]}
    assert {tuple(s) for s in variants["compiled + buckets"]["shapes"]} <= buckets
    assert len(variants["eager"]["shapes"]) == 3  # each batch padded to its own size


@pytest.mark.inductor
def test_detector_compiled_for_inference_predicts_as_eager():
    """Detector.compile (inductor, weights frozen into the graph) gives the eager
    detections to float32 rounding, for two image sizes (one compile each)."""
    from detr_irpe.inference.detector import Detector, preprocess

    model, _, _ = tiny_model()
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 60, 80, generator=g), torch.rand(3, 72, 56, generator=g)]
    eager = Detector(copy.deepcopy(model), size=64, max_size=96)
    compiled = Detector(model, size=64, max_size=96).compile()
    with torch.no_grad():
        expected = [eager.model([preprocess(im, 64, 96)]) for im in images]
        got = [compiled.model([preprocess(im, 64, 96)]) for im in images]
    for e, c in zip(expected, got):
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(c[key], e[key], rtol=1e-4, atol=1e-5)
    assert compiled.model.backbone[0].body._compiled_call_impl is not None
