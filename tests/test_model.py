"""The whole DETR model: state-dict compatibility, forward against an independent
float64 reference, backbone details, position embeddings and checkpoints."""

import argparse
import json
import os
import pickle

import pytest
import torch
from helpers import FIXTURES, tiny_config, tiny_model
from reference import reference_detr, sine_position_reference

import detr_irpe
from detr_irpe.models.backbone import ImageBatch
from detr_irpe.models.position_encoding import PositionEmbeddingSine


def _randomise(model, seed=0):
    """Non-trivial values everywhere (iRPE tables and frozen BN stats included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "running_var" in name:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif "rpe_" in name or "running_mean" in name or name.endswith("bn1.bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)


@pytest.mark.parametrize("key,enc", [("detr_r50_rpe-2.0-product-ctx-1-k", "rpe-2.0-product-ctx-1-k"),
                                     ("detr_r50", "")])
def test_state_dict_matches_official_names_and_shapes(key, enc):
    with open(os.path.join(FIXTURES, "official_state_dict_keys.json")) as f:
        expected = {name: shape for name, shape in json.load(f)[key]}
    model, _, _ = detr_irpe.build_detr(enc_rpe2d=enc, pretrained_backbone="none")
    got = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert got == expected
    # ... so a published checkpoint loads with strict=True.
    fake = {n: torch.zeros(s) for n, s in expected.items()}
    model.load_state_dict(fake, strict=True)


CASES = [
    dict(enc_rpe2d="rpe-2.0-product-ctx-1-k"),
    dict(enc_rpe2d="rpe-2.0-product-ctx-1-k", dilation=True),
    dict(enc_rpe2d="rpe-2.0-product-ctx-1-k", pre_norm=True),
    dict(enc_rpe2d="rpe-1.9-cross-ctx-0-qkv"),
    dict(enc_rpe2d="rpe-2.5-quant-bias-0-qk", pre_norm=True),
    dict(enc_rpe2d=""),
]


@pytest.mark.parametrize("opts", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_forward_matches_float64_reference(opts):
    torch.manual_seed(0)
    common = dict(backbone="resnet50", enc_layers=2, dec_layers=2, num_queries=7,
                  num_classes=5, pretrained_backbone="none", dim_feedforward=64)
    model, _, _ = detr_irpe.build_detr(**common, **opts)
    _randomise(model)
    model = model.double().eval()
    images = [torch.randn(3, 96, 130, dtype=torch.float64), torch.randn(3, 70, 160, dtype=torch.float64)]
    out = model(images)
    ref = reference_detr(
        model.state_dict(), images,
        dict(backbone="resnet50", hidden_dim=256, nheads=8, enc_layers=2, dec_layers=2,
             pre_norm=opts.get("pre_norm", False), dilation=opts.get("dilation", False),
             irpe=detr_irpe.parse_irpe(opts["enc_rpe2d"])),
    )
    assert out["pred_logits"].shape == (2, 7, 6) and out["pred_boxes"].shape == (2, 7, 4)
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"], rtol=1e-5, atol=1e-7)
    assert len(out["aux_outputs"]) == 1
    torch.testing.assert_close(out["aux_outputs"][0]["pred_boxes"], ref["aux_outputs"][0]["pred_boxes"])


def test_input_types_agree_and_no_aux():
    model, _, _ = tiny_model(num_queries=5, num_classes=3, aux_loss=False)
    model.eval()
    imgs = torch.randn(2, 3, 64, 64)
    a = model(imgs)
    b = model([imgs[0], imgs[1]])
    c = model(ImageBatch.from_images([imgs[0], imgs[1]]))
    assert "aux_outputs" not in a
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"])
    torch.testing.assert_close(a["pred_logits"], c["pred_logits"])
    assert ((a["pred_boxes"] > 0) & (a["pred_boxes"] < 1)).all()


def test_image_batch_padding_and_mask():
    batch = ImageBatch.from_images([torch.ones(3, 4, 6), torch.ones(3, 5, 3)])
    assert batch.tensors.shape == (2, 3, 5, 6)
    assert batch.mask[0, 4].all() and not batch.mask[0, :4].any()
    assert batch.mask[1, :, 3:].all() and not batch.mask[1, :, :3].any()
    assert batch.tensors[1, :, :, 3:].abs().sum() == 0
    with pytest.raises(ValueError, match="image 1"):
        ImageBatch.from_images([torch.ones(3, 4, 4), torch.ones(4, 4)])


def test_sine_position_embedding_against_per_channel_formula():
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, 3:, :] = True
    mask[1, :, 4:] = True
    ours = PositionEmbeddingSine(16)(mask)
    torch.testing.assert_close(ours.double(), sine_position_reference(mask, 16), rtol=1e-5, atol=1e-6)
    # Hand value: image 0, pixel (row 0, col 0), channel 0 is sin(y) with y = 1/5 * 2pi.
    assert abs(ours[0, 0, 0, 0].item() - torch.sin(torch.tensor(2 * torch.pi / 5)).item()) < 1e-5
    # Padding does not shift positions: the valid 3x4 corner of image 1 equals an unpadded 3x4 map.
    alone = PositionEmbeddingSine(16)(torch.zeros(1, 3, 4, dtype=torch.bool))
    torch.testing.assert_close(ours[1, :, :3, :4], alone[0])


def test_backbone_trainable_layers_and_dilation():
    model, _, _ = detr_irpe.build_detr(**tiny_config(dec_layers=1))
    trainable = {n.split(".")[3] for n, p in model.named_parameters()
                 if n.startswith("backbone.0.body.") and p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    frozen, _, _ = detr_irpe.build_detr(**tiny_config(dec_layers=1, lr_backbone=0))
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if n.startswith("backbone."))
    x = ImageBatch.from_images(torch.zeros(1, 3, 64, 96))
    f32, m32 = model.backbone[0](x)
    assert f32.shape == (1, 512, 2, 3) and m32.shape == (1, 2, 3)
    dc5, _, _ = detr_irpe.build_detr(**tiny_config(backbone="resnet50", dilation=True, dec_layers=1))
    assert dc5.backbone[0](x)[0].shape == (1, 2048, 4, 6)  # stride 16
    with pytest.raises(ValueError, match="resnet50 or resnet101"):
        detr_irpe.build_detr(backbone="resnet18", dilation=True, pretrained_backbone="none")


def test_frozen_norms_folded_into_convolutions_match_conv_then_norm():
    """Each frozen batch norm is applied inside the convolution before it.  Features and
    weight gradients equal torchvision's conv -> FrozenBatchNorm2d ResNet, and the
    folded no-grad forward follows in-place weight updates (fused AdamW) and loads."""
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    from detr_irpe.models.backbone import Backbone, ConvFrozenBN2d, FoldedFrozenBatchNorm2d

    torch.manual_seed(0)
    bb = Backbone("resnet18", train_backbone=True, dilation=False, pretrained=None, norm="frozen",
                  trainable_layers=3, stride=32)
    ref = torchvision.models.resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    assert sum(isinstance(m, FoldedFrozenBatchNorm2d) for m in bb.modules()) == sum(
        isinstance(m, FrozenBatchNorm2d) for m in ref.modules()) == 20  # every norm folded
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in bb.body.state_dict().items():
            if "bn" in name or "downsample.1" in name:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "var" in name
                        else torch.randn(t.shape, generator=g))
    ref.load_state_dict(bb.body.state_dict(), strict=False)  # no fc in the backbone
    for name, p in ref.named_parameters():
        p.requires_grad_(name.startswith(("layer2", "layer3", "layer4")))
    bb.double()
    ref.double()

    def reference(x):
        f = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        return ref.layer4(ref.layer3(ref.layer2(ref.layer1(f))))

    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    out, expected = bb.body(x)["0"], reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    expected.square().sum().backward()
    ref_params = dict(ref.named_parameters())
    trained = [(n, p) for n, p in bb.body.named_parameters() if p.requires_grad]
    # layer2..layer4 of resnet18: 2 blocks x 2 convs each, plus one downsample conv each.
    assert len(trained) == 3 * (2 * 2 + 1)
    for name, p in trained:
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-9, atol=1e-9)

    # In-place weight updates (fused AdamW, as main.py) and checkpoint loads are seen.
    assert isinstance(bb.body.layer3[0].conv1, ConvFrozenBN2d)
    opt = torch.optim.AdamW([p for _, p in trained], lr=0.05, fused=True)
    opt.step()
    with torch.no_grad():
        for name, p in trained:
            ref_params[name].copy_(p)
        torch.testing.assert_close(bb.body(x)["0"], reference(x), rtol=1e-10, atol=1e-10)
        state = {k: v + 0.25 if "running_mean" in k else v for k, v in bb.body.state_dict().items()}
        bb.body.load_state_dict(state)
        ref.load_state_dict(state, strict=False)
        torch.testing.assert_close(bb.body(x)["0"], reference(x), rtol=1e-10, atol=1e-10)


def test_batch_norm_backbone_for_training_from_scratch(tmp_path):
    small = tiny_config(dec_layers=1)
    model, _, _ = detr_irpe.build_detr(backbone_norm="batch", trainable_backbone_layers=5, **small)
    body = model.backbone[0].body
    norms = [m for m in body.modules() if "Norm" in type(m).__name__]
    assert norms and all(type(m) is torch.nn.BatchNorm2d for m in norms)
    names = {n for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad}
    assert names == {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
    assert {"backbone.0.body.conv1.weight", "backbone.0.body.bn1.weight"} <= names
    # Training updates the statistics; evaluation uses them.
    model.train()
    before = body.bn1.running_mean.clone()
    model([torch.rand(3, 64, 64) * 5])
    assert not torch.equal(before, body.bn1.running_mean)
    # Counting stages from the top: 1 = layer4 only; 4 = layer1..layer4 (stem frozen).
    for layers, expected in ((1, {"layer4"}), (4, {"layer1", "layer2", "layer3", "layer4"})):
        m, _, _ = detr_irpe.build_detr(trainable_backbone_layers=layers, **small)
        got = {n.split(".")[3] for n, p in m.named_parameters()
               if n.startswith("backbone.0.body.") and p.requires_grad}
        assert got == expected
    # A bare state dict says which norm it was trained with.
    path = tmp_path / "bn.pth"
    torch.save({"model": model.state_dict()}, path)
    ckpt = detr_irpe.load_checkpoint(str(path))
    assert ckpt.options["backbone_norm"] == "batch"
    rebuilt, _, _ = detr_irpe.build_detr(ckpt.config(nheads=2))
    rebuilt.load_state_dict(ckpt.model, strict=True)
    x = [torch.rand(3, 64, 80)]
    torch.testing.assert_close(rebuilt.eval()(x)["pred_boxes"], model.eval()(x)["pred_boxes"])
    with pytest.raises(ValueError, match="backbone_norm='group'"):
        detr_irpe.build_detr(backbone_norm="group", **small)
    with pytest.raises(ValueError, match="trainable_backbone_layers=6"):
        detr_irpe.build_detr(trainable_backbone_layers=6, **small)


@pytest.mark.parametrize("mode, amp, option, channels_last", [
    ("eval", False, False, True), ("train", False, False, False), ("train", True, False, True),
    ("train", False, True, True)])
def test_resnet_input_is_channels_last_where_onednn_is_faster(mode, amp, option, channels_last):
    """On the CPU: inference and bf16 training feed the ResNet channels-last; float32
    training keeps the contiguous layout (slower in channels-last for DETR-R50) unless
    ``channels_last_training`` asks for it."""
    model, _, _ = tiny_model(backbone_norm="batch", trainable_backbone_layers=5,
                             channels_last_training=option)
    model.train(mode == "train")
    seen = []
    model.backbone[0].body.conv1.register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.autocast("cpu", torch.bfloat16, enabled=amp), torch.set_grad_enabled(mode == "train"):
        model([torch.rand(3, 64, 96)])
    assert seen == [channels_last]


def test_channels_last_training_computes_what_the_contiguous_layout_does():
    """The option changes the memory layout only: the same features and gradients."""
    grads = []
    for option in (False, True):
        model, _, _ = tiny_model(backbone_norm="batch", trainable_backbone_layers=5,
                                 channels_last_training=option)
        model.train()
        torch.manual_seed(0)
        out = model([torch.rand(3, 64, 96), torch.rand(3, 80, 64)])
        out["pred_boxes"].sum().backward()
        grads.append((out["pred_boxes"].detach(), model.backbone[0].body.conv1.weight.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    # the backbone's gradients pass through batch norms: float rounding grows to ~2e-4
    difference = (grads[0][1] - grads[1][1]).norm() / grads[0][1].norm()
    assert difference < 1e-3


def test_pretrained_backbone_local_file_and_clear_errors(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        net.conv1.weight.fill_(0.25)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    model, _, _ = detr_irpe.build_detr(**tiny_config(pretrained_backbone=str(path), dec_layers=1))
    assert (model.backbone[0].body.conv1.weight == 0.25).all()
    with pytest.raises(FileNotFoundError, match="pretrained_backbone"):
        detr_irpe.build_detr(backbone="resnet18", pretrained_backbone=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="backbone='resnet99'"):
        detr_irpe.build_detr(backbone="resnet99", pretrained_backbone="none")


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="--enc_rpe2d"):
        detr_irpe.build_detr(enc_rpe2d="rpe-2.0-product", pretrained_backbone="none")
    with pytest.raises(TypeError, match="num_clases"):
        detr_irpe.build_detr(num_clases=3)
    with pytest.raises(ValueError, match="num_classes"):
        detr_irpe.build_detr(num_classes=0)


def _official_style_checkpoint(path, enc, **model_opts):
    torch.manual_seed(0)
    model, _, _ = detr_irpe.build_detr(enc_rpe2d=enc, pretrained_backbone="none", **model_opts)
    _randomise(model, seed=3)
    args = argparse.Namespace(enc_rpe2d=enc, lr=1e-4, output_dir="out", device="cuda",
                              **model_opts)
    torch.save({"model": model.state_dict(), "args": args, "epoch": 3}, path)
    return model.eval()


def test_load_official_checkpoint_rebuilds_identical_model(tmp_path):
    path = tmp_path / "ckpt.pth"
    # No pretrained_backbone: the official-style helper adds it.
    small = tiny_config(pretrained_backbone=None, enc_layers=2, num_queries=6, num_classes=7)
    orig = _official_style_checkpoint(path, "rpe-1.9-product-ctx-0-k", **small)
    ckpt = detr_irpe.load_checkpoint(str(path))
    assert ckpt.options["enc_rpe2d"] == "rpe-1.9-product-ctx-0-k"
    model, _, _ = detr_irpe.build_detr(ckpt.config())
    model.load_state_dict(ckpt.model, strict=True)
    x = [torch.randn(3, 64, 80)]
    torch.testing.assert_close(model.eval()(x)["pred_boxes"], orig(x)["pred_boxes"])


@pytest.mark.parametrize("enc", ["rpe-2.0-product-ctx-1-k", "rpe-1.9-product-bias-0-qk",
                                 "rpe-3.0-cross-ctx-1-qkv", ""])
def test_options_inferred_from_shapes_without_args(tmp_path, enc):
    model, _, _ = detr_irpe.build_detr(**tiny_config(enc_rpe2d=enc, dec_layers=3, num_queries=9,
                                                     num_classes=4, pre_norm=True))
    path = tmp_path / "bare.pth"
    torch.save({"model": model.state_dict()}, path)
    ckpt = detr_irpe.load_checkpoint(str(path))
    o = ckpt.options
    assert (o["num_classes"], o["num_queries"], o["hidden_dim"], o["dec_layers"], o["pre_norm"],
            o["backbone"], o["enc_rpe2d"], o["backbone_norm"]) == (4, 9, 32, 3, True, "resnet18", enc,
                                                                   "frozen")
    rebuilt, _, _ = detr_irpe.build_detr(ckpt.config(nheads=2))
    rebuilt.load_state_dict(ckpt.model, strict=True)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refused to load.*posix.system.*trust"):
        detr_irpe.load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detr_irpe.load_checkpoint(str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("trust", [False, True])
@pytest.mark.parametrize("content, reason", [
    (b"", "the file is empty"),
    (b"<html>404 Not Found</html>", ""),
    (pickle.dumps({"model": {}, "payload": Evil()}), ""),  # a bare pickle: no torch.save file
    (b"PK\x03\x04cut short", "not a ZIP archive"),
])
def test_a_file_that_is_not_a_checkpoint_is_one_line_without_trust_advice(
        tmp_path, content, reason, trust):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as caught:
        detr_irpe.load_checkpoint(str(path), trust=trust)
    message = str(caught.value)
    assert str(path) in message and reason in message and "\n" not in message
    assert "trust" not in message and "weights_only" not in message


def test_per_image_backbone_makes_outputs_independent_of_batch():
    model, _, _ = tiny_model(enc_layers=2, num_queries=5, num_classes=3)
    _randomise(model)
    model.eval()
    small, big = torch.randn(3, 70, 90), torch.randn(3, 130, 200)
    model.per_image_backbone = True
    alone = model([small])["pred_boxes"][0]
    together = model([small, big])["pred_boxes"][0]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)
    model.per_image_backbone = False  # image padding (DETR's default) changes the result
    assert not torch.allclose(model([small])["pred_boxes"][0], model([small, big])["pred_boxes"][0],
                              atol=1e-5)


def test_query_anchors_start_each_box_on_its_grid_cell_and_keep_the_state_dict():
    from detr_irpe.models.matcher import anchor_cells

    cells = anchor_cells(4)  # 2 x 2 cells of half the image
    assert torch.allclose(cells, torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5],
                                               [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]]))
    assert torch.allclose(anchor_cells(30)[7], torch.tensor([1.5 / 6, 1.5 / 5, 1 / 6, 1 / 5]))
    model, _, _ = tiny_model(num_queries=30, query_anchors=True)
    plain, _, _ = tiny_model(num_queries=30)
    assert set(model.state_dict()) - set(plain.state_dict()) == {"anchor_logits"}
    last = model.bbox_embed.layers[-1]
    with torch.no_grad():  # a box head that predicts no offset: every box is its cell
        last.weight.zero_()
        last.bias.zero_()
    model.eval()
    boxes = model(torch.randn(2, 3, 64, 64))["pred_boxes"]
    torch.testing.assert_close(boxes, anchor_cells(30).expand(2, -1, -1), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="anchor_logits"):  # not a plain DETR state dict
        plain.load_state_dict(model.state_dict())


def test_query_anchors_are_read_off_a_bare_state_dict(tmp_path):
    from detr_irpe.checkpoint import load_checkpoint

    for anchors, content, points in ((True, False, False), (False, False, False),
                                     (True, True, False), (True, True, True)):
        model, _, _ = tiny_model(num_queries=30, query_anchors=anchors, anchor_content=content,
                                 point_positions=points)
        torch.save({"model": model.state_dict()}, tmp_path / "bare.pth")
        ckpt = load_checkpoint(str(tmp_path / "bare.pth"))
        assert ckpt.options["query_anchors"] is anchors
        assert ckpt.options["anchor_content"] is content
        assert ckpt.options["point_positions"] is points
        assert ckpt.options["num_queries"] == 30  # without query_embed: off the anchor grid
        rebuilt, _, _ = detr_irpe.build_detr(ckpt.config(nheads=2))  # heads: not in shapes
        rebuilt.load_state_dict(ckpt.model, strict=True)


def test_sample_at_points_reads_each_image_within_its_own_extent():
    from detr_irpe.models.transformer import sample_at_points

    cols = torch.arange(13.0).expand(7, 13)  # channel 0: the column, channel 1: the row
    rows = torch.arange(7.0)[:, None].expand(7, 13)
    features = torch.stack([cols, rows]).expand(2, 2, 7, 13)
    mask = torch.zeros(2, 7, 13, dtype=torch.bool)
    mask[0, :, 10:] = True  # image 0 covers 10 x 5 cells, image 1 all 13 x 7
    mask[0, 5:, :] = True
    points = torch.tensor([[0.5, 0.5], [0.05, 0.1]])
    got = sample_at_points(features, mask, points)  # (Q, B, D)
    # x = 0.5 of 10 cells = 5.0 cells from the left edge: halfway between the centres of
    # columns 4 and 5; y = 0.5 of 5 rows = 2.5: the centre of row 2.  0.05 of 10 cells and
    # 0.1 of 5 rows: the centre of cell (0, 0).  Image 1: 6.5 and 3.5 cells: cell (6, 3).
    expected = torch.tensor([[[4.5, 2.0], [6.0, 3.0]], [[0.0, 0.0], [0.15, 0.2]]])
    torch.testing.assert_close(got, expected)


def test_anchor_content_starts_each_query_as_the_encoder_output_at_its_cell_centre():
    model, _, _ = tiny_model(num_queries=4, query_anchors=True, anchor_content=True)
    plain, _, _ = tiny_model(num_queries=4, query_anchors=True)
    assert set(model.state_dict()) - set(plain.state_dict()) == {"content_points"}
    seen = {}
    model.transformer.encoder.register_forward_hook(lambda m, i, out: seen.update(memory=out))
    model.transformer.decoder.register_forward_pre_hook(lambda m, args: seen.update(tgt=args[0]))
    model.eval()
    model(torch.randn(1, 3, 128, 128))  # stride 32: a 4 x 4 map, one image, no padding
    memory = seen["memory"][:, 0].reshape(4, 4, -1)  # (h, w, D)
    # The 2 x 2 cells' centres lie at 1 of 4 cells from the edges: between two feature
    # cells each way, so each query starts as the mean of a 2 x 2 block.
    blocks = [memory[r:r + 2, c:c + 2].mean((0, 1)) for r in (0, 2) for c in (0, 2)]
    torch.testing.assert_close(seen["tgt"][:, 0], torch.stack(blocks))
    with pytest.raises(ValueError, match="--anchor_content .*--query_anchors"):
        tiny_model(anchor_content=True)


def test_sine_of_points_is_the_feature_maps_embedding_at_a_cells_far_corner():
    from detr_irpe.models.position_encoding import sine_of_points

    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    reference = sine_position_reference(mask, 8)[0]  # (16, 3, 4), float64
    # The normalised cumulative sum puts cell (row r, column c) at ((c + 1) / 4, (r + 1) / 3).
    points = torch.tensor([[(c + 1) / 4, (r + 1) / 3] for r in range(3) for c in range(4)])
    got = sine_of_points(points, 16).T.reshape(16, 3, 4)
    torch.testing.assert_close(got.double(), reference, rtol=1e-5, atol=1e-5)


def test_point_positions_give_a_denoising_query_the_position_of_its_own_point():
    from types import SimpleNamespace

    from detr_irpe.models.matcher import anchor_points
    from detr_irpe.models.position_encoding import sine_of_points

    model, _, _ = tiny_model(num_queries=9, query_anchors=True, anchor_content=True,
                             point_positions=True)
    plain, _, _ = tiny_model(num_queries=9, query_anchors=True, anchor_content=True)
    assert model.query_embed is None
    assert (set(model.state_dict()) ^ set(plain.state_dict())
            == {"query_embed.weight"} | {f"position_mlp.layers.{i}.{k}" for i in (0, 1)
                                         for k in ("weight", "bias")})
    grid = anchor_points(9)  # a 3 x 3 grid: centres at 1/6, 1/2, 5/6
    # One denoising query on grid point 4 (the centre), one a sixth of a cell right of it.
    points = torch.stack([grid[4], grid[4] + torch.tensor([1 / 18, 0.0])])[None]
    grid_pos, dn_pos = model._positions(SimpleNamespace(points=points))
    expected = model.position_mlp(sine_of_points(grid, model.transformer.d_model))
    torch.testing.assert_close(grid_pos, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dn_pos[0, 0], grid_pos[4], rtol=1e-5, atol=1e-6)
    assert (dn_pos[0, 1] - grid_pos[4]).abs().max() > 1e-3  # its own point, not its owner's
    with pytest.raises(ValueError, match="--point_positions .*--query_anchors"):
        tiny_model(point_positions=True)


@pytest.mark.parametrize("name,depths", [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))])
def test_narrow_resnet_at_width_64_is_torchvisions(name, depths):
    """The narrow builder is torchvision's basic-block ResNet with another width: at 64 it
    takes torchvision's weights strictly and computes the same features."""
    import torchvision

    from detr_irpe.models.backbone import narrow_resnet
    theirs = getattr(torchvision.models, name)().eval()
    _randomise(theirs)
    ours = narrow_resnet(depths, 64, torch.nn.BatchNorm2d).eval()
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 64, 72)
    stages = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    a = b = x
    for stage in stages:
        a, b = getattr(theirs, stage)(a), getattr(ours, stage)(b)
    torch.testing.assert_close(b, a)


