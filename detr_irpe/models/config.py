"""The model's configuration, :class:`DETRConfig`: every architecture and loss option with
its default (the paper's recipe) and its check, written once.  Field names are the official
command-line names; ``main.py``'s flags are generated from these fields
(:mod:`detr_irpe.options`).

Plain Python (no torch), so that the command line checks its values before the heavy
imports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .fields import FromOptions, check_at_least, check_choice, check_within, option
from .irpe_config import IRPE_INITS, IRPEConfig, parse_irpe

PAPER_IRPE = IRPEConfig().to_string()  # the paper's iRPE-K: "rpe-2.0-product-ctx-1-k"
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
# Blocks per stage of the basic-block ResNets (512 channels in layer4, no DC5).
BASIC_DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
BASIC_RESNETS = tuple(BASIC_DEPTHS)
BACKBONE_NORMS = ("frozen", "batch")
# The ResNet stage whose output the model takes at each --backbone_stride: 32 = layer4
# (DETR), 16 = layer3 (C4), 8 = layer2 (C3); the stages after it are left out.
LAST_STAGE = {32: "layer4", 16: "layer3", 8: "layer2"}
BACKBONE_STRIDES = tuple(LAST_STAGE)
POSITION_EMBEDDINGS = ("sine", "learned")
# The options that shape the model and its trainable parameters: a checkpoint fixes them.
ARCHITECTURE = ("num_classes", "enc_rpe2d", "backbone", "dilation", "position_embedding",
                "hidden_dim", "nheads", "enc_layers", "dec_layers", "dim_feedforward",
                "num_queries", "pre_norm", "backbone_norm", "trainable_backbone_layers",
                "backbone_stride", "backbone_width", "query_anchors", "anchor_content",
                "point_positions")
_AT_LEAST_ONE = ("num_classes", "hidden_dim", "nheads", "enc_layers", "dec_layers",
                 "dim_feedforward", "num_queries")


@dataclass(frozen=True)
class DETRConfig(FromOptions):
    """Everything :func:`detr_irpe.build_detr` needs.  ``enc_rpe2d`` is the official iRPE
    string, parsed once here into :attr:`irpe`; ``aux_loss`` and ``dense_aux_coef`` only
    change training, never the inference model."""

    # Architecture.
    num_classes: int = option(
        91, "largest label + 1; the class head has num_classes + 1 outputs, the last meaning "
        "'no object' (default: 91 for COCO, derived from the data for custom sets)")
    enc_rpe2d: str = option(
        PAPER_IRPE, "iRPE of the encoder: rpe-{ratio}-{method}-{mode}-{shared_head}-{rpe_on}; "
        f"'' = off (default: {PAPER_IRPE}, or the --finetune_from checkpoint's)")
    irpe_init: str = option(
        IRPE_INITS[0], "how the iRPE tables start: xavier (the official run) or zero (a fresh "
        "model computes plain DETR; e.g. to fine-tune a plain DETR checkpoint)",
        choices=IRPE_INITS)
    backbone: str = option("resnet50", "ResNet depth", choices=RESNETS)
    dilation: bool = option(False, "DC5: dilate layer4 instead of striding")
    position_embedding: str = option("sine", "position encoding added to the image features",
                                     choices=POSITION_EMBEDDINGS)
    hidden_dim: int = option(256, "width of the transformer")
    nheads: int = option(8, "attention heads")
    enc_layers: int = option(6, "transformer encoder layers")
    dec_layers: int = option(6, "transformer decoder layers")
    dim_feedforward: int = option(2048, "hidden size of the feed-forward blocks")
    dropout: float = option(0.1, "dropout in the transformer")
    num_queries: int = option(100, "object queries: most objects per image")
    pre_norm: bool = option(False, "layer norm before (not after) each block")
    query_anchors: bool = option(
        False, "each query predicts its box relative to a fixed grid cell of the image (the "
        "cells of --set_cost_anchor) instead of the whole image; off = DETR")
    anchor_content: bool = option(
        False, "each query enters the decoder as the encoder's feature at its grid cell's "
        "centre instead of zeros (needs --query_anchors); off = DETR")
    point_positions: bool = option(
        False, "a query's position in the decoder's attention is an MLP of the sine embedding "
        "of its grid cell's centre (a denoising query's: of its own point) instead of a "
        "learned vector per query (needs --query_anchors); off = DETR")
    # Backbone.
    pretrained_backbone: str = option(
        "imagenet", "'imagenet' (torchvision IMAGENET1K_V1), 'none' (random init) or the path "
        "of a torchvision ResNet state dict")
    backbone_norm: str = option(
        "frozen", "'frozen' batch norm (DETR, for a pretrained backbone) or trainable 'batch' "
        "norm (for training from random init)", choices=BACKBONE_NORMS)
    trainable_backbone_layers: int = option(
        3, "ResNet stages that train, from the top: 3 = layer2-4 (DETR), 5 = all",
        choices=range(6), metavar="{0..5}")
    backbone_stride: int = option(
        BACKBONE_STRIDES[0], "32: ResNet layer4 features (DETR); 16: layer3 features, layer4 "
        "left out (C4: 4x the feature cells, for small images); 8: layer2 features, layer3 "
        "and layer4 left out (C3, for tiny images); official checkpoints need 32",
        choices=BACKBONE_STRIDES)
    backbone_width: int = option(
        64, "channels of the ResNet's first stage, doubled by each stage after it: 64 = "
        "torchvision's ResNet (the only width with pretrained weights); with resnet18 or "
        "resnet34 from random init, 32 halves every stage (a quarter of the arithmetic)")
    channels_last_training: bool = option(
        False, "CPU: the backbone's input in channels-last in float32 training too (it always "
        "is in inference and bf16 training): the scratch preset's training step alone 1.22x "
        "faster on an AVX-512 Xeon without bf16 (its 9-minute runs no faster); DETR-R50 at "
        "COCO's sizes trained slower with it (10.6 -> 12.3 s)")
    lr_backbone: float = option(1e-5, "learning rate of the backbone (0: the backbone is frozen)")
    # Matching and losses.
    aux_loss: bool = option(True, "no losses on the outputs of the intermediate decoder layers",
                            flag="--no_aux_loss")
    set_cost_class: float = option(1.0, "matching cost weight: class")
    set_cost_bbox: float = option(5.0, "matching cost weight: L1 box")
    set_cost_giou: float = option(2.0, "matching cost weight: GIoU")
    set_cost_anchor: float = option(
        0.0, "training only: matching cost weight of the distance from a query's fixed anchor "
        "point (the queries spread on a grid over the image) to a box centre, so that each "
        "query keeps learning the objects of one region; 0 = off (DETR)")
    bbox_loss_coef: float = option(5.0, "loss weight: L1 box")
    giou_loss_coef: float = option(2.0, "loss weight: GIoU")
    eos_coef: float = option(0.1, "class-loss weight of the 'no object' class")
    class_iou_target: bool = option(
        False, "training only: a matched query's class target is its box's IoU with the "
        "object, the rest 'no object', so that scores rank boxes by their overlap; off = "
        "DETR's one-hot target")
    class_loss_images: int = option(
        0, "the weighted class loss is averaged over the queries of each group of this many "
        "consecutive images of a batch, then over the groups; 0 = over the whole batch (DETR). "
        "With 2, one process with --batch_size 16 computes the gradient of the official "
        "8 GPUs x 2 (docs/training.md, 'Total batch')")
    o2m_box_queries: int = option(
        0, "training only: each object's box losses (L1 and GIoU) also on the K queries of "
        "its image with the lowest matching cost, the one-to-one match usually among them "
        "(one-to-many box supervision; the class loss stays one-to-one); 0 = off (DETR)",
        metavar="K")
    o2m_box_coef: float = option(
        1.0, "weight of the --o2m_box_queries box losses, relative to the one-to-one box "
        "losses (each object's K extra terms share it)")
    denoising_groups: int = option(
        0, "training only: denoising queries (after DN-DETR): each object also gets K extra "
        "decoder queries placed at random near its centre and built like the grid queries "
        "there, whose target is that object (no matching); needs --anchor_content; 0 = off",
        metavar="K")
    denoising_negatives: bool = option(
        False, "with --denoising_groups: each group also holds one negative query per object, "
        "placed beside it (outside the positives' reach), whose target is \"no object\" "
        "(contrastive denoising, after DINO)")
    dense_aux_coef: float = option(
        0.0, "training only: weight of a dense auxiliary head on the encoder output (each token "
        "near an object's centre predicts its class and box; speeds up training from "
        "scratch); 0 = off.  Saved checkpoints are plain DETR (docs/training.md, 'Training aids')")
    quality_weight: float = option(
        0.0, "a box-quality head, fitted after training on the training images, estimates "
        "each box's IoU (q) from its query; the score is p^(1-a) q^a with a this weight and "
        "p the class probability; 0 = no head (DETR's score).  The head is part of the saved "
        "model (docs/training.md, 'Box quality')",
        metavar="A")
    clip_boxes: bool = option(
        False, "the evaluation clips each detected box to its image, as prediction does; off "
        "= DETR's evaluation, whose boxes may reach past the image")
    attn_aux_coef: float = option(
        0.0, "training only: weight of a loss that pulls each matched query's decoder "
        "cross-attention into its object's box (gets DETR's decoder off its plateau from "
        "scratch); 0 = off.  Adds no parameter (docs/training.md, 'Training aids')")

    def __post_init__(self):
        irpe = parse_irpe(self.enc_rpe2d)  # a bad string fails here, naming the flag
        object.__setattr__(self, "_irpe", irpe)
        check_at_least(self, _AT_LEAST_ONE, 1)
        check_choice("irpe_init", self.irpe_init, IRPE_INITS)
        check_choice("backbone", self.backbone, RESNETS)
        check_choice("position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        check_choice("backbone_norm", self.backbone_norm, BACKBONE_NORMS)
        check_choice("trainable_backbone_layers", self.trainable_backbone_layers, range(6))
        check_choice("backbone_stride", self.backbone_stride, BACKBONE_STRIDES)
        if self.hidden_dim % self.nheads:
            raise ValueError(f"--hidden_dim {self.hidden_dim} is not divisible by --nheads {self.nheads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout {self.dropout}: must be in [0, 1)")
        for name in ("lr_backbone", "dense_aux_coef", "attn_aux_coef", "set_cost_anchor",
                     "class_loss_images", "o2m_box_queries", "o2m_box_coef", "denoising_groups"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} {getattr(self, name)}: must be >= 0 (0 = off)")
        check_within(self, ("quality_weight",), 0, 1)
        if self.anchor_content and not self.query_anchors:
            raise ValueError("--anchor_content reads the encoder at the grid cells of "
                             "--query_anchors; switch that on too")
        if self.point_positions and not self.query_anchors:
            raise ValueError("--point_positions embeds the grid points of --query_anchors; "
                             "switch that on too")
        if self.denoising_groups and not self.anchor_content:
            raise ValueError("--denoising_groups builds its queries as --anchor_content "
                             "builds the grid's; switch that on too (and --query_anchors)")
        if self.denoising_negatives and not self.denoising_groups:
            raise ValueError("--denoising_negatives adds negative queries to the groups of "
                             "--denoising_groups; set that to 1 or more")
        if self.backbone_width != 64:
            check_at_least(self, ("backbone_width",), 8)
            if self.backbone not in BASIC_RESNETS or self.pretrained_backbone != "none":
                raise ValueError(f"--backbone_width {self.backbone_width} builds a narrow "
                                 f"ResNet of basic blocks from random init: it needs --backbone "
                                 f"resnet18 or resnet34 and --pretrained_backbone none (got "
                                 f"{self.backbone}, {self.pretrained_backbone!r})")
        if self.dilation and self.backbone_stride != 32:
            raise ValueError(f"--dilation dilates layer4, which --backbone_stride "
                             f"{self.backbone_stride} leaves out; "
                             "use one of them")
        if self.dilation and self.backbone in BASIC_RESNETS:
            raise ValueError(f"--dilation (DC5) needs --backbone resnet50 or resnet101, "
                             f"not {self.backbone}")

    @property
    def irpe(self) -> IRPEConfig | None:
        """The parsed ``enc_rpe2d`` (None: no iRPE)."""
        return self._irpe

    def replace(self, **changes) -> DETRConfig:
        return DETRConfig.from_options({**self.to_dict(), **changes}, strict=True)

    def to_dict(self) -> dict:
        return asdict(self)
