"""Fine-tuning a COCO-style checkpoint on custom data with arbitrary category ids."""

import json

import pytest
import torch
from helpers import data_flags, shapes_dataset, tiny_config, tiny_flags

import detr_irpe
import main as main_module
from detr_irpe.training.finetune import finetune_state

SMALL = tiny_config(num_queries=6)
# The same model as main.py flags, without --pretrained_backbone: the tests that want it
# pass it themselves.
FLAGS = [*tiny_flags(num_queries=6, pretrained_backbone=None), "--train_scales", "64",
         "--max_size", "96", "--val_size", "64", "--batch_size", "2", "--num_workers", "0",
         "--device", "cpu", "--epochs", "1", "--threads", "2"]
IDS = {1: 7, 2: 42, 3: 99}


@pytest.fixture(scope="module")
def custom_set(tmp_path_factory):
    """The shapes set with category ids remapped to {7, 42, 99}."""
    root = shapes_dataset(tmp_path_factory.mktemp("custom"), num_train=4, num_val=3, image_size=64,
                          seed=5)
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        for c in data["categories"]:
            c["id"] = IDS[c["id"]]
        for a in data["annotations"]:
            a["category_id"] = IDS[a["category_id"]]
        path.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory):
    """A 91-class checkpoint with iRPE-K, as an official one would be (args Namespace)."""
    import argparse

    torch.manual_seed(0)
    model, _, _ = detr_irpe.build_detr(num_classes=91, enc_rpe2d="rpe-1.9-product-ctx-1-k", **SMALL)
    path = tmp_path_factory.mktemp("coco_ckpt") / "coco.pth"
    torch.save({"model": model.state_dict(),
                "args": argparse.Namespace(enc_rpe2d="rpe-1.9-product-ctx-1-k", **SMALL)}, path)
    return path


def test_finetune_state_keeps_fitting_tensors_and_resets_head():
    src, _, _ = detr_irpe.build_detr(num_classes=91, enc_rpe2d="", **SMALL)
    dst, _, _ = detr_irpe.build_detr(num_classes=3, enc_rpe2d="", **SMALL)
    before_head = dst.class_embed.weight.clone()
    report = finetune_state(dst, src.state_dict(), reset_queries=True)
    assert "class_embed.weight" in report["reinitialised"]
    assert "query_embed.weight" in report["reinitialised"]
    assert torch.equal(dst.class_embed.weight, before_head)
    for name in ("transformer.encoder.layers.0.linear1.weight", "backbone.0.body.conv1.weight",
                 "bbox_embed.layers.2.bias"):
        assert name in report["kept"]
        assert torch.equal(dst.state_dict()[name], src.state_dict()[name])


def test_finetune_starts_an_unfitted_box_quality_head():
    """The source's fitted head describes the source's queries: fine-tuning starts the new
    model's head afresh and unfitted, so its evaluations score as DETR does until the refit."""
    options = dict(enc_rpe2d="", quality_weight=0.5, **SMALL)
    src, _, _ = detr_irpe.build_detr(num_classes=91, **options)
    src.quality_embed.fitted.fill_(True)
    torch.nn.init.constant_(src.quality_embed.mlp.layers[0].weight, 0.5)
    dst, _, _ = detr_irpe.build_detr(num_classes=3, **options)
    before = dst.quality_embed.mlp.layers[0].weight.clone()
    report = finetune_state(dst, src.state_dict(), reset_queries=False)
    assert {"quality_embed.fitted", "quality_embed.mlp.layers.0.weight"} <= set(report["reinitialised"])
    assert not bool(dst.quality_embed.fitted)
    assert torch.equal(dst.quality_embed.mlp.layers[0].weight, before)


