"""The training accelerators of the CPU demo: backbone stride 16 (C4 features) and the
training-only dense auxiliary head.  Hand-computed assignments and losses; the inference
model and checkpoint stay a DETR the official code loads."""

import json
import math
import shutil

import pytest
import torch
from helpers import TINY_FLAGS, data_flags, shapes_dataset, tiny_config

import detr_irpe
import main as main_module
from detr_irpe.checkpoint import load_checkpoint
from detr_irpe.inference.detector import Detector
from detr_irpe.models.dense_head import DenseHead, assign_cells, cell_centres, dense_losses

SMALL = tiny_config(num_queries=5, num_classes=3)


def test_stride_16_uses_layer3_and_has_no_layer4():
    model, _, _ = detr_irpe.build_detr(backbone_stride=16, **SMALL)
    names = model.state_dict()
    assert not any(".layer4." in k for k in names)
    assert names["input_proj.weight"].shape[1] == 256  # resnet18's layer3 width
    feats, mask, _ = model.backbone(detr_irpe.models.backbone.ImageBatch.from_images(
        [torch.zeros(3, 128, 96)]))
    assert feats.shape[-2:] == (8, 6) and mask.shape[-2:] == (8, 6)
    plain, _, _ = detr_irpe.build_detr(**SMALL)
    assert plain.backbone(detr_irpe.models.backbone.ImageBatch.from_images(
        [torch.zeros(3, 128, 96)]))[0].shape[-2:] == (4, 3)
    with pytest.raises(ValueError, match="leaves out"):
        detr_irpe.build_detr(**{**SMALL, "backbone": "resnet50"}, backbone_stride=16,
                             dilation=True)


def test_stride_8_uses_layer2_and_a_checkpoint_tells_its_depth(tmp_path):
    # resnet18's layer2: 128 channels at 1/8 of the image; layer3 and layer4 left out.
    model, _, _ = detr_irpe.build_detr(backbone_stride=8, **SMALL)
    names = model.state_dict()
    assert not any(".layer3." in k or ".layer4." in k for k in names)
    assert names["input_proj.weight"].shape[1] == 128
    feats, _, _ = model.backbone(detr_irpe.models.backbone.ImageBatch.from_images(
        [torch.zeros(3, 64, 48)]))
    assert feats.shape[-2:] == (8, 6)
    for name, stride in (("resnet34", 8), ("resnet18", 8), ("resnet34", 16), ("resnet18", 32)):
        net, _, _ = detr_irpe.build_detr(**{**SMALL, "backbone": name}, backbone_stride=stride)
        torch.save({"model": net.state_dict()}, tmp_path / "m.pth")
        options = load_checkpoint(str(tmp_path / "m.pth")).options
        assert (options["backbone"], options["backbone_stride"]) == (name, stride)


def test_assign_cells_by_hand_on_a_4x4_grid():
    # A: centre (0.3, 0.3), 0.5 x 0.5 -> centre cell (1, 1); of its neighbours, those with
    # centres (0.125 or 0.375) inside [0.05, 0.55]: (0,0), (0,1), (1,0).
    # B: centre (0.4, 0.35), 0.2 x 0.2 -> centre cell (1, 1) too, no neighbour inside;
    # B is smaller, so it takes (1, 1).
    a, b = [0.3, 0.3, 0.5, 0.5], [0.4, 0.35, 0.2, 0.2]
    expected = torch.tensor([[0, 0, -1, -1],
                             [0, 1, -1, -1],
                             [-1, -1, -1, -1],
                             [-1, -1, -1, -1]])
    assert torch.equal(assign_cells(torch.tensor([a, b]), 4, 4).view(4, 4), expected)
    swapped = torch.where(expected >= 0, 1 - expected, expected)  # order does not matter
    assert torch.equal(assign_cells(torch.tensor([b, a]), 4, 4).view(4, 4), swapped)
    # A centre on the border falls in the last cell; no boxes: no positives.
    assert assign_cells(torch.tensor([[1.0, 1.0, 0.1, 0.1]]), 2, 3).tolist() == [-1] * 5 + [0]
    assert assign_cells(torch.zeros(0, 4), 2, 2).tolist() == [-1] * 4


