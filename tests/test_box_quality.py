"""The box-quality head (--quality_weight): its targets and blend by hand, DETR's scores
until it is fitted, the fit itself, and the blended score in every path that scores
(PostProcess, evaluation, Detector, ONNX); its option check."""

import json
import math

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from helpers import RUN_ONLY, TINY_FLAGS, data_flags, shapes_dataset, tiny_model

import main as main_module
from detr_irpe.config import DataConfig
from detr_irpe.data import CocoDetection
from detr_irpe.inference.detector import Detector, preprocess
from detr_irpe.inference.export import export_onnx
from detr_irpe.models.box_quality import DUPLICATE_SHARPNESS, blended_scores, quality_targets
from detr_irpe.training import quality_fit
from detr_irpe.training.optimizer import param_groups
from detr_irpe.training.quality_fit import fit_quality_head, fitting_set


def test_quality_targets_by_hand():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2],      # the first target itself: IoU 1
                           [0.6, 0.5, 0.2, 0.2],      # half of it in x: IoU 1/3, a duplicate
                           [0.9, 0.875, 0.1, 0.05],   # half of the second: IoU 1/2, its best
                           [0.1, 0.1, 0.1, 0.1]]])    # far away
    targets = [torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]])]
    duplicate = 1 / 3 * (1 / 3) ** DUPLICATE_SHARPNESS  # behind the first box's IoU of 1
    torch.testing.assert_close(quality_targets(boxes, targets),
                               torch.tensor([[1.0, duplicate, 0.5, 0.0]]))
    torch.testing.assert_close(quality_targets(boxes, [torch.zeros(0, 4)]), torch.zeros(1, 4))


def test_boxes_that_tie_on_an_object_both_keep_their_iou():
    boxes = torch.tensor([[[0.6, 0.5, 0.2, 0.2], [0.4, 0.5, 0.2, 0.2]]])  # 1/3 each side
    targets = [torch.tensor([[0.5, 0.5, 0.2, 0.2]])]
    torch.testing.assert_close(quality_targets(boxes, targets), torch.tensor([[1 / 3, 1 / 3]]))


def test_blended_score_by_hand():
    probs = torch.tensor([0.64, 0.5])
    logits = torch.tensor([math.log(0.25 / 0.75), 0.0])  # q = 0.25 and 0.5
    torch.testing.assert_close(blended_scores(probs, logits, 0.5),
                               torch.tensor([0.4, 0.5]))  # sqrt(0.64 * 0.25), sqrt(0.25)
    torch.testing.assert_close(blended_scores(probs, logits, 0.0), probs)


def _images():
    torch.manual_seed(0)
    return [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]


def _detr_scores(out):
    return out["pred_logits"].softmax(-1)[..., :-1].max(-1).values


def test_an_unfitted_head_scores_as_detr_and_does_not_train():
    model, _, post = tiny_model(num_classes=2, num_queries=5, quality_weight=0.25)
    trained = {id(p) for group in param_groups(model, 1e-5) for p in group["params"]}
    assert not any(id(p) in trained for p in model.quality_embed.parameters())
    out = model.eval()(_images())
    assert "pred_quality" not in out and out["query_features"].shape == (2, 5, 32)
    dets = post["bbox"](out, torch.tensor([[64, 64], [64, 80]]))
    torch.testing.assert_close(dets[1]["scores"], _detr_scores(out)[1])


def test_default_model_has_no_head():
    model, _, _ = tiny_model(num_classes=2, num_queries=5)
    assert model.quality_embed is None
    assert not any(k.startswith("quality") for k in model.state_dict())
    assert "query_features" not in model.eval()(_images())


def test_a_fitted_head_is_blended_by_postprocess_and_detector():
    model, _, post = tiny_model(num_classes=2, num_queries=5, quality_weight=0.25)
    model.eval()
    model.quality_embed.fitted.fill_(True)
    image = _images()[0]
    with torch.no_grad():
        out = model([preprocess(image, 64, 64)])
    q = torch.sigmoid(out["pred_quality"][0])
    by_hand = _detr_scores(out)[0] ** 0.75 * q ** 0.25
    assert (by_hand / _detr_scores(out)[0] - 1).abs().min() > 0.05  # the blend matters
    torch.testing.assert_close(post["bbox"](out, torch.tensor([[64, 64]]))[0]["scores"], by_hand)
    got = Detector(model, size=64, max_size=64).predict(image, threshold=0.0)
    torch.testing.assert_close(got["scores"], by_hand.sort(descending=True).values)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=6, num_val=3,
                          image_size=64, seed=5)


