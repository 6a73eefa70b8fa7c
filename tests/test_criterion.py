"""Hungarian matcher, set criterion and post-processing against hand-derived values."""

import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from detr_irpe.models.config import DETRConfig
from detr_irpe.models.criterion import SetCriterion
from detr_irpe.models.detr import PostProcess
from detr_irpe.models.matcher import HungarianMatcher, anchor_points

PAPER = DETRConfig()  # the official matching costs and loss weights


def _matcher():
    return HungarianMatcher(PAPER.set_cost_class, PAPER.set_cost_bbox, PAPER.set_cost_giou)


def _criterion(num_classes: int, num_aux: int) -> SetCriterion:
    return SetCriterion(num_classes, _matcher(), PAPER.eos_coef, PAPER.bbox_loss_coef,
                        PAPER.giou_loss_coef, num_aux)


def _random_outputs(B=3, Q=6, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pred_logits": torch.randn(B, Q, C + 1, generator=g),
            "pred_boxes": torch.rand(B, Q, 4, generator=g) * 0.5 + 0.2}


def _targets(sizes, C=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"labels": torch.randint(0, C, (n,), generator=g),
             "boxes": torch.rand(n, 4, generator=g) * 0.4 + 0.1} for n in sizes]


def _cost(out, t, b):
    prob = out["pred_logits"][b].softmax(-1)
    l1 = torch.cdist(out["pred_boxes"][b], t["boxes"], p=1)
    giou = generalized_box_iou(box_convert(out["pred_boxes"][b], "cxcywh", "xyxy"),
                               box_convert(t["boxes"], "cxcywh", "xyxy"))
    return -prob[:, t["labels"]] + 5 * l1 - 2 * giou


def test_matcher_is_optimal_against_brute_force():
    out, targets = _random_outputs(B=2, Q=5), _targets([3, 2])
    matcher = HungarianMatcher(1, 5, 2)
    for b, (i, j) in enumerate(matcher(out, targets)):
        C = _cost(out, targets[b], b)
        n = len(targets[b]["labels"])
        best = min(sum(C[q, k] for k, q in enumerate(perm))
                   for perm in itertools.permutations(range(5), n))
        assert torch.isclose(C[i, j].sum(), torch.as_tensor(best), atol=1e-5)
        assert len(i) == n and sorted(j.tolist()) == list(range(n))


