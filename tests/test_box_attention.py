"""The cross-attention aid: its weights, its loss on hand-made cases, and that the model
stays plain DETR."""

import math

import torch

from detr_irpe.models.attention import IRPEMultiheadAttention
from detr_irpe.models.box_attention import box_attention_loss, cells_inside
from detr_irpe.models.detr import build_detr


def test_mean_weights_equal_torch_multihead_attention():
    torch.manual_seed(0)
    ours = IRPEMultiheadAttention(16, 4)
    ref = torch.nn.MultiheadAttention(16, 4)
    ref.load_state_dict(ours.state_dict())
    q, k = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    _, expected = ref(q, k, k, key_padding_mask=pad, need_weights=True, average_attn_weights=True)
    got = ours.mean_weights(q, k, pad)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.all(got[1, :, 5:] == 0)


def test_cells_inside_a_box_and_the_centre_cell_of_a_tiny_box():
    # 4 x 4 grid: cell centres at 0.125, 0.375, 0.625, 0.875 on each axis
    c = (torch.arange(4) + 0.5) / 4
    centres = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)  # (cx, cy)
    cell = torch.tensor([0.25, 0.25])
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5],   # the top-left 2 x 2 cells
                          [0.6, 0.9, 0.01, 0.01]])  # tiny: the cell holding (0.6, 0.9) only
    inside = cells_inside(boxes, centres, cell).reshape(2, 4, 4)
    expected0 = torch.zeros(4, 4, dtype=torch.bool)
    expected0[:2, :2] = True
    assert torch.equal(inside[0], expected0)
    assert inside[1].sum() == 1 and inside[1][3, 2]  # row 3 (cy 0.875), column 2 (cx 0.625)


def test_loss_is_minus_log_of_the_mass_inside_the_box():
    weights = torch.zeros(1, 2, 4)  # one image, two queries, 2 x 2 cells
    weights[0, 0] = torch.tensor([0.7, 0.1, 0.1, 0.1])
    weights[0, 1] = torch.tensor([0.25, 0.25, 0.25, 0.25])
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    targets = [{"boxes": torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.5, 0.75, 1.0, 0.5]])}]
    # query 1 -> box 0 (top-left cell: 0.1), query 0 -> box 1 (bottom row: 0.1 + 0.1)
    indices = [(torch.tensor([1, 0]), torch.tensor([0, 1]))]
    loss = box_attention_loss(weights, mask, indices, targets, torch.tensor(2.0))
    expected = (-math.log(0.25 + 1e-6) - math.log(0.2 + 1e-6)) / 2
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


def test_padding_cells_are_outside_every_box():
    weights = torch.full((1, 1, 4), 0.25)  # the right column is padding
    mask = torch.tensor([[[False, True], [False, True]]])
    # a box over the whole image covers only the two valid cells
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]])}]
    loss = box_attention_loss(weights, mask, [(torch.tensor([0]), torch.tensor([0]))], targets,
                              torch.tensor(1.0))
    assert math.isclose(float(loss), -math.log(0.5 + 1e-6), rel_tol=1e-6)


def _model(coef: float):
    torch.manual_seed(0)
    return build_detr(num_classes=2, backbone="resnet18", pretrained_backbone="none",
                      hidden_dim=16, nheads=2, enc_layers=1, dec_layers=2, dim_feedforward=32,
                      num_queries=4, backbone_stride=16, attn_aux_coef=coef)


def test_training_outputs_carry_attention_and_the_loss_backpropagates():
    model, criterion, _ = _model(2.0)
    model.train()
    images = [torch.randn(3, 64, 80), torch.randn(3, 48, 64)]
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2],
                                                                        [0.7, 0.6, 0.3, 0.4]])},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}]
    out = model(images)
    assert out["attention"].shape == (2, 4, 4 * 5)
    assert torch.allclose(out["attention"].sum(-1), torch.ones(2, 4))
    losses = criterion(out, targets)
    assert {"loss_attention", "loss_attention_0"} <= set(losses)
    assert criterion.weight_dict["loss_attention"] == 2.0
    losses["loss_attention"].backward()
    assert model.query_embed.weight.grad.abs().sum() > 0


def test_evaluation_and_the_state_dict_are_plain_detr():
    with_aid, _, _ = _model(1.0)
    plain, _, _ = _model(0.0)
    assert with_aid.state_dict().keys() == plain.state_dict().keys()
    with_aid.eval()
    out = with_aid([torch.randn(3, 64, 64)])
    assert "attention" not in out and all("attention" not in a for a in out["aux_outputs"])
