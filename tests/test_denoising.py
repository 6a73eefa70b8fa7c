"""Denoising queries (training aid): where they are placed, what they may see, that the grid
queries compute the same with them, and their losses against hand-computed values."""

import pytest
import torch
from helpers import tiny_model

from detr_irpe.models.attention import IRPEMultiheadAttention
from detr_irpe.models.denoising import SHIFT, make_denoising_queries
from detr_irpe.models.matcher import anchor_cells, anchor_points


def _targets():
    return [{"labels": torch.tensor([0, 1, 1]),
             "boxes": torch.tensor([[.3, .3, .2, .2], [.6, .5, .3, .1], [.9, .9, .05, .05]])},
            {"labels": torch.tensor([1]), "boxes": torch.tensor([[.5, .5, .4, .4]])}]


def test_each_query_lies_near_its_object_with_the_nearest_grid_querys_position():
    torch.manual_seed(3)
    targets = _targets()
    dn = make_denoising_queries(targets, num_queries=9, groups=2)
    # 2 groups x the 3 objects of the fuller image; image 1 has one object and 2 padding slots
    assert dn.points.shape == (2, 6, 2) and dn.targets.tolist() == [[0, 1, 2, 0, 1, 2],
                                                                   [3, -1, -1, 3, -1, -1]]
    boxes = torch.cat([t["boxes"] for t in targets])
    cell = 1 / 3  # 9 queries: a 3 x 3 grid
    grid = anchor_points(9)
    for b in range(2):
        for q in range(6):
            k = int(dn.targets[b, q])
            if k < 0:
                continue
            point, box = dn.points[b, q], boxes[k]
            reach = SHIFT * torch.clamp(box[2:], min=cell)
            assert ((point - box[:2]).abs() <= reach + 1e-6).all()
            distances = [float((point - g).abs().sum()) for g in grid]
            assert distances[int(dn.owners[b, q])] == min(distances)
            # the anchor box: the point with a grid cell's size, in logit space
            torch.testing.assert_close(dn.anchors[b, q].sigmoid(),
                                       torch.cat([point, anchor_cells(9)[0, 2:]]))
    assert make_denoising_queries([{"labels": torch.zeros(0, dtype=torch.int64),
                                    "boxes": torch.zeros(0, 4)}], 9, 2) is None


def test_negative_queries_lie_beside_their_object_and_outside_every_box():
    torch.manual_seed(5)
    targets = _targets()
    dn = make_denoising_queries(targets, num_queries=9, groups=2, negatives=True)
    # per group: the 3 positives of the fuller image, then its 3 negatives
    assert dn.points.shape == (2, 12, 2)
    assert dn.targets[0].tolist() == [0, 1, 2, -1, -1, -1, 0, 1, 2, -1, -1, -1]
    cell = 1 / 3
    for b, t in enumerate(targets):
        for q in range(12):
            if not dn.negative[b, q]:
                continue
            box = t["boxes"][q % 6 - 3]  # the object this negative was drawn for
            reach = SHIFT * torch.clamp(box[2:], min=cell)
            move = (dn.points[b, q] - box[:2]).abs()
            clamped = (dn.points[b, q] < 2e-4) | (dn.points[b, q] > 1 - 2e-4)
            assert (((move >= reach - 1e-6) & (move <= 2 * reach + 1e-6)) | clamped).all()
            for other in t["boxes"]:
                assert ((dn.points[b, q] - other[:2]).abs() >= other[2:] / 2 - 1e-6).any()
    # padding objects have no negative: image 1 holds one object
    assert dn.negative[1].tolist() == [False, False, False, True, False, False] * 2


def test_a_negative_that_falls_inside_another_box_is_left_out():
    # the small crown's negatives land 1/6 to 1/3 from the centre: always inside the big box,
    # whose own negatives land outside it (0.45 to 0.9 from the centre)
    targets = [{"labels": torch.tensor([0, 0]),
                "boxes": torch.tensor([[.5, .5, .05, .05], [.5, .5, .9, .9]])}]
    dn = make_denoising_queries(targets, num_queries=9, groups=1, negatives=True)
    assert dn.negative.tolist() == [[False, False, False, True]]
    assert dn.targets.tolist() == [[0, 1, -1, -1]]
    o, x = False, True  # may attend, blocked
    row = [o] * 9 + [o, o, x, o]  # the grid, the group's positives and the kept negative
    assert dn.blocked[0, 9:].tolist() == [row] * 4
    with pytest.raises(ValueError, match="--denoising_negatives .*--denoising_groups"):
        tiny_model(query_anchors=True, anchor_content=True, denoising_negatives=True)