def test_matcher_batched_equals_per_image_and_handles_empty():
    out, targets = _random_outputs(B=3), _targets([2, 0, 4])
    matcher = HungarianMatcher(1, 5, 2)
    batched = matcher(out, targets)
    for b in range(3):
        single = matcher({k: v[b : b + 1] for k, v in out.items()}, [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
    assert len(batched[1][0]) == 0
    none = matcher(out, _targets([0, 0, 0]))
    assert all(len(i) == 0 and len(j) == 0 for i, j in none)


def test_losses_hand_computed_single_box():
    # One image, two queries, one target (label 1 of C = 2).  Query 0 is a perfect match.
    logits = torch.tensor([[[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]])
    target = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    crit = _criterion(2, num_aux=0)
    losses = crit({"pred_logits": logits, "pred_boxes": boxes}, target)
    # CE with weights: query 0 -> class 1 (weight 1), query 1 -> no-object (weight 0.1).
    ce0 = -torch.log_softmax(logits[0, 0], -1)[1]
    ce1 = -torch.log_softmax(logits[0, 1], -1)[2]
    expected = (1.0 * ce0 + 0.1 * ce1) / 1.1
    assert torch.isclose(losses["loss_ce"], expected, atol=1e-6)
    assert losses["loss_bbox"].abs() < 1e-6 and losses["loss_giou"].abs() < 1e-6
    assert losses["class_error"] == 0
    # Query 0 predicts class 1, query 1 predicts no-object: 1 predicted for 1 target.
    assert losses["cardinality_error"] == 0


def test_box_losses_hand_computed_offset():
    # Target box (0.5, 0.5, 0.2, 0.2); prediction shifted by 0.1 in cx.
    out = {"pred_logits": torch.zeros(1, 1, 3), "pred_boxes": torch.tensor([[[0.6, 0.5, 0.2, 0.2]]])}
    t = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    losses = _criterion(2, num_aux=0)(out, t)
    assert torch.isclose(losses["loss_bbox"], torch.tensor(0.1), atol=1e-6)
    # xyxy: [0.5,0.4,0.7,0.6] vs [0.4,0.4,0.6,0.6]: inter 0.1*0.2, union 0.06, hull 0.3*0.2.
    iou = 0.02 / 0.06
    giou = iou - (0.06 - 0.06) / 0.06
    assert torch.isclose(losses["loss_giou"], torch.tensor(1 - giou), atol=1e-6)


def test_empty_targets_and_aux_losses():
    out = _random_outputs(B=2, Q=4, C=3)
    out["aux_outputs"] = [_random_outputs(B=2, Q=4, C=3, seed=s) for s in (5, 6)]
    crit = _criterion(3, num_aux=2)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    losses = crit(out, empty)
    assert losses["loss_bbox"] == 0 and losses["loss_giou"] == 0
    # All queries learn "no object": plain mean CE towards the last class.
    expected = -torch.log_softmax(out["pred_logits"], -1)[..., -1].mean()
    assert torch.isclose(losses["loss_ce"], expected, atol=1e-6)
    assert {"loss_ce_0", "loss_bbox_1", "loss_giou_1", "cardinality_error_0"} <= set(losses)
    assert "class_error_0" not in losses
    assert set(crit.weight_dict) == {f"{k}{s}" for k in ("loss_ce", "loss_bbox", "loss_giou")
                                     for s in ("", "_0", "_1")}
    assert crit.weight_dict["loss_bbox_1"] == 5 and crit.weight_dict["loss_giou"] == 2


def test_losses_normalised_by_number_of_boxes_and_differentiable():
    out = _random_outputs(B=2, Q=5)
    out["pred_boxes"].requires_grad_(True)
    targets = _targets([2, 3])
    crit = _criterion(4, num_aux=0)
    losses = crit(out, targets)
    indices = crit.matcher(out, targets)
    total_l1 = sum((out["pred_boxes"][b][i] - targets[b]["boxes"][j]).abs().sum()
                   for b, (i, j) in enumerate(indices))
    assert torch.isclose(losses["loss_bbox"], total_l1 / 5, atol=1e-6)
    sum(losses[k] * w for k, w in crit.weight_dict.items()).backward()
    assert out["pred_boxes"].grad.abs().sum() > 0


@pytest.mark.parametrize("bad_box", [[0.5, 0.5, 0.0, 0.2], [0.5, 0.5, -0.1, 0.2],
                                     [float("nan"), 0.5, 0.1, 0.1]])
def test_degenerate_target_box_names_the_image(bad_box):
    out = _random_outputs(B=1, Q=3)
    t = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1], bad_box]),
          "image_id": 4242}]
    with pytest.raises(ValueError, match=r"image_id 4242: target box 1"):
        _criterion(4, num_aux=0)(out, t)


def test_label_out_of_range_explains_num_classes():
    out = _random_outputs(B=1, Q=3, C=4)
    t = [{"labels": torch.tensor([4]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}]
    with pytest.raises(ValueError, match="largest label \\+ 1"):
        _criterion(4, num_aux=0)(out, t)


def test_postprocess_scales_to_absolute_xyxy():
    logits = torch.tensor([[[0.0, 3.0, 1.0], [2.0, 0.0, 5.0]]])  # C = 2, last = no object
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.25], [0.25, 0.75, 0.1, 0.1]]])
    res = PostProcess()({"pred_logits": logits, "pred_boxes": boxes}, torch.tensor([[200, 400]]))
    # Box 0: cx=200, cy=100, w=200, h=50 in a 400 wide, 200 high image.
    torch.testing.assert_close(res[0]["boxes"][0], torch.tensor([100.0, 75.0, 300.0, 125.0]))
    assert res[0]["labels"].tolist() == [1, 0]
    p = logits.softmax(-1)[0]
    torch.testing.assert_close(res[0]["scores"], torch.stack([p[0, 1], p[1, 0]]))


