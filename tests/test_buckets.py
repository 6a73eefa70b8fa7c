"""--size_buckets: the bucket rule, the collate, and what padding to a bucket keeps."""

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model

from detr_irpe.config import DataConfig
from detr_irpe.data.buckets import BucketCollate, bucket_for, size_buckets
from detr_irpe.models.backbone import ImageBatch
from detr_irpe.training.loaders import train_collate


def test_buckets_of_detrs_sizes_follow_the_documented_rule():
    # L = ceil32(1333) = 1344, S = 800, lo = 480 (hand-computed from the rule).
    assert size_buckets(1, 1333) == ((1344, 1344),)
    assert size_buckets(2, 1333) == ((800, 1344), (1344, 1344))
    # h_1 = ceil32(480 + 320 / 2) = 640, w_1 = ceil32(640 * 1344 / 800) = ceil32(1075.2) = 1088
    assert size_buckets(3, 1333) == ((640, 1088), (800, 1344), (1344, 1344))
    assert all(h % 32 == 0 and w % 32 == 0 for n in range(1, 8)
               for h, w in size_buckets(n, 1333))
    with pytest.raises(ValueError, match="--size_buckets 0"):
        size_buckets(0, 1333)


def test_every_training_batch_fits_a_bucket_and_few_shapes_occur():
    buckets = size_buckets(3, 1333)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(500):  # batches of two images as the training resize makes them
        sizes = []
        for _ in range(2):
            short = int(torch.randint(480, 801, (1,), generator=g))
            long = min(1333, int(short * (1 + 2 * torch.rand(1, generator=g))))
            sizes.append((short, long) if torch.rand(1, generator=g) < 0.75 else (long, short))
        H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
        bh, bw = bucket_for(H, W, buckets)
        assert bh >= H and bw >= W
        seen.add((bh, bw))
    assert len(seen) <= 2 * len(buckets) - 1
    assert (800, 1344) in seen and (1344, 800) in seen  # landscape, and the transposed one


def test_a_batch_larger_than_every_bucket_is_padded_to_a_multiple_of_32():
    assert bucket_for(1400, 1000, size_buckets(2, 1333)) == (1408, 1024)


def test_collate_pads_to_the_bucket_with_zeros_and_mask():
    a, b = torch.rand(3, 40, 70), torch.rand(3, 64, 50)
    images, targets = BucketCollate(size_buckets(2, 96, [48, 64]))([(a, {"i": 0}), (b, {"i": 1})])
    assert isinstance(images, ImageBatch) and images.tensors.shape == (2, 3, 64, 96)
    assert [t["i"] for t in targets] == [0, 1]
    own = ImageBatch.from_images([a, b])  # padded to the batch's own 64 x 70
    assert torch.equal(images.tensors[..., :64, :70], own.tensors)
    assert torch.equal(images.mask[..., :64, :70], own.mask)
    assert not images.tensors[..., 70:].any() and images.mask[..., 70:].all()


def test_the_loader_uses_buckets_only_when_asked():
    assert not isinstance(train_collate(DataConfig()), BucketCollate)
    collate = train_collate(DataConfig(size_buckets=2, max_size=1333))
    assert collate.buckets == size_buckets(2, 1333)
    with pytest.raises(ValueError, match="--size_buckets -1"):
        DataConfig(size_buckets=-1)


def test_round_batches_pads_each_batch_to_the_next_multiples_of_32():
    collate = train_collate(DataConfig(round_batches=True))
    a, b = torch.rand(3, 280, 283), torch.rand(3, 250, 300)
    images, _ = collate([(a, {}), (b, {})])
    assert images.tensors.shape == (2, 3, 288, 320)  # 280 -> 288, 300 -> 320 (by hand)
    own = ImageBatch.from_images([a, b])
    assert torch.equal(images.tensors[..., :280, :300], own.tensors)
    assert torch.equal(images.mask[..., :280, :300], own.mask)
    assert images.mask[..., 280:, :].all() and images.mask[..., 300:].all()
    exact, _ = collate([(torch.rand(3, 256, 320), {})])  # already multiples: no padding
    assert exact.tensors.shape == (1, 3, 256, 320) and not exact.mask.any()
    with pytest.raises(ValueError, match="--round_batches and --size_buckets"):
        DataConfig(round_batches=True, size_buckets=2)