def test_grid_queries_see_only_each_other_and_a_group_only_the_grid_and_itself():
    targets = _targets()
    dn = make_denoising_queries(targets, num_queries=2, groups=2)
    o, x = False, True  # may attend, blocked
    # rows and columns: grid queries g0 g1, group 0's slots a0 a1 a2, group 1's b0 b1 b2
    image0 = [[o, o, x, x, x, x, x, x]] * 2 + [[o, o, o, o, o, x, x, x]] * 3 + \
        [[o, o, x, x, x, o, o, o]] * 3
    # image 1 has one object: slots 1-2 of each group are padding, never attended
    image1 = [[o, o, x, x, x, x, x, x]] * 2 + [[o, o, o, x, x, x, x, x]] * 3 + \
        [[o, o, x, x, x, o, x, x]] * 3
    assert dn.blocked.tolist() == [image0, image1]


def test_blocked_attention_equals_attention_over_the_allowed_keys_only():
    torch.manual_seed(0)
    attention = IRPEMultiheadAttention(16, 2).double()
    x = torch.randn(5, 1, 16, dtype=torch.float64)
    blocked = torch.zeros(1, 5, 5, dtype=torch.bool)
    blocked[0, :2, 2:] = True  # queries 0-1 see keys 0-1 only
    blocked[0, 2:, 3] = True  # queries 2-4 do not see key 3
    got = attention(x, x, x, blocked=blocked)
    for rows, keys in (([0, 1], [0, 1]), ([2, 3, 4], [0, 1, 2, 4])):
        alone = attention(x[rows], x[keys], x[keys])
        torch.testing.assert_close(got[rows], alone)


def test_grid_queries_compute_the_same_with_denoising_queries_beside_them():
    model, criterion, _ = tiny_model(num_classes=2, num_queries=9, query_anchors=True,
                                     anchor_content=True, denoising_groups=3,
                                     attn_aux_coef=1.0, dropout=0.0)
    model.train()
    images = torch.randn(2, 3, 128, 128)
    targets = _targets()
    torch.manual_seed(1)
    with_dn = model(images, targets)
    plain = model(images)
    assert "dn_outputs" not in plain
    for key in ("pred_logits", "pred_boxes", "attention"):
        torch.testing.assert_close(with_dn[key], plain[key])
    dn = with_dn["dn_outputs"]
    assert dn["pred_boxes"].shape == (2, 2, 9, 4)  # (layers, images, 3 groups x 3 slots, 4)
    losses = criterion(with_dn, targets)
    assert {"loss_dn_ce", "loss_dn_bbox", "loss_dn_giou", "loss_dn_bbox_0"} <= set(losses)
    assert {"loss_dn_ce", "loss_dn_giou_0"} <= set(criterion.weight_dict)
    model.eval()
    assert "dn_outputs" not in model(images, targets)  # inference: the grid queries alone


def test_denoising_losses_against_hand_computed_values():
    _, criterion, _ = tiny_model(num_classes=2, num_queries=4, query_anchors=True,
                                 anchor_content=True, denoising_groups=2, class_iou_target=True)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[.5, .5, .2, .2]])}]
    # one layer, one image, 2 groups x 1 object: query 0 hits the box, query 1 is moved
    # right by 0.1 (IoU 1/3, L1 0.1); query 2 is a negative (target "no object", no box
    # loss), query 3 padding (no loss at all)
    boxes = torch.tensor([[[[.5, .5, .2, .2], [.6, .5, .2, .2], [.9, .9, .1, .1],
                            [.1, .1, .1, .1]]]])
    logits = torch.log(torch.tensor([[[[.2, .5, .3], [.2, .5, .3], [.1, .6, .3],
                                       [.9, .05, .05]]]]))
    dn = {"pred_logits": logits, "pred_boxes": boxes, "targets": torch.tensor([[0, 0, -1, -1]]),
          "negative": torch.tensor([[False, False, True, False]]), "groups": 2}
    outputs = {"pred_logits": torch.zeros(1, 4, 3), "pred_boxes": torch.full((1, 4, 4), .5),
               "dn_outputs": dn}
    losses = criterion(outputs, targets)
    norm = 2.0  # one box times two groups
    torch.testing.assert_close(losses["loss_dn_bbox"], torch.tensor(0.1 / norm))
    # GIoU of the moved box: the hull is the union (the boxes overlap), so 1 - IoU = 2/3
    torch.testing.assert_close(losses["loss_dn_giou"], torch.tensor((2 / 3) / norm))
    eos = criterion.eos_coef
    expected = -torch.log(torch.tensor(.5)) + (-(1 / 3) * torch.log(torch.tensor(.5))
                                               - (2 / 3) * eos * torch.log(torch.tensor(.3)))
    expected = expected - torch.log(torch.tensor(.3))  # the negative's "no object"
    torch.testing.assert_close(losses["loss_dn_ce"], expected / norm)


def test_the_option_needs_anchor_content_and_adds_nothing_to_the_saved_model():
    with pytest.raises(ValueError, match="--denoising_groups .*--anchor_content"):
        tiny_model(query_anchors=True, denoising_groups=2)
    with_dn, _, _ = tiny_model(query_anchors=True, anchor_content=True, denoising_groups=2)
    plain, _, _ = tiny_model(query_anchors=True, anchor_content=True)
    assert with_dn.state_dict().keys() == plain.state_dict().keys()