@pytest.mark.slow
def test_finetune_end_to_end_with_arbitrary_ids(custom_set, coco_checkpoint, tmp_path, capsys):
    out = tmp_path / "ft"
    main_module.main([*data_flags(custom_set), "--finetune_from", str(coco_checkpoint),
                      "--output_dir", str(out), *FLAGS])
    printed = capsys.readouterr().out
    assert "re-initialised" in printed and "class_embed.weight" in printed
    assert "rpe-1.9-product-ctx-1-k" in printed  # the checkpoint's iRPE was used
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert ckpt["model"]["class_embed.weight"].shape[0] == 4  # 3 classes + no-object
    assert ckpt["label_to_category_id"] == {0: 7, 1: 42, 2: 99}
    assert set(ckpt["category_names"]) == {7, 42, 99}
    assert ckpt["finetuned_from"] == str(coco_checkpoint)
    dets = json.loads((out / "eval" / "detections_0000.json").read_text())
    assert dets and {d["category_id"] for d in dets} <= {7, 42, 99}
    ev = json.loads((out / "eval" / "0000.json").read_text())
    assert set(ev["per_category_AP"]) == {"7", "42", "99"}
    # The fine-tuned detector predicts original ids with their names.
    detector = detr_irpe.Detector.from_checkpoint(str(out / "checkpoint.pth"), size=64, max_size=96)
    det = detector.predict(sorted((custom_set / "val").iterdir())[0], threshold=0.0)
    names = {7: "circle", 42: "square", 99: "triangle"}
    assert len(det["labels"]) == 6 and set(det["labels"].tolist()) <= set(names)
    assert det["names"] == [names[int(i)] for i in det["labels"]]
    assert ev["category_names"] == {"7": "circle", "42": "square", "99": "triangle"}


def test_finetune_irpe_mismatch_is_an_error(custom_set, coco_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="rpe-1.9-product-ctx-1-k.*rpe-2.0-product-ctx-1-k"):
        main_module.main([*data_flags(custom_set), "--finetune_from", str(coco_checkpoint),
                          "--enc_rpe2d", "rpe-2.0-product-ctx-1-k",
                          "--output_dir", str(tmp_path / "bad"), *FLAGS])


def test_custom_num_classes_conflict_is_explained(custom_set, tmp_path):
    with pytest.raises(ValueError, match="derived from the JSON"):
        main_module.main([*data_flags(custom_set), "--num_classes", "91", "--pretrained_backbone",
                          "none", "--output_dir", str(tmp_path / "nc"), *FLAGS])


@pytest.mark.slow
def test_plain_detr_fine_tuned_into_irpe_starts_from_zero_tables(custom_set, tmp_path, capsys):
    """A plain DETR checkpoint with --enc_rpe2d and --irpe_init zero: the tables are the only
    new tensors and start at zero (a note says so); the run trains them."""
    import argparse

    torch.manual_seed(0)
    plain, _, _ = detr_irpe.build_detr(num_classes=91, enc_rpe2d="", **SMALL)
    path = tmp_path / "plain.pth"
    torch.save({"model": plain.state_dict(), "args": argparse.Namespace(enc_rpe2d="", **SMALL)},
               path)
    out = tmp_path / "irpe"
    main_module.main([*data_flags(custom_set), "--finetune_from", str(path), "--enc_rpe2d",
                      "rpe-2.0-product-ctx-1-k", "--irpe_init", "zero", "--output_dir", str(out),
                      "--pretrained_backbone", "none", *FLAGS])
    printed = capsys.readouterr().out
    assert "is plain DETR" in printed and "start at zero" in printed
    state = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    tables = [k for k in state if ".rpe_k." in k]
    assert len(tables) == 1 and state[tables[0]].shape == (1, 16, 81)
    assert state[tables[0]].abs().max() > 0  # trained from zero


@pytest.mark.slow
def test_fine_tuning_keeps_the_sources_query_anchors(custom_set, tmp_path):
    """A model whose boxes are offsets from grid cells, and whose queries start from the
    encoder at those cells, stays one when fine-tuned without the flags (its heads would
    read the wrong inputs otherwise); the options are read off a bare state dict."""
    torch.manual_seed(0)
    anchored, _, _ = detr_irpe.build_detr(num_classes=91, query_anchors=True,
                                          anchor_content=True, point_positions=True, **SMALL)
    path = tmp_path / "anchored.pth"
    torch.save({"model": anchored.state_dict()}, path)
    main_module.main([*data_flags(custom_set), "--finetune_from", str(path),
                      "--output_dir", str(tmp_path / "run"), "--pretrained_backbone", "none",
                      *FLAGS])
    state = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["model"]
    torch.testing.assert_close(state["anchor_logits"], anchored.anchor_logits)
    torch.testing.assert_close(state["content_points"], anchored.content_points)
    assert "position_mlp.layers.0.weight" in state and "query_embed.weight" not in state