def test_half_width_backbone_halves_every_stage_and_survives_a_bare_state_dict(tmp_path):
    small = tiny_config(backbone_width=32, backbone_norm="batch", trainable_backbone_layers=5,
                        backbone_stride=16)
    model, _, _ = detr_irpe.build_detr(**small)
    body = model.backbone[0].body
    widths = [body.conv1.out_channels] + [getattr(body, f"layer{n}")[-1].conv2.out_channels
                                          for n in (1, 2, 3)]
    assert widths == [32, 32, 64, 128] and not hasattr(body, "layer4")  # stride 16: no layer4
    assert model.backbone[0].num_channels == 128 == model.input_proj.in_channels
    path = tmp_path / "narrow.pth"
    torch.save({"model": model.state_dict()}, path)
    ckpt = detr_irpe.load_checkpoint(str(path))
    assert (ckpt.options["backbone_width"], ckpt.options["backbone_stride"]) == (32, 16)
    rebuilt, _, _ = detr_irpe.build_detr(ckpt.config(nheads=2))
    rebuilt.load_state_dict(ckpt.model, strict=True)
    x = [torch.rand(3, 64, 80)]
    torch.testing.assert_close(rebuilt.eval()(x)["pred_boxes"], model.eval()(x)["pred_boxes"])
    for bad in ({"backbone": "resnet50"}, {"pretrained_backbone": "imagenet"}):
        with pytest.raises(ValueError, match="--backbone_width 32 .*--backbone resnet18"):
            detr_irpe.build_detr(**{**small, **bad})