def test_cell_centres_follow_each_images_valid_grid():
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[:, :, 2] = True  # last column is padding: the image is 2 x 2 cells
    centres = cell_centres(mask).view(2, 3, 2)
    assert centres[0, 0].tolist() == [0.25, 0.25]
    assert centres[1, 1].tolist() == [0.75, 0.75]


def test_fresh_head_predicts_its_cell_centre_with_the_prior_size():
    head = DenseHead(8, 2)
    last = head.bbox_embed.layers[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    out = head(torch.randn(1, 8, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    expected = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    assert torch.allclose(out["pred_boxes"][0, :, :2], expected, atol=1e-6)
    assert torch.allclose(out["pred_boxes"][0, :, 2:], torch.full((4, 2), 0.2), atol=1e-6)
    assert out["pred_logits"].shape == (1, 4, 3) and out["grid"].tolist() == [[2, 2, 2]]


def test_dense_losses_by_hand():
    # 2 x 2 grid inside a 2 x 3 padded one; one box (0.25, 0.25, 0.5, 0.5) of class 0:
    # only cell (0, 0) is positive (the neighbours' centres, 0.75, are outside the box).
    logits = torch.zeros(1, 6, 3)
    logits[0, 1:, 2] = math.log(2)  # the other cells: p(no object) = 2 / 4
    logits[0, 2] = 50.0  # a padding cell (column 2): ignored whatever it says
    boxes = torch.full((1, 6, 4), 0.5)
    boxes[0, 0] = torch.tensor([0.35, 0.25, 0.5, 0.5])  # 0.1 to the right
    out = {"pred_logits": logits, "pred_boxes": boxes, "grid": torch.tensor([[2, 2, 3]])}
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5]])}]
    losses = dense_losses(out, targets, num_classes=2)
    # CE: cell 0 -log(1/3) weight 1; cells 1, 3, 4 -log(1/2) weight 0.1 each.
    ce = (math.log(3) + 3 * 0.1 * math.log(2)) / (1 + 3 * 0.1)
    assert losses["loss_dense_ce"].item() == pytest.approx(ce, rel=1e-6)
    assert losses["loss_dense_bbox"].item() == pytest.approx(0.1, rel=1e-5)
    # [0, 0, .5, .5] vs [.1, 0, .6, .5]: IoU 0.2 / 0.3, enclosing box = union: GIoU 2/3.
    assert losses["loss_dense_giou"].item() == pytest.approx(1 / 3, rel=1e-5)


def test_dense_head_is_training_only_and_weighted():
    torch.manual_seed(0)
    with_head, criterion, _ = detr_irpe.build_detr(dense_aux_coef=0.5, **SMALL)
    plain, plain_criterion, _ = detr_irpe.build_detr(**SMALL)
    assert criterion.weight_dict["loss_dense_bbox"] == 0.5 * 5.0
    assert "loss_dense_ce" not in plain_criterion.weight_dict
    inference = {k: v for k, v in with_head.state_dict().items() if not k.startswith("dense_head.")}
    assert {k: v.shape for k, v in inference.items()} == {
        k: v.shape for k, v in plain.state_dict().items()}
    plain.load_state_dict(inference, strict=True)
    images = [torch.rand(3, 64, 48), torch.rand(3, 48, 64)]
    with_head.eval()
    plain.eval()
    out, ref = with_head(images), plain(images)
    assert "dense_outputs" not in out
    assert torch.equal(out["pred_boxes"], ref["pred_boxes"])
    with_head.train()
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]])},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    losses = criterion(with_head(images), targets)
    total = sum(losses[k] * criterion.weight_dict[k] for k in criterion.weight_dict)
    total.backward()
    assert with_head.dense_head.class_embed.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def accelerated(tmp_path_factory):
    """A one-epoch run with the demo's training aids (bf16 autocast on the CPU included)."""
    data = shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=6, num_val=4, image_size=64,
                          seed=5)
    out = tmp_path_factory.mktemp("run")
    flags = [*data_flags(data), *TINY_FLAGS,
             "--backbone_stride", "16", "--dense_aux_coef", "1", "--amp", "bf16"]
    main_module.main([*flags, "--output_dir", str(out), "--epochs", "1", "--lr_drop", "1"])
    return data, out, flags