def test_anchor_cost_gives_each_target_to_the_query_owning_the_nearest_point():
    assert torch.allclose(anchor_points(4), torch.tensor([[0.25, 0.25], [0.75, 0.25],
                                                          [0.25, 0.75], [0.75, 0.75]]))
    points = anchor_points(30)  # 6 columns x 5 rows
    assert points.shape == (30, 2) and torch.allclose(points[7], torch.tensor([1.5 / 6, 1.5 / 5]))
    outputs = {"pred_logits": torch.zeros(1, 4, 3), "pred_boxes": torch.full((1, 4, 4), 0.5)}
    targets = [{"labels": torch.tensor([0, 1]),
                "boxes": torch.tensor([[0.7, 0.8, 0.1, 0.1], [0.2, 0.3, 0.1, 0.1]])}]
    (queries, boxes), = HungarianMatcher(1, 5, 2, cost_anchor=5)(outputs, targets)
    assert dict(zip(boxes.tolist(), queries.tolist())) == {0: 3, 1: 0}


def test_matching_all_layers_at_once_equals_each_layer_alone():
    """One cost computation and one host copy for every decoder layer gives each layer
    the assignment it gets alone, and the optimal one of an independently written cost."""
    from scipy.optimize import linear_sum_assignment

    layers = [_random_outputs(B=3, Q=7, seed=s) for s in range(4)]
    targets = _targets([2, 0, 5])
    matcher = HungarianMatcher(1, 5, 2)
    batched = matcher.match_layers(layers, targets)
    assert len(batched) == 4
    for out, per_image in zip(layers, batched):
        alone = matcher(out, targets)
        for b, ((i, j), (i1, j1)) in enumerate(zip(per_image, alone)):
            assert torch.equal(i, i1) and torch.equal(j, j1)
            if len(targets[b]["labels"]):
                ri, rj = linear_sum_assignment(_cost(out, targets[b], b).numpy())
                assert i.tolist() == ri.tolist() and j.tolist() == rj.tolist()
    assert len(batched[2][1][0]) == 0


def test_bad_label_is_reported_before_any_indexing_with_it():
    out = _random_outputs(B=2, Q=3, C=4)
    t = _targets([1, 2])
    t[1]["labels"] = torch.tensor([0, -1])
    with pytest.raises(ValueError, match=r"batch image 1: label -1 is outside \[0, num_classes=4\)"):
        _criterion(4, num_aux=0)(out, t)


def test_all_layers_scored_together_equal_each_layer_scored_alone():
    """The criterion scores the stacked decoder layers at once; every loss and the
    gradient of the weighted total equal the official per-layer formulas (float32
    rounding), at the paper's weights."""
    from reference import reference_set_losses

    layers = [_random_outputs(B=3, Q=7, seed=s) for s in range(4)]
    for out in layers:
        out["pred_boxes"].requires_grad_(True)
        out["pred_logits"].requires_grad_(True)
    targets = _targets([2, 0, 5])
    crit = _criterion(4, num_aux=3)
    losses = crit({**layers[-1], "aux_outputs": layers[:-1]}, targets)
    for n, out in enumerate(layers):
        suffix = "" if n == 3 else f"_{n}"
        expected = reference_set_losses(out, targets, crit.matcher(out, targets), 4,
                                        PAPER.eos_coef, num_boxes=7.0)
        for key, value in expected.items():
            torch.testing.assert_close(losses[key + suffix], value, rtol=2e-6, atol=1e-6)
    total = sum(losses[k] * w for k, w in crit.weight_dict.items())
    grads = torch.autograd.grad(total, [t for o in layers for t in o.values()])
    expected_total = sum(
        reference_set_losses(o, targets, crit.matcher(o, targets), 4, PAPER.eos_coef, 7.0)[k]
        * crit.weight_dict[k] for o in layers for k in ("loss_ce", "loss_bbox", "loss_giou"))
    expected_grads = torch.autograd.grad(expected_total, [t for o in layers for t in o.values()])
    torch.testing.assert_close(total, expected_total, rtol=2e-6, atol=1e-6)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_class_loss_per_group_of_images_is_the_mean_of_the_groups_losses():
    out, targets = _random_outputs(B=5, Q=4), _targets([1, 3, 0, 2, 2])
    grouped = SetCriterion(4, _matcher(), PAPER.eos_coef, PAPER.bbox_loss_coef,
                           PAPER.giou_loss_coef, 0, class_loss_images=2)(out, targets)
    crit = _criterion(4, num_aux=0)
    parts = [crit({k: v[s] for k, v in out.items()}, targets[s])["loss_ce"]
             for s in (slice(0, 2), slice(2, 4), slice(4, 5))]
    torch.testing.assert_close(grouped["loss_ce"], torch.stack(parts).mean())
    assert not torch.isclose(grouped["loss_ce"], crit(out, targets)["loss_ce"])


