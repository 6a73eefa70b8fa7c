"""--clip_boxes: the evaluation's boxes clipped to their image, by hand; off, DETR's boxes
as they are."""

import torch
from helpers import tiny_model

from detr_irpe.models.detr import PostProcess


def _outputs():
    # one image, two queries: one box reaching past the top-left corner, one inside
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    boxes = torch.tensor([[[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.2, 0.2]]])  # cx, cy, w, h
    return {"pred_logits": logits, "pred_boxes": boxes}


def test_clipped_boxes_by_hand():
    sizes = torch.tensor([[100, 200]])  # height, width
    clipped = PostProcess(clip_boxes=True)(_outputs(), sizes)[0]["boxes"]
    # (-0.1, -0.1, 0.3, 0.5) x (200, 100, 200, 100), then into [0, 200] x [0, 100]
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 60.0, 50.0],
                                                      [80.0, 40.0, 120.0, 60.0]]))


def test_detr_boxes_are_not_clipped_by_default():
    sizes = torch.tensor([[100, 200]])
    boxes = PostProcess()(_outputs(), sizes)[0]["boxes"]
    torch.testing.assert_close(boxes[0], torch.tensor([-20.0, -10.0, 60.0, 50.0]))


def test_the_option_reaches_the_evaluation_postprocessor():
    assert tiny_model(clip_boxes=True)[2]["bbox"].clip_boxes
    assert not tiny_model()[2]["bbox"].clip_boxes