@pytest.mark.slow
def test_checkpoint_is_plain_detr_and_resumes_with_its_head(accelerated, tmp_path):
    data, out, flags = accelerated
    assert (out / "curves.png").is_file() and len(list((out / "predictions").glob("*.png"))) == 4
    ckpt = load_checkpoint(str(out / "checkpoint.pth"))
    assert not any(k.startswith("dense_head.") for k in ckpt.model)
    assert ckpt.raw["dense_head"] and ckpt.options["backbone_stride"] == 16
    # The official loader: build the plain model, load_state_dict(strict=True).
    plain, _, _ = detr_irpe.build_detr(ckpt.config())
    assert plain.dense_head is None
    plain.load_state_dict(ckpt.model, strict=True)
    Detector.from_checkpoint(str(out / "checkpoint.pth"), device="cpu")
    # Options are inferred from the tensors alone too (an official-style file).
    torch.save({"model": ckpt.model}, tmp_path / "bare.pth")
    assert load_checkpoint(str(tmp_path / "bare.pth")).options["backbone_stride"] == 16
    # Resume: the head comes back with its trained weights.
    shutil.copy(out / "checkpoint.pth", tmp_path / "checkpoint.pth")
    main_module.main([*flags, "--output_dir", str(tmp_path), "--resume", "auto",
                      "--epochs", "2", "--lr_drop", "1"])
    assert load_checkpoint(str(tmp_path / "checkpoint.pth")).epoch == 1
    with pytest.raises(ValueError, match="trained with --dense_aux_coef"):
        main_module.main([*flags, "--output_dir", str(tmp_path), "--resume", "auto",
                          "--epochs", "3", "--dense_aux_coef", "0"])


@pytest.mark.slow
def test_stride_16_refuses_a_checkpoint_with_layer4(accelerated, tmp_path):
    data, _, flags = accelerated
    plain, _, _ = detr_irpe.build_detr(**{**SMALL, "enc_rpe2d": "rpe-2.0-product-ctx-1-k"})
    torch.save({"model": plain.state_dict()}, tmp_path / "official.pth")
    with pytest.raises(ValueError, match="layer4"):
        main_module.main([*flags, "--output_dir", str(tmp_path), "--finetune_from",
                          str(tmp_path / "official.pth")])


@pytest.mark.slow
def test_ema_of_a_model_with_the_dense_head_is_plain_detr_too(accelerated, tmp_path):
    """--ema with --dense_aux_coef: the stored average is a plain DETR state dict (what
    --eval and prediction load), its head is kept apart, and resume restores both."""
    data, _, flags = accelerated
    main_module.main([*flags, "--output_dir", str(tmp_path), "--epochs", "1", "--lr_drop", "1",
                      "--ema", "0.9"])
    ckpt = load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert set(ckpt.raw["ema"]) == set(ckpt.model) and ckpt.raw["ema_dense_head"]
    plain, _, _ = detr_irpe.build_detr(ckpt.config())
    plain.load_state_dict(ckpt.inference_model, strict=True)
    Detector.from_checkpoint(str(tmp_path / "checkpoint.pth"), device="cpu")
    main_module.main([*flags, "--output_dir", str(tmp_path), "--resume", "auto", "--epochs", "2",
                      "--lr_drop", "1", "--ema", "0.9"])
    resumed = load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert resumed.epoch == 1 and resumed.raw["ema_updates"] > ckpt.raw["ema_updates"]


@pytest.mark.slow
def test_eval_takes_the_precision_of_the_run_and_reproduces_its_ap(accelerated, tmp_path):
    """The run trained and evaluated under --amp bf16: --eval of its checkpoint uses bf16
    too (unless --amp is given), and so gives the AP the run logged."""
    data, out, flags = accelerated
    data_flags = flags[:8]  # the data paths only
    main_module.main([*data_flags, "--eval", "--resume", str(out / "checkpoint.pth"),
                      "--output_dir", str(tmp_path)])
    assert json.loads((tmp_path / "args.json").read_text())["amp"] == "bf16"
    logged = json.loads((out / "log.txt").read_text().splitlines()[-1])["test_coco_eval_bbox"]
    again = json.loads((tmp_path / "eval" / "eval.json").read_text())["bbox"]
    assert again["AP"] == pytest.approx(logged[0], abs=1e-9)
