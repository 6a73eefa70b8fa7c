"""The DETR detector, its post-processor and the builder ``build_detr``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from .backbone import Backbone, ImageBatch, Joiner
from .box_quality import BoxQualityHead, blended_scores
from .config import DETRConfig
from .criterion import SetCriterion
from .denoising import make_denoising_queries
from .dense_head import DenseHead
from .matcher import HungarianMatcher, anchor_cells
from .mlp import MLP
from .position_encoding import build_position_encoding, sine_of_points
from .transformer import Transformer


class DETR(nn.Module):
    """DETR: backbone -> 1x1 input projection -> transformer -> class and box heads.

    ``forward(images)`` takes a list of normalised (3, H, W) float tensors of any sizes,
    an :class:`ImageBatch`, or a (B, 3, H, W) tensor, and returns

    - ``pred_logits``: (B, Q, num_classes + 1); the last class is "no object";
    - ``pred_boxes``:  (B, Q, 4), normalised (cx, cy, w, h) in [0, 1] relative to each
      image's own (unpadded) size;
    - ``aux_outputs``: with ``aux_loss``, a list of the same two keys for every
      decoder layer but the last;
    - ``dense_outputs``: in training mode with a ``dense_head`` only, its output
      (:class:`~detr_irpe.models.dense_head.DenseHead`).  The head is a training aid:
      in eval mode it is not run, and saved checkpoints leave it out of ``model``;
    - ``query_features`` (B, Q, D): with a box-quality head (``quality_weight`` > 0) only,
      the last decoder layer's query vectors; ``pred_quality`` (B, Q) and
      ``quality_weight``: once that head is fitted, its IoU logits and the weight that
      :class:`PostProcess` blends them into the scores with
      (:mod:`~detr_irpe.models.box_quality`);
    - ``attention`` (B, Q, h * w) and ``attention_mask`` (B, h, w), in each output dict: in
      training mode with ``box_attention`` only, the layer's head-mean cross-attention and
      the feature mask, for :mod:`~detr_irpe.models.box_attention` (a training aid).

    ``query_anchors`` (off by default, as in DETR): query *q* predicts its box as an offset,
    in logit space, from the grid cell :func:`~detr_irpe.models.matcher.anchor_cells` ``[q]``
    instead of from the whole image; the cells are a saved buffer (``anchor_logits``).
    ``anchor_content`` (off by default, as in DETR; needs ``query_anchors``): query *q*
    enters the decoder as the encoder output at its cell's centre instead of zeros; the
    centres are a saved buffer (``content_points``), so a state dict tells this model too.
    ``point_positions`` (off by default, as in DETR; needs ``query_anchors``): a query's
    position in the decoder's attention is an MLP (``position_mlp``, in place of
    ``query_embed``) of the sine embedding of its cell's centre, so that a denoising query
    gets the position of its own point, not that of the nearest grid query.
    ``denoising_groups`` (training aid, with ``anchor_content``; 0 = off): given
    ``targets``, the training forward also runs that many denoising queries per object
    (:mod:`~detr_irpe.models.denoising`) and returns their layers' outputs as
    ``dn_outputs`` (``pred_logits`` (L, B, N, C + 1), ``pred_boxes`` (L, B, N, 4),
    ``targets`` (B, N), ``negative`` (B, N), ``groups``); with ``denoising_negatives`` the
    groups also hold negative queries.  The other outputs are those of the grid queries.

    ``per_image_backbone`` (off by default, as in DETR): run the ResNet on each image of a
    list separately and pad the feature maps instead of the images, which makes every
    image's output independent of the batch it is in (used for evaluation).
    """

    def __init__(
        self,
        backbone: Joiner,
        transformer: Transformer,
        num_classes: int,
        num_queries: int,
        aux_loss: bool,
        dense_head: DenseHead | None = None,
        box_attention: bool = False,
        query_anchors: bool = False,
        anchor_content: bool = False,
        point_positions: bool = False,
        denoising_groups: int = 0,
        denoising_negatives: bool = False,
        quality_weight: float = 0.0,
    ):
        super().__init__()
        hidden = transformer.d_model
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden, num_classes + 1)
        self.bbox_embed = MLP(hidden, hidden, 4, 3)
        # a query's position: its own learned vector (DETR), or a function of its point
        self.query_embed = None if point_positions else nn.Embedding(num_queries, hidden)
        self.position_mlp = MLP(hidden, hidden, hidden, 2) if point_positions else None
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden, kernel_size=1)
        self.backbone = backbone
        self.aux_loss = aux_loss
        self.per_image_backbone = False
        self.dense_head = dense_head
        self.box_attention = box_attention
        self.query_anchors = query_anchors
        self.denoising_groups = denoising_groups
        self.denoising_negatives = denoising_negatives
        if query_anchors:  # the cells in logit space, added to the box head's output; saved,
            # so that a state dict alone tells the model it belongs to
            self.register_buffer("anchor_logits", torch.logit(anchor_cells(num_queries)))
        # None: a buffer slot that the state dict leaves out
        self.register_buffer("content_points",
                             anchor_cells(num_queries)[:, :2].clone() if anchor_content else None)
        # last: its initialisation leaves the random draws of the rest as they were
        self.quality_weight = quality_weight
        self.quality_embed = BoxQualityHead(hidden) if quality_weight > 0 else None

    def forward(self, images: Sequence[Tensor] | ImageBatch | Tensor,
                targets: list[dict] | None = None) -> dict:
        """``targets`` (training only, per image ``boxes`` (n, 4) normalised cxcywh): the
        objects that ``denoising_groups`` builds its queries from; ignored otherwise."""
        if self.per_image_backbone and not isinstance(images, ImageBatch):
            feats, mask, pos = self.backbone.forward_per_image(list(images))
        else:
            batch = images if isinstance(images, ImageBatch) else ImageBatch.from_images(images)
            feats, mask, pos = self.backbone(batch)
        weights = [] if self.training and self.box_attention else None
        denoising = None
        if self.training and self.denoising_groups and targets is not None:
            denoising = make_denoising_queries(targets, self.num_queries, self.denoising_groups,
                                               self.denoising_negatives)
        query_pos, denoising_pos = self._positions(denoising)
        hs, memory = self.transformer(self.input_proj(feats), mask, query_pos, pos,
                                      weights, self.content_points, denoising, denoising_pos)
        logits = self.class_embed(hs)  # (layers, B, Q [+ N], C + 1)
        boxes = self.bbox_embed(hs)  # (layers, B, Q [+ N], 4)
        if self.query_anchors:
            anchors = self.anchor_logits
            if denoising is not None:
                anchors = torch.cat([anchors.expand(len(hs[0]), -1, -1), denoising.anchors], 1)
            boxes = boxes + anchors
        boxes = boxes.sigmoid()
        Q = self.num_queries
        layers = [{"pred_logits": a[:, :Q], "pred_boxes": b[:, :Q]} for a, b in zip(logits, boxes)]
        if weights is not None:
            for layer, w in zip(layers, weights):
                layer.update(attention=w[:, :Q], attention_mask=mask)
        out = layers[-1]
        if self.quality_embed is not None:
            out["query_features"] = hs[-1, :, :Q]
            if self.quality_embed.fitted:
                out["pred_quality"] = self.quality_embed(out["query_features"], out["pred_boxes"])
                out["quality_weight"] = self.quality_weight
        if self.aux_loss:
            out["aux_outputs"] = layers[:-1]
        if self.training and self.dense_head is not None:
            out["dense_outputs"] = self.dense_head(memory, mask)
        if denoising is not None:
            out["dn_outputs"] = {"pred_logits": logits[:, :, Q:], "pred_boxes": boxes[:, :, Q:],
                                 "targets": denoising.targets, "negative": denoising.negative,
                                 "groups": self.denoising_groups}
        return out

    def _positions(self, denoising) -> tuple[Tensor, Tensor | None]:
        """The grid queries' positions (Q, D), and the denoising queries' (B, N, D) with
        ``point_positions`` (None without: the transformer takes their grid owners')."""
        if self.position_mlp is None:
            return self.query_embed.weight, None
        dim = self.transformer.d_model
        grid = self.position_mlp(sine_of_points(torch.sigmoid(self.anchor_logits[:, :2]), dim))
        if denoising is None:
            return grid, None
        return grid, self.position_mlp(sine_of_points(denoising.points, dim))


# The outputs that PostProcess reads.
PREDICTION_KEYS = ("pred_logits", "pred_boxes", "pred_quality", "quality_weight")


class PostProcess(nn.Module):
    """Model output -> per image detections in absolute xyxy pixels of a given size.

    Every query is a detection: score = max probability over real classes, label = its
    argmax (a model label; map it to dataset ids outside).  With a box-quality head
    (``pred_quality`` in the outputs) the score blends in its IoU estimate
    (:mod:`~detr_irpe.models.box_quality`).  ``clip_boxes`` clips each box to its image,
    as :class:`~detr_irpe.inference.detector.Detector` does (off: DETR's evaluation, whose
    boxes may reach past the image).
    """

    def __init__(self, clip_boxes: bool = False):
        super().__init__()
        self.clip_boxes = clip_boxes

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """target_sizes: (B, 2) as (height, width), usually the original image sizes."""
        if len(outputs["pred_logits"]) != len(target_sizes):
            raise ValueError(
                f"{len(target_sizes)} target sizes for a batch of {len(outputs['pred_logits'])} images"
            )
        scores, labels, xyxy = self.batched(outputs, target_sizes, self.clip_boxes)
        return [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, xyxy)]

    @staticmethod
    def batched(outputs: dict, target_sizes: Tensor,
                clip: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The same as tensors: scores (B, Q), labels (B, Q) int64, boxes (B, Q, 4) xyxy."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        if "pred_quality" in outputs:
            scores = blended_scores(scores, outputs["pred_quality"], outputs["quality_weight"])
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        h, w = target_sizes.to(xyxy).unbind(1)
        scale = torch.stack([w, h, w, h], dim=1)[:, None, :]
        xyxy = xyxy * scale
        if clip:
            xyxy = torch.minimum(xyxy.clamp(min=0), scale)
        return scores, labels, xyxy


def build_detr(config: DETRConfig | None = None, **options) -> tuple[DETR, SetCriterion, dict]:
    """Build ``(model, criterion, postprocessors)``.

    Options use the official command-line names (``num_classes``, ``enc_rpe2d``,
    ``backbone``, ...) and default to the paper's recipe; see :class:`DETRConfig`.
    ``postprocessors["bbox"]`` is a :class:`PostProcess`.
    """
    config = DETRConfig.from_options(options, strict=True) if config is None else config.replace(**options)
    backbone = Backbone(
        config.backbone,
        train_backbone=config.lr_backbone > 0,
        dilation=config.dilation,
        pretrained=config.pretrained_backbone,
        norm=config.backbone_norm,
        trainable_layers=config.trainable_backbone_layers,
        stride=config.backbone_stride,
        width=config.backbone_width,
        channels_last_training=config.channels_last_training,
    )
    joiner = Joiner(backbone, build_position_encoding(config.position_embedding, config.hidden_dim))
    transformer = Transformer(
        d_model=config.hidden_dim,
        nhead=config.nheads,
        num_encoder_layers=config.enc_layers,
        num_decoder_layers=config.dec_layers,
        dim_feedforward=config.dim_feedforward,
        dropout=config.dropout,
        pre_norm=config.pre_norm,
        irpe=config.irpe,
        irpe_init=config.irpe_init,
    )
    dense = DenseHead(config.hidden_dim, config.num_classes) if config.dense_aux_coef > 0 else None
    model = DETR(joiner, transformer, config.num_classes, config.num_queries, config.aux_loss,
                 dense, box_attention=config.attn_aux_coef > 0,
                 query_anchors=config.query_anchors, anchor_content=config.anchor_content,
                 point_positions=config.point_positions,
                 denoising_groups=config.denoising_groups,
                 denoising_negatives=config.denoising_negatives,
                 quality_weight=config.quality_weight)
    matcher = HungarianMatcher(config.set_cost_class, config.set_cost_bbox, config.set_cost_giou,
                               config.set_cost_anchor)
    criterion = SetCriterion(
        config.num_classes,
        matcher,
        eos_coef=config.eos_coef,
        bbox_loss_coef=config.bbox_loss_coef,
        giou_loss_coef=config.giou_loss_coef,
        num_aux=config.dec_layers - 1 if config.aux_loss else 0,
        dense_coef=config.dense_aux_coef,
        attention_coef=config.attn_aux_coef,
        class_loss_images=config.class_loss_images,
        class_iou_target=config.class_iou_target,
        o2m_box_queries=config.o2m_box_queries,
        o2m_box_coef=config.o2m_box_coef,
        denoising=config.denoising_groups > 0,
    )
    return model, criterion, {"bbox": PostProcess(config.clip_boxes)}