def _heads(model, feats, mask, pos):
    hs, _ = model.transformer(model.input_proj(feats), mask, model.query_embed.weight, pos, None)
    return model.class_embed(hs[-1]), model.bbox_embed(hs[-1]).sigmoid()


@pytest.mark.parametrize("enc", ["", "rpe-2.0-product-ctx-1-k"])
def test_more_padding_of_the_feature_map_leaves_the_predictions_unchanged(enc):
    """What a bucket adds past the batch's own padding, seen by the transformer: masked
    cells (whatever their features), the sine positions normalised by the unpadded extent
    and iRPE's relative positions.  The predictions equal to float32 rounding."""
    model = tiny_model(enc_rpe2d=enc, dropout=0.0)[0].eval()
    batch = ImageBatch.from_images([torch.rand(3, 64, 96), torch.rand(3, 40, 60)])
    with torch.no_grad():
        feats, mask, pos = model.backbone(batch)
        h, w = mask.shape[-2:]
        big_feats = F.pad(feats, (0, 2, 0, 1), value=0.0)
        big_feats[..., h:, :] = torch.randn_like(big_feats[..., h:, :])  # the backbone's
        big_feats[..., w:] = torch.randn_like(big_feats[..., w:])  # spill-over: ignored
        big_mask = F.pad(mask, (0, 2, 0, 1), value=True)
        big_pos = model.backbone[1](big_mask)
        assert torch.equal(big_pos[..., :h, :w], pos)
        logits, boxes = _heads(model, feats, mask, pos)
        big_logits, big_boxes = _heads(model, big_feats, big_mask, big_pos)
    torch.testing.assert_close(big_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(big_boxes, boxes, rtol=1e-5, atol=1e-5)


def test_image_padding_to_a_bucket_changes_the_convolutions_near_the_border():
    """Documented limit: the ResNet's convolutions carry each image into the padding next to
    it, and what lies past the array's edge is the convolution's own zero padding, so cells
    within the receptive field of the border see other values -- as in DETR when an image
    is batched with a larger one.  Cells far from the border of a large image agree."""
    model = tiny_model(dropout=0.0)[0].eval()
    image = torch.rand(3, 256, 256)
    with torch.no_grad():
        own, _ = model.backbone[0](ImageBatch.from_images([image]))
        bucket, _ = model.backbone[0](ImageBatch.from_images([image], size=(320, 320)))
    bucket = bucket[..., :8, :8]
    assert not torch.allclose(own[..., -1, -1], bucket[..., -1, -1], atol=1e-3)
    torch.testing.assert_close(own[..., :2, :2], bucket[..., :2, :2], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_main_trains_with_buckets(tmp_path):
    """main.py --size_buckets 2: the run trains and evaluates (its batches arrive as
    ImageBatch padded to a bucket, which the step and the model take)."""
    import json

    from helpers import TINY_FLAGS, data_flags, shapes_dataset

    import main as main_module

    root = shapes_dataset(tmp_path / "data", num_train=4, num_val=2, image_size=64, seed=3)
    out = tmp_path / "run"
    main_module.main([*data_flags(root), "--output_dir", str(out), "--epochs", "1",
                      "--lr_drop", "1", "--size_buckets", "2", *TINY_FLAGS])
    log = json.loads((out / "log.txt").read_text().splitlines()[0])
    assert log["train_loss"] > 0 and len(log["test_coco_eval_bbox"]) == 12
    assert json.loads((out / "args.json").read_text())["size_buckets"] == 2