def test_iou_class_target_against_a_hand_computed_loss():
    """Query 0 is matched to the target with IoU 0.5: its class target is half the class and
    half "no object" (weighted eos_coef); query 1 is unmatched, "no object" as in DETR."""
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # 1 class + "no object"
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.05, 0.05]]])
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    eos = 0.1
    criterion = SetCriterion(1, _matcher(), eos, 5.0, 2.0, 0, class_iou_target=True)
    got = criterion({"pred_logits": logits, "pred_boxes": boxes}, target)["loss_ce"]
    log_p = logits[0].log_softmax(-1)
    expected = -(0.5 * log_p[0, 0] + 0.5 * eos * log_p[0, 1] + eos * log_p[1, 1]) / (1 + eos)
    torch.testing.assert_close(got, expected)
    plain = SetCriterion(1, _matcher(), eos, 5.0, 2.0, 0)  # DETR: one-hot for the match
    expected = -(log_p[0, 0] + eos * log_p[1, 1]) / (1 + eos)
    torch.testing.assert_close(plain({"pred_logits": logits, "pred_boxes": boxes}, target)["loss_ce"],
                               expected)


def test_one_to_many_box_losses_against_hand_computed_values():
    """One target, three queries with equal scores: query 0 on the box, query 1 shifted by
    0.1 in cx, query 2 far away.  With K = 2 the one-to-many terms are queries 0 and 1,
    divided by K times the one box; query 2 adds nothing."""
    logits = torch.zeros(1, 3, 2)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]]])
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    criterion = SetCriterion(1, _matcher(), 0.1, 5.0, 2.0, 0, o2m_box_queries=2, o2m_box_coef=3.0)
    losses = criterion({"pred_logits": logits, "pred_boxes": boxes}, target)
    giou_1 = 0.02 / 0.06  # query 1 against the target: see test_box_losses_hand_computed_offset
    torch.testing.assert_close(losses["loss_o2m_bbox"], torch.tensor((0.0 + 0.1) / 2))
    torch.testing.assert_close(losses["loss_o2m_giou"], torch.tensor((0.0 + 1 - giou_1) / 2))
    assert losses["loss_bbox"].abs() < 1e-6  # the one-to-one match is query 0
    assert criterion.weight_dict["loss_o2m_bbox"] == 15.0
    assert criterion.weight_dict["loss_o2m_giou"] == 6.0
    plain = SetCriterion(1, _matcher(), 0.1, 5.0, 2.0, 0)
    assert not any("o2m" in k for k in plain({"pred_logits": logits, "pred_boxes": boxes}, target))
    assert not any("o2m" in k for k in plain.weight_dict)


def test_one_to_many_queries_are_the_lowest_costs_of_the_targets_own_image():
    """Every layer and target: the K queries of its image with the lowest cost, computed
    image by image with the hand-written DETR cost; never a query of another image."""
    sizes, k = [2, 0, 3], 3
    layers = [_random_outputs(seed=s) for s in (0, 5)]  # two decoder layers, B = 3, Q = 6
    targets = _targets(sizes)
    logits = torch.stack([o["pred_logits"] for o in layers])
    boxes = torch.stack([o["pred_boxes"] for o in layers])
    labels = torch.cat([t["labels"] for t in targets])
    tgt_boxes = torch.cat([t["boxes"] for t in targets])
    pairs = _matcher().lowest_cost(logits, boxes, labels, tgt_boxes, sizes, k)
    assert pairs.shape == (4, 2 * 5 * k)
    got = {}
    for layer, t in {(int(a), int(b)) for a, b in zip(pairs[0], pairs[3])}:
        rows = pairs[:, (pairs[0] == layer) & (pairs[3] == t)]
        got[layer, t] = (sorted(set(rows[1].tolist())), sorted(rows[2].tolist()))
    owners = [b for b, n in enumerate(sizes) for _ in range(n)]
    for layer, out in enumerate(layers):
        for t, b in enumerate(owners):
            j = t - sum(sizes[:b])
            expected = sorted(_cost(out, targets[b], b)[:, j].argsort()[:k].tolist())
            assert got[layer, t] == ([b], expected)