def test_the_fit_beats_the_best_constant_and_marks_the_head(data):
    # query anchors: the boxes spread over the image, so their IoUs vary with their place,
    # which the head sees
    model, _, _ = tiny_model(num_classes=3, num_queries=6, quality_weight=0.5,
                             query_anchors=True)
    train = CocoDetection(data / "train", data / "annotations" / "instances_train.json",
                          None, train=True, contiguous_labels=True)
    fit = fitting_set(train, DataConfig(val_size=64, max_size=96), seed=0)
    loss = fit_quality_head(model, fit, 2, torch.device("cpu"), "off", seed=0, verbose=False)
    assert bool(model.quality_embed.fitted)
    # the targets by hand: the model's boxes on the evaluation-transformed images
    logits, ious = [], []
    with torch.no_grad():
        for n in range(len(fit)):
            image, target = fit[n]
            out = model.eval()([image])
            logits.append(model.quality_embed(out["query_features"], out["pred_boxes"]).flatten())
            ious.append(quality_targets(out["pred_boxes"], [target["boxes"]]).flatten())
    y = torch.cat(ious)
    assert float(y.max()) > 0
    by_hand = F.binary_cross_entropy_with_logits(torch.cat(logits), y)
    assert loss == pytest.approx(float(by_hand), abs=1e-5)  # the fit's targets are these
    constant = F.binary_cross_entropy(y.mean().expand_as(y), y)
    assert loss < 0.9 * float(constant)


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_weight_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match=rf"--quality_weight {value}: must be in \[0, 1\]"):
        tiny_model(quality_weight=float(value))


@pytest.mark.slow
def test_a_run_fits_the_head_and_evaluates_with_the_blended_score(data, tmp_path, capsys):
    out = tmp_path / "run"
    main_module.main(["--output_dir", str(out), "--epochs", "1", "--quality_weight", "0.5",
                      "--clip_boxes", *data_flags(data), *TINY_FLAGS])
    assert "box-quality head fitted on the 36 boxes of 6 training images" in capsys.readouterr().out
    written = json.loads((out / "eval" / "detections_0000.json").read_text())
    detector = Detector.from_checkpoint(out / "checkpoint.pth")
    assert bool(detector.model.quality_embed.fitted)
    val = json.loads((data / "annotations" / "instances_val.json").read_text())
    for image in val["images"]:
        mine = sorted((d["score"] for d in written if d["image_id"] == image["id"]), reverse=True)
        got = detector.predict(data / "val" / image["file_name"], threshold=0.0)
        assert got["scores"].tolist() == pytest.approx(mine, abs=1e-5)
    # --eval --resume with no model flag scores and clips as the run did.
    main_module.main(["--output_dir", str(tmp_path / "again"), "--eval", "--resume",
                      str(out / "checkpoint.pth"), *data_flags(data), *RUN_ONLY])
    again = json.loads((tmp_path / "again" / "eval" / "detections_eval.json").read_text())
    assert [(d["score"], d["bbox"]) for d in again] == pytest.approx(
        [(d["score"], d["bbox"]) for d in written], abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("trained,given,says", [("0.5", "0", "which holds a box-quality head"),
                                                ("0", "0.5", "which has no box-quality head")])
def test_an_eval_weight_that_does_not_fit_the_checkpoints_head_is_one_clear_error(
        data, tmp_path, trained, given, says):
    out = tmp_path / "run"
    main_module.main(["--output_dir", str(out), "--epochs", "1", "--quality_weight", trained,
                      *data_flags(data), *TINY_FLAGS])
    with pytest.raises(ValueError, match=f"--quality_weight {float(given)} .*{says}; leave "
                                         f"--quality_weight out or give the checkpoint's "
                                         f"{float(trained)}"):
        main_module.main(["--output_dir", str(tmp_path / "eval"), "--eval", "--resume",
                          str(out / "checkpoint.pth"), "--quality_weight", given,
                          *data_flags(data), *RUN_ONLY])


def test_onnx_export_scores_with_the_fitted_head(tmp_path):
    model, _, post = tiny_model(num_classes=2, num_queries=5, quality_weight=0.25)
    model.quality_embed.fitted.fill_(True)
    path = export_onnx(model.eval(), tmp_path / "q.onnx", (64, 64))
    image = _images()[0][None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"images": image.numpy()})[0]
    with torch.no_grad():
        out = model((image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    expected = post["bbox"](out, torch.tensor([[64, 64]]))[0]["scores"]
    assert "pred_quality" in out
    torch.testing.assert_close(torch.from_numpy(scores)[0], expected, atol=1e-4, rtol=0)


def test_a_large_set_is_fitted_on_a_seeded_draw_of_its_images(data, monkeypatch):
    monkeypatch.setattr(quality_fit, "MAX_IMAGES", 4)
    train = CocoDetection(data / "train", data / "annotations" / "instances_train.json",
                          None, train=True, contiguous_labels=True)
    sizes = DataConfig(val_size=64, max_size=96)
    first, again, other = (fitting_set(train, sizes, seed=s) for s in (1, 1, 2))
    assert len(first) == 4 and len(set(first.indices)) == 4
    assert first.indices == again.indices and set(first.indices) <= set(range(6))
    assert first.indices != other.indices
    assert len(fitting_set(train, sizes, seed=1).dataset) == 6
